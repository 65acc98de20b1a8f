"""The ``expagent`` command line: a thin Typer shell over the library.

Keep imports of mlflow, sklearn, lightgbm and langchain inside command bodies so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(
    name="expagent",
    help="MLflow-first experimentation agent: trains and tunes models, logs every run, never deploys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Browse and register versioned datasets.", no_args_is_help=True)
tool_app = typer.Typer(help="List tools or call one through the policy guard.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(tool_app, name="tool")


def _settings(**overrides: Any):  # noqa: ANN202 - returns agent.config.Settings
    from agent.config import load_settings

    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fail(message: str, code: int = 1) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


# ---- datasets -------------------------------------------------------------------------------------
# (registry commands go here)

# ---- tools ----------------------------------------------------------------------------------------
# (tool list / tool call go here)

# ---- agent: run / chat / ui -----------------------------------------------------------------------
# (run, chat, ui go here)

# ---- eval / slack ---------------------------------------------------------------------------------
# (eval, slack go here)


def main() -> None:  # pragma: no cover
    app()
