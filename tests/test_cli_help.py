"""`expagent --help` stays light: no mlflow, sklearn, lightgbm or langchain at import."""

import subprocess
import sys

HEAVY = ("mlflow", "lightgbm", "sklearn", "langchain_core", "langgraph", "pandas")


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from agent.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "assert 'datasets' in r.output; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
