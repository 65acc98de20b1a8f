"""The package structure holds: no import cycles, and the import contracts in pyproject.toml pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]


def _cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """Return every strongly connected group of two or more modules under ``package`` (Tarjan)."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {
        m: sorted(d for d in graph.find_modules_directly_imported_by(m) if d in modules) for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return groups


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("tools", "agent", "evals")


@pytest.mark.parametrize("package", ["tools", "agent", "evals"])
def test_no_import_cycle(graph: grimp.ImportGraph, package: str) -> None:
    assert _cycles(graph, package) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc import b\n")
    (pkg / "b.py").write_text("from cyc import c\n")
    (pkg / "c.py").write_text("import cyc.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("cyc", cache_dir=None), "cyc") == [["cyc.a", "cyc.b", "cyc.c"]]


def test_import_contracts_hold() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_core_is_the_bottom_layer(tmp_path: Path) -> None:
    # A wrong-way arrow (the core importing the tuning layer) must break the contracts.
    probe = REPO / "tools" / "core" / "_contract_probe.py"
    probe.write_text("from tools.tuning import study  # noqa: F401\n")
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        probe.unlink()
    assert proc.returncode != 0
    assert "tools.core._contract_probe -> tools.tuning" in proc.stdout
