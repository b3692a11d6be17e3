"""Static checks of the image (Dockerfile, .dockerignore) and of `make image`, without an engine.

A container engine is not always at hand (CI runners, this repository's own test machines), so
what the issue asks of the image is checked on the files themselves: multi-stage, a non-root
numeric user and no build tools in the final stage, every COPY source present in the build
context, functions-framework in ASGI mode.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_TOOLS = {"gcc", "g++", "cc", "clang", "build-essential", "make", "apt-get", "apt", "apk", "pip", "uv"}
CONFIG_PATH = "/etc/hookhub/hookhub.yaml"  # where the manifests mount the ConfigMap


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _stages() -> list[Stage]:
    """The stages in order, with global ARG defaults substituted into each FROM."""
    defaults: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and not stages:
            arg, _, value = args.partition("=")
            defaults[arg] = value
        elif keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2] or ""], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def _ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: it, or a folder above it, matches a pattern.

    Enough of Docker's rules for this file (no `!` exceptions are used): `**/x` matches x at any depth.
    """
    assert not any(p.startswith("!") for p in patterns), "exceptions need Docker's full matcher"
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(Path(prefix).name, pattern[3:]):
                return True
    return False


def _copies(stage: Stage) -> list[tuple[list[str], str, str | None]]:
    """(sources, destination, --from stage or None) of each COPY of `stage`."""
    out = []
    for args in stage.args("COPY"):
        words = shlex.split(args)
        options = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        origin = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
        out.append((paths[:-1], paths[-1], origin))
    return out


def test_multi_stage_final_from_python_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2, "the image is multi-stage: a builder, then a final stage"
    assert stages[-1].base == "python:3.11-slim"
    builders = {s.name for s in stages[:-1]}
    froms = {origin for _, _, origin in _copies(stages[-1]) if origin}
    assert froms and froms <= builders, f"the final stage copies from the builder only, got {froms}"


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = _stages()[-1].args("USER")
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: numeric, so runAsNonRoot can be verified"
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_final_stage_has_no_build_tools() -> None:
    final = _stages()[-1]
    for keyword, args in final.instructions:
        if keyword == "RUN":
            words = re.split(r"[\s;&|()]+", args)
            found = [w for w in words if w in BUILD_TOOLS or w.endswith("-dev") or w.endswith("/pip")]
            assert not found, f"final stage RUN {args!r} uses {found}"
    copied = [src for sources, _, origin in _copies(final) if origin for src in sources]
    assert copied == ["/opt/venv"], f"the final stage takes the venv only from the builder, got {copied}"
    assert [s for sources, _, origin in _copies(final) if not origin for s in sources] == ["main.py"]


def test_every_copy_source_is_in_the_build_context() -> None:
    patterns = _ignore_patterns()
    for stage in _stages():
        for sources, _, origin in _copies(stage):
            if origin:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
                assert not _ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"


def test_builder_copies_what_pip_install_needs() -> None:
    """pyproject.toml, the readme it names and every folder its package finder searches."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    builder = _stages()[0]
    copied = {src.rstrip("/") for sources, _, origin in _copies(builder) if not origin for src in sources}
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {f"{m}.py" for m in project["tool"]["setuptools"].get("py-modules", [])}
    find = project["tool"]["setuptools"]["packages"]["find"]
    for where in find["where"]:
        if where != ".":
            needed.add(where)
            continue
        for package in ROOT.iterdir():
            included = any(fnmatch.fnmatch(package.name, pattern) for pattern in find["include"])
            if included and (package / "__init__.py").exists():
                needed.add(package.name)
    assert needed <= copied, f"the builder does not copy {sorted(needed - copied)}"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = _ignore_patterns()
    for path in (".venv", ".git", "tests", "bench", "var", ".pytest_cache", "shared/hookhub/__pycache__"):
        assert _ignored(path, patterns), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "README.md", "main.py", "functions/ingest.py", "shared/hookhub/hub.py"):
        assert not _ignored(path, patterns), f".dockerignore leaves out {path}, which the image needs"


def test_cmd_is_functions_framework_in_asgi_mode() -> None:
    final = _stages()[-1]
    cmds = final.args("CMD")
    assert cmds, "the final stage has a CMD"
    cmd = json.loads(cmds[-1])  # exec form: functions-framework is PID 1 and gets SIGTERM
    # The target comes from FUNCTION_TARGET, the port from PORT.
    assert cmd == ["functions-framework", "--asgi"]
    assert not final.args("ENTRYPOINT")
    env = " ".join(final.args("ENV"))
    assert f"HOOKHUB_CONFIG={CONFIG_PATH}" in env
    assert re.search(r"PATH=/opt/venv/bin:", env), "functions-framework is found on PATH"


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE", "ENGINE", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_make_image_builds_with_the_engine(engine: str) -> None:
    result = _make("-n", "image", f"ENGINE={engine}", "IMAGE=registry.example/hookhub:1.2")
    assert result.returncode == 0, result.stderr
    assert f"{engine} build -t 'registry.example/hookhub:1.2' ." in result.stdout.splitlines()


def test_make_image_default_tag() -> None:
    result = _make("-n", "image", "ENGINE=docker")
    assert "docker build -t 'ghcr.io/hookhub/hookhub:latest' ." in result.stdout.splitlines()


def test_make_image_without_an_engine_says_what_to_run_and_fails() -> None:
    result = _make("image", "ENGINE=")
    assert result.returncode != 0
    assert "no container engine" in result.stdout
    assert "docker build -t ghcr.io/hookhub/hookhub:latest ." in result.stdout
