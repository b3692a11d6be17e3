"""The `hookhub` command: run the hub locally, check a config file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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


def main() -> None:
    sys.exit(app())
