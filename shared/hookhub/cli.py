"""The `hookhub` command: run the hub locally, check a config file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hookhub import knative
from hookhub.config import HubConfig, load_config
from hookhub.errors import ConfigError

app = typer.Typer(
    help="hookhub: a webhook hub built as serverless functions for Knative.", no_args_is_help=True
)
err = Console(stderr=True)
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config file (default: $HOOKHUB_CONFIG or hookhub.yaml)")
]


def _load(config: Path | None) -> HubConfig:
    try:
        return load_config(config)
    except ConfigError as exc:
        err.print(f"[bold red]invalid configuration[/]\n{exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve ingest, producer API, admin API, health and metrics on one port."""
    import uvicorn

    from hookhub.web import create_app

    hub_config = _load(config)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # the broker logs its own one-line warnings
    err.print(f"hookhub listening on http://{host}:{port} ({len(hub_config.providers)} providers)")
    uvicorn.run(
        create_app(hub_config),
        host=host,
        port=port,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level=log_level.lower(),
        lifespan="on",
    )


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the config file and print what it configures."""
    hub_config = _load(config)
    print(
        f"ok: {len(hub_config.providers)} providers, {len(hub_config.producers)} producers, "
        f"{len(hub_config.subscriptions)} subscriptions"
    )


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
            help="hookhub.yaml, or a ConfigMap manifest holding one (knative/configmap.yaml)",
        ),
    ] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Directory to write, or - for stdout")] = "-",
    image: Annotated[str, typer.Option(help="Image of the fanout Service")] = knative.DEFAULT_IMAGE,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = knative.DEFAULT_NAMESPACE,
    rabbitmq_cluster: Annotated[
        str, typer.Option(help="RabbitmqCluster the sources consume from: [NAMESPACE/]NAME")
    ] = knative.DEFAULT_RABBITMQ_CLUSTER,
) -> None:
    """The fanout Service and one RabbitmqSource per push subscription (see knative/README.md)."""
    options = {"image": image, "namespace": namespace, "rabbitmq_cluster": rabbitmq_cluster}
    try:
        hub_config = knative.load_hub_config(config)
        if out == "-":
            sys.stdout.write(knative.render_yaml(hub_config, **options))
            return
        written = knative.write(hub_config, out, **options)
    except ConfigError as exc:  # as _load does, for a ConfigMap manifest too
        err.print(f"[bold red]invalid configuration[/]\n{exc}", highlight=False)
        raise typer.Exit(2) from None
    except knative.RenderError as exc:
        err.print(f"[bold red]cannot render[/]\n{exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except FileExistsError as exc:
        err.print(f"[bold red]not written[/]\n{exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    pull = sorted(n for n, s in hub_config.subscriptions.items() if s.mode == "pull")
    err.print(
        f"wrote {len(written)} files to {out}: the fanout Service, {len(written) - 2} RabbitmqSource(s)"
        + (f"; pull subscriptions need none ({', '.join(pull)})" if pull else ""),
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:
    sys.exit(app())
