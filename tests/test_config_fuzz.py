"""The config loader under random input: a valid config or a clean `ConfigError`, nothing else.

Three generators: arbitrary text (the YAML parser's edge), arbitrary YAML documents (the
validator's edge) and the example config with one value swapped for a random one (the edge a
real operator's typo hits).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookhub.config import HubConfig, load_config
from hookhub.errors import ConfigError
from hookhub.startup import startup_summary, startup_warnings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = yaml.safe_load((ROOT / "hookhub.example.yaml").read_text())
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["${X}", "${X:-d}", "10s", "-1s", "whsec_", "whsec_AAAA", "amqp://u:p@h/", "#", "*.*"]),
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=12), st.integers(), st.booleans()), children, max_size=4)
    ),
    max_leaves=20,
)
yaml_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=":-[]{}&*!|>'\"%@`#,? \n\tab1.$", max_size=120),
    st.sampled_from(
        ["&a [*a]", "a: &a {b: *a}", "<<: 1", "? [a]\n: b", "!!python/object:os.system x", "\ufeff"]
    ),
)


def must_load_or_refuse(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / "hookhub.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path, environ={"X": "x"})
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)), message
        assert "Traceback" not in message
        return
    assert isinstance(config, HubConfig)
    startup_summary(config, path)  # a loaded config must also be reportable
    startup_warnings(config)


@FUZZ
@given(text=yaml_text)
def test_random_text(tmp_path: Path, text: str) -> None:
    must_load_or_refuse(tmp_path, text)


@FUZZ
@given(raw=st.binary(max_size=100))
def test_random_bytes(tmp_path: Path, raw: bytes) -> None:
    must_load_or_refuse(tmp_path, raw)


@FUZZ
@given(document=documents)
def test_random_documents(tmp_path: Path, document: Any) -> None:
    must_load_or_refuse(tmp_path, yaml.safe_dump(document, allow_unicode=True))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


EXAMPLE_PATHS = _paths(EXAMPLE)


@FUZZ
@given(where=st.sampled_from(EXAMPLE_PATHS), value=documents)
def test_example_with_one_value_replaced(tmp_path: Path, where: tuple[Any, ...], value: Any) -> None:
    document = copy.deepcopy(EXAMPLE)
    node = document
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    must_load_or_refuse(tmp_path, yaml.safe_dump(document, allow_unicode=True))
