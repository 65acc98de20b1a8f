"""Entry point sources in git: a repository at an exact commit SHA, checked out once into the workspace.

``checkout(url, commit, projects_dir)`` clones ``url`` (any URL git understands: ``https://``, ``ssh``,
``file://``) into ``<projects_dir>/<repo>-<sha12>`` and detaches at ``commit``, which must be a full
40-hex SHA (no branch or tag: they move). The clone is made in a staging directory and renamed into
place after ``git rev-parse HEAD`` equals the SHA, so a failed clone leaves nothing; a second call with
the same SHA reuses the checkout. The checkout is then registered like a local directory (pinned by its
tree hash; its clean git commit recorded). Credentials come from git's own configuration.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{40}$")
_TIMEOUT = 600


class SourceError(Exception):
    """A git source cannot be checked out; the message is one line."""


def is_git_url(source: str) -> bool:
    """Return whether ``source`` names a git repository URL rather than a local directory."""
    return "://" in source or source.startswith("git@")


def checkout(url: str, commit: str, projects_dir: Path, subdirectory: str = "") -> Path:
    """Return the project directory of ``url`` at ``commit`` under ``projects_dir`` (cloned once)."""
    if not _SHA.match(commit or ""):
        raise SourceError(f"a git source needs --commit with a full 40-character SHA, got {commit!r}")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")) or "repo"
    target = Path(projects_dir) / f"{name}-{commit[:12]}"
    if not (target / ".git").is_dir():
        Path(projects_dir).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".clone-{name}-", dir=projects_dir))
        try:
            _git("clone", "--quiet", "--no-checkout", url, str(staging))
            _git("-C", str(staging), "checkout", "--quiet", "--detach", commit)
            head = _git("-C", str(staging), "rev-parse", "HEAD")
            if head != commit:
                raise SourceError(f"{url} at {commit[:12]} checked out {head[:12]}")
            if target.exists():
                shutil.rmtree(staging)  # another process finished the same checkout first
            else:
                staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    project = (target / subdirectory).resolve() if subdirectory else target
    if not project.is_relative_to(target.resolve()) or not project.is_dir():
        raise SourceError(f"{url} at {commit[:12]} has no directory {subdirectory!r}")
    return project


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"git {args[0]} timed out after {_TIMEOUT} s") from exc
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = next(
            (line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1] if lines else ""
        )
        raise SourceError(f"git {args[0] if args[0] != '-C' else args[2]} failed: {reason}")
    return done.stdout.strip()
