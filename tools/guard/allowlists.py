"""The ``allowlist`` rule: hyperparameters a family really has, tags under the team's own prefixes.

Word lists miss spellings; allowlists do not. A hyperparameter must be one the family's library
documents (``prompts/hyperparameters.yaml``, generated from the installed libraries) with a single scalar
value that is not a path or a URL; a user tag key must start with one of ``settings.user_tag_prefixes``,
never with a reserved prefix in any case. Keys and values are compared after ``normalize`` (NFKC, no
invisible characters, look-alike letters folded), so ``d\u0435ploy`` is ``deploy``.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import yaml

from tools.core.tags import USER_SETTABLE_RESERVED
from tools.core.text import normalize, strip_invisible
from tools.core.verdicts import Finding, Reject, deploy_reject

if TYPE_CHECKING:
    from tools.context import ToolContext
    from tools.toolset import ToolDef

ALLOWLIST_FILE = "prompts/hyperparameters.yaml"
#: names under which a family sets its thread count: the runtime sets them from ``resources.cpu``.
THREAD_PARAMS = frozenset({"num_threads", "num_thread", "nthread", "nthreads", "n_jobs", "thread_count"})
RESERVED_PREFIXES = ("mlflow.", "expagent.")
#: whole words that give a tag deployment meaning for a CD pipeline that watches tags.
DEPLOY_WORDS = frozenset({"prod", "stage", "stages", "serve", "served", "alias"})
#: stems that mean it anywhere in a word ('modelalias', 'autodeploy', 'production_ready').
DEPLOY_STEMS = ("alias", "champion", "challenger", "deploy", "promot", "staging", "production", "serving",
                "endpoint", "registered", "register")  # fmt: skip
_PATHLIKE = re.compile(r"(://|^[/~.]|[/\\]|\.(txt|json|csv|model|bin|pkl|yaml|yml|conf)$)", re.IGNORECASE)


@functools.cache
def allowed_hyperparameters() -> dict[str, frozenset[str]]:
    """Return ``{family: allowed parameter names}`` from the generated allowlist file."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / ALLOWLIST_FILE
    data: dict[str, list[str]] = yaml.safe_load(path.read_text())
    return {family: frozenset(names) for family, names in data.items()}


def allowlist(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    """Reject unknown or non-scalar hyperparameters and tags outside the allowed key prefixes."""
    findings: list[Finding] = []
    params, family = args.get("params"), args.get("model_family")
    # An entry point's params are its MLproject's (checked by the entry_points rule), not a family's.
    if isinstance(params, dict) and isinstance(family, str) and not args.get("entry_point"):
        findings += param_findings(family, params)
    tags = args.get("tags")
    if isinstance(tags, dict):
        findings += tag_findings(tags, ctx.settings.user_tag_prefixes)
    return findings


def param_findings(family: str, params: dict[str, Any]) -> list[Finding]:
    """Return why each of ``params`` may not be passed to a ``family`` model (empty: all fine)."""
    allowed = allowed_hyperparameters().get(family)
    findings: list[Finding] = []
    for raw_name, value in params.items():
        name = strip_invisible(str(raw_name))  # names are case-sensitive ('C'); invisible marks are not
        if normalize(name) in THREAD_PARAMS:
            findings.append(
                _reject(f"param {raw_name!r} is set by the runtime from resources.cpu; remove it")
            )
        elif allowed is not None and name not in allowed:
            findings.append(_reject(
                f"{raw_name!r} is not a {family} hyperparameter expagent passes on (the allowlist is "
                f"{ALLOWLIST_FILE}, from the library's own parameter list)"
            ))  # fmt: skip
        elif isinstance(value, dict | list | tuple) or value is None:
            findings.append(_reject(f"param {raw_name!r} must be one number, string or boolean"))
        elif isinstance(value, str) and _PATHLIKE.search(value.strip()):
            findings.append(_reject(f"param {raw_name!r} looks like a path or URL; files are never passed"))
    return findings


def tag_findings(tags: dict[str, Any], prefixes: list[str]) -> list[Finding]:
    """Return why each user tag may not be written (reserved, outside the prefixes, deployment words)."""
    findings: list[Finding] = []
    for raw_key, raw_value in tags.items():
        key, value = normalize(str(raw_key)), normalize(str(raw_value))
        if raw_key in USER_SETTABLE_RESERVED:
            continue  # the run's description: words about deployment in it are prose, not a signal
        if key.startswith(RESERVED_PREFIXES):
            findings.append(_reject(f"tag key {raw_key!r} is reserved for MLflow and expagent"))
            continue
        what = deploy_words(f"{key} {value}")
        if what:
            findings.append(deploy_reject(f"the tag {raw_key!r} ({', '.join(what)})"))
        elif not _under(key, prefixes):
            findings.append(_reject(
                f"tag key {raw_key!r} is outside the allowed prefixes ({', '.join(prefixes)}; "
                "EXPAGENT_USER_TAG_PREFIXES)"
            ))  # fmt: skip
    return findings


def _under(key: str, prefixes: list[str]) -> bool:
    """Whether ``key`` is one of the prefixes' namespaces ('team.owner' and 'team' are under 'team.')."""
    for prefix in (normalize(p) for p in prefixes):
        if key.startswith(prefix) or key == prefix.rstrip("."):
            return True
    return False


def deploy_words(normalized: str) -> list[str]:
    """Return the deployment words in already-normalized text (whole words and telling stems)."""
    words = set(re.findall(r"[a-z]+", normalized))
    found = words & DEPLOY_WORDS
    found |= {stem for stem in DEPLOY_STEMS for word in words if stem in word}
    return sorted(found)


def _reject(reason: str) -> Reject:
    return Reject(rule="allowlist", reason=reason)
