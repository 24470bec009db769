"""What every ``lorastream`` command shares: consoles, options, settings, failing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from schemas.settings import Settings

__all__ = [
    "BootstrapOpt",
    "ConfigOpt",
    "DebugKafkaOpt",
    "VerboseOpt",
    "err",
    "fail",
    "load_settings",
    "log",
    "out",
]

err = Console(stderr=True)
out = Console()
log = logging.getLogger("lorastream")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file", envvar="LORASTREAM_CONFIG"),
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap-servers", "-b", help="Kafka bootstrap servers (host:port,...)"),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]
DebugKafkaOpt = Annotated[
    bool,
    typer.Option(
        "--debug-kafka",
        help="the Kafka client's protocol debug log (verbose: raw records, with user data)",
    ),
]


def load_settings(
    config: Path | None, bootstrap: str | None = None, **sections: dict[str, Any]
) -> Settings:
    """Settings from file/env with the CLI's flags on top; exits with a clear message if bad."""
    overrides = {
        k: {f: v for f, v in fields.items() if v is not None} for k, fields in sections.items()
    }
    if bootstrap:
        overrides.setdefault("kafka", {})["bootstrap_servers"] = bootstrap
    try:
        return Settings.load(config, **{k: v for k, v in overrides.items() if v})
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/] bad settings: {exc}")
        raise typer.Exit(2) from exc


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/] {message}")
    return typer.Exit(code)
