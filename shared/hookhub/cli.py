"""The `hookhub` command: run the hub locally, check a config file, and (cli_ops*.py) operate a hub.

Start-up problems (a broken config, a port out of range or taken) end in one message on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console

from hookhub import cli_ops, knative, logs
from hookhub.config import HubConfig, config_path, load_config, redact_url
from hookhub.errors import ConfigError

if TYPE_CHECKING:
    from starlette.applications import Starlette

app = typer.Typer(
    help="hookhub: a webhook hub built as serverless functions for Knative.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback's locals could hold URLs with passwords
)
err = Console(stderr=True)
log = logging.getLogger("hookhub")
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config file (default: $HOOKHUB_CONFIG or hookhub.yaml)")
]


def _fail(title: str, message: str, code: int) -> NoReturn:
    err.print(f"[bold red]{title}[/]\n{message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(config: Path | None) -> HubConfig:
    try:
        return load_config(config)
    except ConfigError as exc:
        _fail("invalid configuration", str(exc), 2)


def listen(host: str, port: int) -> socket.socket:
    """The bound listening socket, or a one-line reason why not (`hookhub run` hands it to
    uvicorn, so the port checked is the port served)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range: use 1 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is already in use (another hookhub?): stop it or pick --port"
            ) from None
        if exc.errno == errno.EACCES:
            raise ValueError(f"not allowed to listen on port {port} (below 1024 needs privileges)") from None
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def first_steps(config: HubConfig, host: str, port: int) -> list[str]:
    """Where to send a first request, for the start-up log."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    base = f"http://{f'[{shown}]' if ':' in shown and not shown.startswith('[') else shown}:{port}"
    lines = []
    if config.providers:
        lines.append(f"webhooks: POST {base}/webhooks/<name> for {', '.join(config.providers)}")
    if config.producers:
        lines.append(f"producers: POST {base}/events with Authorization: Bearer <token>")
    if config.demo_receiver:
        lines.append(f"demo receiver: {base}/demo/receiver logs each delivery it gets")
    lines.append(f"health {base}/healthz, readiness {base}/readyz, metrics {base}/metrics")
    lines.append("a first signed webhook: see README.md, 'Try it'")
    return lines


@app.command()
def run(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    log_format: Annotated[str, typer.Option(help="text (for people) or json (one object a line)")] = "text",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Hub processes sharing the port, e.g. one per core (needs RabbitMQ and PostgreSQL)",
        ),
    ] = 1,
) -> None:
    """Serve ingest, producer API, health and metrics on one port, and deliver to subscribers."""
    from hookhub.demo import demo_mismatches
    from hookhub.startup import log_startup
    from hookhub.workers import hub_app, serve_workers, why_not_shared

    hub_config = _load(config)
    if workers > 1 and (reason := why_not_shared(hub_config)):
        _fail("cannot start", reason, 2)
    try:
        logs.configure(log_level.lower(), log_format.lower())
        sock = listen(host, port)
    except ValueError as exc:
        _fail("cannot start", str(exc), 2)
    log_startup(hub_config, config_path(config), log)
    for line in demo_mismatches(hub_config, port):
        log.warning(line)
    for line in first_steps(hub_config, host, port):
        log.info(line)
    if workers > 1:
        log.info("serving from %d worker processes", workers)
        serve_workers(sock, workers, config_path(config), _options(log_level), (log_level, log_format))
        return
    try:
        web_app = hub_app(hub_config)
    except Exception as exc:  # opening broker or store clients: one message, the detail at debug
        log.debug("cannot start", exc_info=True)
        _fail("cannot start", redact_url(f"{type(exc).__name__}: {exc}"), 1)
    _serve(web_app, sock, log_level)


def _options(log_level: str) -> dict[str, Any]:
    from hookhub.serving import uvicorn_options

    return {
        "loop": "uvloop",
        "access_log": False,
        "log_level": log_level.lower(),
        "lifespan": "on",
        **uvicorn_options(),
    }


def _serve(web_app: Starlette, sock: socket.socket, log_level: str) -> None:
    """Serve on `sock` until SIGTERM or SIGINT; uvicorn then runs the app's lifespan shutdown,
    which is where the hub stops gracefully."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(web_app, **_options(log_level))).run(sockets=[sock])


