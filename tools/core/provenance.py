"""Where a run's code and environment came from: git SHA, Python version and the pinned lock file.

Import-light (standard library only): the trainer, the runtimes and the Kubernetes image builder use it.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: the package directory whose git checkout is "the code" of a run.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: the pinned lock file at the repository root (present in a checkout and an editable install).
LOCK_PATH = PACKAGE_DIR.parent / "requirements.lock"
#: set in images built without a .git directory (e.g. the Kubernetes trainer image).
GIT_SHA_ENV = "EXPAGENT_GIT_SHA"

#: packages a logged scikit-learn or LightGBM model needs to be loaded again.
SKLEARN_MODEL_PACKAGES = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops", "cloudpickle")
LIGHTGBM_MODEL_PACKAGES = (*SKLEARN_MODEL_PACKAGES, "lightgbm")
XGBOOST_MODEL_PACKAGES = (*SKLEARN_MODEL_PACKAGES, "xgboost-cpu")

_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class CodeVersion:
    """The git commit of the code, or ``unknown`` with the reason it could not be determined."""

    sha: str
    reason: str = ""
    dirty: bool = False

    def tags(self) -> dict[str, str]:
        """Return the tags ``git_sha``, ``git_dirty``, ``git_sha_reason`` and the source commit if known."""
        tags = {"git_sha": self.sha, "git_dirty": str(self.dirty).lower()}
        if self.reason:
            tags["git_sha_reason"] = self.reason
        if self.sha != "unknown":
            tags["mlflow.source.git.commit"] = self.sha  # MLflow's UI shows it as the run's source version
        return tags


@dataclass(frozen=True)
class LockFile:
    """The pinned environment: the lock file text, or a freeze of the installed packages."""

    text: str
    path: Path | None
    source: str  # "requirements.lock" or "installed distributions"


def _git(*args: str) -> str:
    # --no-optional-locks: `git status` would otherwise take .git/index.lock to refresh the index, and
    # a job killed meanwhile (cancel, watchdog) would leave that lock behind in the user's checkout.
    result = subprocess.run(
        ["git", "--no-optional-locks", *args], cwd=PACKAGE_DIR, capture_output=True, text=True,
        timeout=10, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"git {' '.join(args)} exited {result.returncode}")
    return result.stdout.strip()


@functools.lru_cache(maxsize=1)
def code_version() -> CodeVersion:
    """Return the git SHA of the checkout holding this package (``unknown`` + reason if there is none)."""
    baked = os.environ.get(GIT_SHA_ENV, "").strip()
    if baked:
        return CodeVersion(sha=baked, reason=f"from the {GIT_SHA_ENV} environment variable")
    try:
        sha = _git("rev-parse", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no")
    except FileNotFoundError:
        return CodeVersion(sha="unknown", reason="git is not installed")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return CodeVersion(sha="unknown", reason=f"{PACKAGE_DIR} is not in a usable git checkout: {exc}")
    if changed:
        return CodeVersion(
            sha=sha, reason="working tree has uncommitted changes to tracked files", dirty=True
        )
    return CodeVersion(sha=sha)


def python_version() -> str:
    """Return the interpreter version, e.g. ``3.11.7``."""
    return platform.python_version()


@functools.lru_cache(maxsize=1)
def lock_file() -> LockFile:
    """Return the pinned lock (``requirements.lock``), or a freeze of installed packages without one."""
    if LOCK_PATH.is_file():
        return LockFile(text=LOCK_PATH.read_text(encoding="utf-8"), path=LOCK_PATH, source=LOCK_PATH.name)
    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()}, key=str.lower)
    return LockFile(text="\n".join(pins) + "\n", path=None, source="installed distributions")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def locked_versions() -> dict[str, str]:
    """Return ``{normalized package name: pinned version}`` from the lock."""
    pins: dict[str, str] = {}
    for line in lock_file().text.splitlines():
        match = _PIN_RE.match(line.strip())
        if match:
            pins[_normalize(match.group(1))] = match.group(2)
    return pins


def pip_requirements(packages: tuple[str, ...] | list[str]) -> list[str]:
    """Return exact ``name==version`` pins for ``packages`` (lock first, else the installed version).

    Passing these to ``mlflow.<flavor>.log_model(pip_requirements=...)`` stops MLflow from inferring
    requirements in a subprocess (3-5 s per model).
    """
    pins = locked_versions()
    requirements = []
    for name in packages:
        version = pins.get(_normalize(name))
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                requirements.append(name)
                continue
        requirements.append(f"{name}=={version}")
    return requirements
