"""Search spaces for tuning: loaded from ``prompts/search_spaces.yaml``, narrowed by the user, sampled.

A resolved search space is a plain dict ``{param: spec}`` (JSON-serialisable, shown in the plan and
logged on the tuning run) where each spec is a :class:`ParamSpec` dump.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

if TYPE_CHECKING:
    import optuna

    from tools.core.entrypoints import EntryPointRecord

SEARCH_SPACES_FILE = Path(__file__).resolve().parents[2] / "prompts" / "search_spaces.yaml"

Scalar = float | int | str | bool


class SearchSpaceError(ValueError):
    """A search space (or an override of one) is invalid; the message says what to change."""


class ParamSpec(BaseModel):
    """One tunable (or fixed) hyperparameter."""

    type: Literal["float", "int", "categorical", "fixed"] = Field(description="Kind of parameter.")
    low: float | None = Field(default=None, description="Lower bound (float/int).")
    high: float | None = Field(default=None, description="Upper bound (float/int).")
    log: bool = Field(default=False, description="Sample on a log scale (float/int).")
    choices: list[Scalar] | None = Field(default=None, description="Allowed values (categorical).")
    value: Scalar | None = Field(default=None, description="The value of a fixed parameter.")

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type in ("float", "int"):
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} parameter needs 'low' and 'high'")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError(f"a log-scale range needs low > 0 (got {self.low})")
        elif self.type == "categorical" and not self.choices:
            raise ValueError("categorical parameter needs a non-empty 'choices' list")
        elif self.type == "fixed" and self.value is None:
            raise ValueError("fixed parameter needs a 'value'")
        return self

    def compact(self) -> dict[str, Any]:
        """Return the spec without unset fields (for display and logging)."""
        data = self.model_dump(exclude_none=True)
        if self.type not in ("float", "int"):
            data.pop("log", None)
        return data


class FamilySpace(BaseModel):
    """The search space of one model family, as stored in the data file."""

    cost_factor: float = Field(default=1.0, gt=0, description="Average trial cost relative to the baseline.")
    intermediate: bool = Field(default=False, description="Trainer reports per-iteration metrics (pruning).")
    params: dict[str, ParamSpec]


@cache
def _families(path: Path = SEARCH_SPACES_FILE) -> dict[str, FamilySpace]:
    raw = yaml.safe_load(path.read_text())
    try:
        return {name: FamilySpace.model_validate(body) for name, body in raw.items()}
    except ValidationError as exc:
        raise SearchSpaceError(f"invalid search space file {path}: {exc}") from exc


def family_space(model_family: str) -> FamilySpace:
    """Return the stored search space of ``model_family`` (raises SearchSpaceError if unknown)."""
    families = _families()
    if model_family not in families:
        raise SearchSpaceError(
            f"no search space for model family {model_family!r}; known: {', '.join(sorted(families))}"
        )
    return families[model_family]


def load_search_space(model_family: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the resolved search space of ``model_family`` with the user's ``overrides`` applied.

    An override value may be a full spec (``{"type": "float", "low": .., "high": ..}``), a
    ``[low, high]`` pair (narrows the range, keeps the type and scale), a list of strings (categorical
    choices), a scalar (fixes the parameter), or ``None`` (drops it: the estimator default is used).
    """
    space = {name: spec.model_copy() for name, spec in family_space(model_family).params.items()}
    return _resolved(space, overrides, model_family)


