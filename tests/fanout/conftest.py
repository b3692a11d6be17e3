from tests.http.conftest import broker_url  # noqa: F401  (the sqlite/rabbitmq parametrized fixture)
