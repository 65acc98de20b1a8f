"""Git sources for entry points: a local repository served as a file:// URL, registered at a commit SHA."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from agent.cli import app

MLPROJECT = """\
name: tiny
entry_points:
  main:
    parameters:
      lr: {type: float, default: 0.1}
    command: "python train.py --lr {lr}"
"""


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def _repo(root: Path) -> tuple[Path, str, str]:
    """A repository with the project in models/churn; returns (repo, first SHA, second SHA)."""
    project = root / "models" / "churn"
    project.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (project / "MLproject").write_text(MLPROJECT)
    (project / "train.py").write_text("print('v1')\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "v1")
    first = _git(root, "rev-parse", "HEAD")
    (project / "train.py").write_text("print('v2')\n")
    _git(root, "commit", "-qam", "v2")
    return root, first, _git(root, "rev-parse", "HEAD")


def _register(home: Path, url: str, *extra: str) -> tuple[int, str]:
    args = ["entrypoints", "register", url, "--name", "churn", "--json", "--home", str(home), *extra]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_git_url_at_a_commit_is_cloned_into_the_workspace_and_pinned(tmp_path: Path) -> None:
    repo, first, second = _repo(tmp_path / "repo")
    home = tmp_path / "home"
    url = f"file://{repo}"
    code, output = _register(home, url, "--commit", first, "--subdir", "models/churn")
    assert code == 0, output
    shown = json.loads(output[output.index("{") :])
    assert shown["ref"] == "churn@1" and shown["git_commit"] == first
    assert shown["source"] == f"{url}@{first}#models/churn"
    checkout = Path(shown["path"])
    assert (
        checkout.is_relative_to(home / "projects") and (checkout / "train.py").read_text() == "print('v1')\n"
    )
    # The same commit again reuses its checkout (same tree); another commit is another version and tree.
    code, output = _register(home, url, "--commit", first, "--subdir", "models/churn")
    again = json.loads(output[output.index("{") :])
    assert code == 0 and again["path"] == shown["path"] and again["tree_sha256"] == shown["tree_sha256"]
    code, output = _register(home, url, "--commit", second, "--subdir", "models/churn")
    newer = json.loads(output[output.index("{") :])
    assert code == 0 and newer["ref"] == "churn@3" and newer["tree_sha256"] != shown["tree_sha256"]
    assert (Path(newer["path"]) / "train.py").read_text() == "print('v2')\n"


def test_bad_git_sources_fail_in_one_line_and_leave_nothing(tmp_path: Path) -> None:
    repo, first, _ = _repo(tmp_path / "repo")
    home = tmp_path / "home"
    cases = {
        ("--commit", "main"): "full 40-character SHA",  # a branch moves: refused
        ("--commit", "0" * 40): "git checkout failed",
        ("--commit", first, "--subdir", "nope"): "has no directory 'nope'",
    }
    for extra, words in cases.items():
        code, output = _register(home, f"file://{repo}", *extra)
        assert code != 0 and words in output and "Traceback" not in output, output
    code, output = _register(home, f"file://{tmp_path}/missing", "--commit", first)
    assert code != 0 and "git clone failed" in output, output
    leftovers = [p.name for p in (home / "projects").iterdir()] if (home / "projects").exists() else []
    assert all(not name.startswith(".clone-") for name in leftovers), leftovers
    catalog = home / "entrypoints.json"
    names = [e["name"] for e in json.loads(catalog.read_text())["entry_points"]] if catalog.exists() else []
    assert "churn" not in names, names  # only the demo workspace's own projects, never a half-registered one