def project_search_space(
    record: EntryPointRecord, entry: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the search space of a registered project's entry point, with the user's ``overrides``.

    The space is the project's ``expagent.yaml`` ``search_space``; without one, every numeric MLproject
    param with a positive default is searched on a log scale around it (float: /10..x10, int: /4..x4).
    Only declared params may be searched.
    """
    declared = record.entry_points.get(entry, {})
    undeclared = sorted((set(record.config.search_space) | set(overrides or {})) - set(declared))
    if undeclared:
        raise SearchSpaceError(
            f"entry point {record.ref} entry {entry!r} declares no param {', '.join(undeclared)} "
            f"(declared: {', '.join(declared) or 'none'})"
        )
    configured = parse_space(record.config.search_space)
    space = configured or {
        name: spec
        for name, param in declared.items()
        if (spec := _around_default(param.type, param.default)) is not None
    }
    return _resolved(space, overrides, f"entry point {record.ref}")


def _around_default(kind: str, default: Any) -> ParamSpec | None:
    try:
        value = float(default)
    except (TypeError, ValueError):
        return None
    if kind == "float" and value > 0:
        return ParamSpec(type="float", low=value / 10, high=value * 10, log=True)
    if kind == "int" and value >= 1:
        return ParamSpec(type="int", low=max(1, int(value) // 4), high=int(value) * 4, log=True)
    return None


def _resolved(space: dict[str, ParamSpec], overrides: dict[str, Any] | None, label: str) -> dict[str, Any]:
    for name, override in (overrides or {}).items():
        if override is None:
            space.pop(name, None)
            continue
        try:
            space[name] = _apply_override(space.get(name), override)
        except (ValidationError, ValueError, TypeError) as exc:
            raise SearchSpaceError(
                f"bad search-space override for {name!r} ({_shown(override)}): {_reason(exc)}; {VALID_FORMS}"
            ) from exc
    if not any(spec.type != "fixed" for spec in space.values()):
        raise SearchSpaceError(f"the search space for {label} has no parameter left to tune")
    return {name: spec.compact() for name, spec in space.items()}


#: how to write a search-space override in a request (shown with every error about one).
VALID_FORMS = (
    "write a range as `learning_rate in [0.01, 0.1]`, `num_leaves between 16 and 64` or "
    "`learning rate 1e-3..1e-1 log`, and choices as `n_estimators in [100, 200, 400]`"
)


def _shown(override: Any) -> str:
    if isinstance(override, dict) and "choices" in override:
        return "choices " + ", ".join(map(str, override["choices"] or []))
    if isinstance(override, dict) and "low" in override:
        scale = " log" if override.get("log") else ""
        return f"{override.get('low')}..{override.get('high')}{scale}"
    return repr(override)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
    return str(exc)


def _apply_override(base: ParamSpec | None, override: Any) -> ParamSpec:
    if isinstance(override, dict) and "type" not in override:
        return _override_from_parts(base, override)
    if isinstance(override, dict):
        return ParamSpec.model_validate(override)
    if isinstance(override, list | tuple):
        return _override_from_list(base, list(override))
    if isinstance(override, Scalar):
        return ParamSpec(type="fixed", value=override)
    raise TypeError("expected a spec dict, a [low, high] pair, a list of choices, a value or null")


def _override_from_list(base: ParamSpec | None, values: list[Any]) -> ParamSpec:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not numeric:
        return ParamSpec(type="categorical", choices=values)
    if len(values) != 2:
        raise ValueError("a numeric range is [low, high]; use a dict with 'choices' for numeric options")
    low, high = values
    if base is not None and base.type in ("float", "int"):
        return ParamSpec(type=base.type, low=low, high=high, log=base.log)
    kind: Literal["int", "float"] = "int" if all(isinstance(v, int) for v in values) else "float"
    return ParamSpec(type=kind, low=low, high=high)


def _override_from_parts(base: ParamSpec | None, parts: dict[str, Any]) -> ParamSpec:
    """Apply ``{low, high[, log]}`` (a range keeping the parameter's type) or ``{choices}``."""
    unknown = set(parts) - {"low", "high", "log", "choices"}
    if unknown:
        raise ValueError(f"unknown keys {', '.join(sorted(unknown))}")
    if "choices" in parts:
        choices = list(parts["choices"] or [])
        if len(choices) < 2:
            raise ValueError("give at least two choices")
        return ParamSpec(type="categorical", choices=choices)
    if "low" not in parts or "high" not in parts:
        raise ValueError("a range needs both a low and a high value")
    spec = _override_from_list(base, [parts["low"], parts["high"]])
    if parts.get("log") is not None:
        spec = ParamSpec.model_validate({**spec.model_dump(), "log": bool(parts["log"])})
    if spec.type == "int" and base is not None and base.type == "int":
        if not all(float(v).is_integer() for v in (parts["low"], parts["high"])):
            raise ValueError("this parameter takes whole numbers")
    return spec


def parse_space(space: dict[str, Any]) -> dict[str, ParamSpec]:
    """Validate a resolved search space dict back into :class:`ParamSpec` objects."""
    try:
        return {name: ParamSpec.model_validate(spec) for name, spec in space.items()}
    except ValidationError as exc:
        raise SearchSpaceError(f"invalid search space: {exc}") from exc


def suggest_params(trial: optuna.trial.BaseTrial, space: dict[str, ParamSpec]) -> dict[str, Scalar]:
    """Ask ``trial`` for a value of every searched parameter and add the fixed ones."""
    params: dict[str, Scalar] = {}
    for name, spec in space.items():
        params[name] = _suggest_one(trial, name, spec)
    return params


def _suggest_one(trial: optuna.trial.BaseTrial, name: str, spec: ParamSpec) -> Scalar:
    if spec.type == "fixed":
        assert spec.value is not None
        return spec.value
    if spec.type == "categorical":
        assert spec.choices is not None
        choice: Scalar = trial.suggest_categorical(name, spec.choices)  # type: ignore[assignment]
        return choice
    assert spec.low is not None and spec.high is not None
    if spec.type == "int":
        return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, log=spec.log)


def supports_pruning(model_family: str | None) -> bool:
    """Return whether trials of ``model_family`` report intermediate metrics the pruner can use."""
    return model_family is not None and family_space(model_family).intermediate
