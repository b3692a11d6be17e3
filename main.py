"""functions-framework's default source: every deployable function, by target name.

functions-framework --target webhook --asgi   # HOOKHUB_PROVIDER picks the provider
functions-framework --target stripe --asgi    # any provider name from hookhub.yaml
functions-framework --target events --asgi    # producer API
functions-framework --target admin --asgi     # admin API (/admin/...), runs resend jobs
functions-framework --target pull --asgi      # pull API (/subscriptions/{name}/pull, /ack)
"""

from __future__ import annotations

from typing import Any

from functions.admin import admin
from functions.fanout import fanout
from functions.ingest import for_provider, webhook
from functions.producer import events
from functions.pull import pull

__all__ = ["admin", "events", "fanout", "pull", "webhook"]


def __getattr__(name: str) -> Any:
    """Provider names from the config file are targets too (`--target <provider name>`).

    When the config cannot load, the name is served anyway: every request then gets the
    503 that explains it (see `hookhub.hub.get_hub`), instead of a crash at import.
    """
    if name.startswith("__"):
        raise AttributeError(name)
    from hookhub.config import load_config
    from hookhub.errors import ConfigError

    try:
        providers = load_config().providers
    except ConfigError:
        return for_provider(name)
    if name in providers:
        return for_provider(name)
    raise AttributeError(f"no function or provider named {name!r} (see hookhub.yaml)")