@app.command()
def archiver(
    config: ConfigOption = None,
    host: Annotated[
        str, typer.Option(help="Address of the probes (/healthz, /readyz, /metrics)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the probes")] = 8080,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    log_format: Annotated[str, typer.Option(help="text (for people) or json (one object a line)")] = "text",
) -> None:
    """Only archive: consume every event into the archive, acking each once written (no ingest, no
    delivery). The archiver's Deployment on Knative runs this; SIGTERM writes what it holds, then stops."""
    from hookhub.archive.process import create_archiver_app
    from hookhub.startup import log_startup

    hub_config = _load(config)
    try:
        logs.configure(log_level.lower(), log_format.lower())
        sock = listen(host, port)
    except ValueError as exc:
        _fail("cannot start", str(exc), 2)
    log_startup(hub_config, config_path(config), log)
    try:
        web_app = create_archiver_app(hub_config)
    except Exception as exc:  # opening broker, store or archive clients
        log.debug("cannot start", exc_info=True)
        _fail("cannot start", redact_url(f"{type(exc).__name__}: {exc}"), 1)
    log.info("archiving to %s; probes on %s:%d", redact_url(hub_config.archive), host, port)
    _serve(web_app, sock, log_level)


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the config file and print what it configures, and any warnings on stderr."""
    from hookhub.startup import startup_warnings

    hub_config = _load(config)
    print(
        f"ok: {len(hub_config.providers)} providers, {len(hub_config.producers)} producers, "
        f"{len(hub_config.subscriptions)} subscriptions"
    )
    for warning in startup_warnings(hub_config):
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


render_app = typer.Typer(
    help="Write deployment manifests derived from the config file.", no_args_is_help=True
)
app.add_typer(render_app, name="render")


@render_app.command("knative")
def render_knative(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="hookhub.yaml (knative/base/hookhub.yaml), or a ConfigMap manifest holding one",
        ),
    ] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Directory to write, or - for stdout")] = "-",
    image: Annotated[str, typer.Option(help="Image of every workload")] = knative.DEFAULT_IMAGE,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = knative.DEFAULT_NAMESPACE,
    rabbitmq_cluster: Annotated[
        str, typer.Option(help="RabbitmqCluster the sources consume from: [NAMESPACE/]NAME")
    ] = knative.DEFAULT_RABBITMQ_CLUSTER,
) -> None:
    """A Knative Service per function (ingest per provider, events, admin, pull, fanout), a
    RabbitmqSource per push subscription and the archiver's Deployment (see knative/README.md)."""
    options = {"image": image, "namespace": namespace, "rabbitmq_cluster": rabbitmq_cluster}
    try:
        hub_config = knative.load_hub_config(config)
        if out == "-":
            sys.stdout.write(knative.render_yaml(hub_config, **options))
            return
        written = knative.write(hub_config, out, **options)
    except ConfigError as exc:  # as _load does, for a ConfigMap manifest too
        _fail("invalid configuration", str(exc), 2)
    except knative.RenderError as exc:
        _fail("cannot render", str(exc), 2)
    except FileExistsError as exc:
        _fail("not written", str(exc), 1)
    pull = sorted(n for n, s in hub_config.subscriptions.items() if s.mode == "pull")
    kinds = Counter(yaml.safe_load(p.read_text(encoding="utf-8"))["kind"] for p in written)
    err.print(
        f"wrote {len(written)} files to {out}: {kinds['Service']} Knative Services, "
        f"{kinds['RabbitmqSource']} RabbitmqSource(s), {kinds['Deployment']} Deployment"
        + (f"; pull subscriptions need no source ({', '.join(pull)})" if pull else ""),
        highlight=False,
        soft_wrap=True,
    )


cli_ops.register(app)  # the operator commands: clients of the admin API


def main() -> None:
    sys.exit(app())
