"""Load the prompt texts in ``prompts/system.yaml`` and render them with strict undefined variables."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined

PROMPTS_FILE = Path(__file__).resolve().parents[1] / "prompts" / "system.yaml"

_ENV = Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


@cache
def _prompts(path: Path = PROMPTS_FILE) -> dict[str, str]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path} must map prompt names to strings")
    return data


def render_prompt(name: str, **variables: Any) -> str:
    """Render prompt ``name``; raises KeyError for an unknown name, jinja2 errors for a missing variable."""
    prompts = _prompts()
    if name not in prompts:
        raise KeyError(f"unknown prompt {name!r}; known: {', '.join(sorted(prompts))}")
    return _ENV.from_string(prompts[name]).render(**variables).strip()
