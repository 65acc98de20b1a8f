"""`expagent datasets …` and `expagent tool list|call`: output, exit codes and lazy imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from agent.cli import app
from tools import toolset
from tools.context import ToolContext
from tools.core.specs import Resources
from tools.toolset import TOOLS, ToolDef

runner = CliRunner()


class ProbeArgs(BaseModel):
    dataset: str = Field(description="Dataset name.")
    version: str | None = Field(default=None, description="Dataset version.")
    resources: Resources = Field(default_factory=Resources)
    fail: bool = False


class ProbeResult(BaseModel):
    checked: str


def probe_data(ctx: ToolContext, args: ProbeArgs) -> ProbeResult:
    """Check a dataset reference (test-only tool)."""
    if args.fail:
        raise RuntimeError("probe failed for token=abc123")
    return ProbeResult(checked=f"{args.dataset}@{args.version}")


@pytest.fixture(autouse=True)
def home(demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    workspace = tmp_path / "home"
    shutil.copytree(demo_home, workspace)
    monkeypatch.setenv("EXPAGENT_HOME", str(workspace))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(toolset, "_TOOL_MODULES", ("tools.datasets",))
    monkeypatch.setitem(TOOLS, "probe_data", ToolDef("probe_data", probe_data, ProbeArgs, read_only=True))
    return workspace


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


# ---- datasets -------------------------------------------------------------------------------------


def test_datasets_list_shows_every_version_with_its_status() -> None:
    result = invoke("datasets", "list")
    assert result.exit_code == 0, result.output
    for ref in ("breast_cancer@1", "customer_events@1", "wine@0", "customer_churn@1"):
        assert ref in result.output
    assert "deprecated" in result.output and "raw" in result.output


def test_datasets_list_json_and_status_filter() -> None:
    records = json.loads(invoke("datasets", "list", "--json").output)
    assert len(records) == 8 and {"sha256", "schema", "status"} <= set(records[0])
    raw = json.loads(invoke("datasets", "list", "--json", "--status", "raw").output)
    assert [r["name"] for r in raw] == ["customer_events"]
    assert invoke("datasets", "list", "--status", "fresh").exit_code == 1


def test_datasets_show(home: Path) -> None:
    shown = json.loads(invoke("datasets", "show", "customer_churn@1", "--json").output)
    assert shown["checksum_ok"] is True and shown["pii_columns"] == ["email", "phone"]
    human = invoke("datasets", "show", "customer_churn@1")
    assert human.exit_code == 0 and "PII (dropped)" in human.output and "verified" in human.output
    (home / "registry" / "data" / "customer_churn" / "1.csv").write_text("tampered\n")
    assert json.loads(invoke("datasets", "show", "customer_churn@1", "--json").output)["checksum_ok"] is False


@pytest.mark.parametrize(
    ("ref", "message"),
    [("wine@7", "available versions: wine@0, wine@1"), ("wine", "no explicit version")],
)
def test_datasets_show_unknown_or_unversioned(ref: str, message: str) -> None:
    result = invoke("datasets", "show", ref)
    assert result.exit_code == 1 and message in result.output


def test_datasets_register_then_refuse_to_overwrite(tmp_path: Path) -> None:
    source = tmp_path / "leads.csv"
    source.write_text("visits,email,phone,converted\n3,a@x.io,555-123-4567,1\n1,b@x.io,555-123-0000,0\n")
    args = ["datasets", "register", str(source), "--name", "leads", "--version", "1", "--target", "converted"]
    created = invoke(*args, "--pii", "email,phone", "--owner", "de", "--json")
    assert created.exit_code == 0, created.output
    record = json.loads(created.output)
    assert record["pii_columns"] == ["email", "phone"] and record["owner"] == "de"
    again = invoke(*args)
    assert again.exit_code == 1 and "leads@1 already exists" in again.output
    shown = json.loads(invoke("datasets", "show", "leads@1", "--json").output)
    assert shown["sha256"] == record["sha256"]


def test_datasets_register_reports_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "x.csv"
    source.write_text("a,b\n1,2\n")
    result = invoke("datasets", "register", str(source), "--name", "x", "--version", "1", "--target", "y")
    assert result.exit_code == 1 and "target column 'y' is not in" in result.output


# ---- tool list / tool call ------------------------------------------------------------------------


def test_tool_list_prints_every_tool_with_its_schema() -> None:
    tools = {t["name"]: t for t in json.loads(invoke("tool", "list", "--json").output)}
    assert {"lookup_dataset", "list_datasets", "probe_data"} <= set(tools)
    assert tools["lookup_dataset"]["parameters"]["required"] == ["name", "version"]
    assert tools["lookup_dataset"]["read_only"] is True
    human = invoke("tool", "list")
    assert human.exit_code == 0 and "lookup_dataset" in human.output and '"required"' in human.output


def test_tool_call_allowed_prints_the_result() -> None:
    result = invoke("tool", "call", "lookup_dataset", '{"name": "iris", "version": "1"}')
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.output)
    assert outcome["verdict"] == {"verdict": "allow"} and outcome["result"]["name"] == "iris"


@pytest.mark.parametrize(
    ("args", "rule"),
    [
        ({"dataset": "customer_events", "version": "1"}, "versioned_data"),
        ({"dataset": "wine", "version": "latest"}, "versioned_data"),
        ({"dataset": "s3://lake/train.csv"}, "versioned_data"),
        ({"dataset": "wine", "version": "1", "resources": {"cpu": "lots"}}, "invalid_arguments"),
    ],
)
def test_tool_call_rejected_exits_3(args: dict[str, Any], rule: str, home: Path) -> None:
    result = invoke("tool", "call", "probe_data", json.dumps(args))
    assert result.exit_code == 3, result.output
    assert json.loads(result.output)["verdict"]["rule"] == rule
    audit = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["rule"] == rule


def test_tool_call_approval_keys_can_be_granted() -> None:
    args = json.dumps({"dataset": "wine", "version": "1", "resources": {"cpu": 64}})
    rejected = invoke("tool", "call", "probe_data", args)
    assert rejected.exit_code == 3 and json.loads(rejected.output)["verdict"]["approval_key"] == "budget:cpu"
    approved = invoke("tool", "call", "probe_data", args, "--approve", "budget:cpu")
    assert approved.exit_code == 0 and json.loads(approved.output)["approvals_used"] == ["budget:cpu"]


def test_tool_call_tool_failure_exits_1_with_a_redacted_error() -> None:
    result = invoke("tool", "call", "probe_data", '{"dataset": "wine", "version": "1", "fail": true}')
    assert result.exit_code == 1
    assert json.loads(result.output)["error"] == "RuntimeError: probe failed for token=[REDACTED:secret]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_tool", "{}"], "unknown tool 'no_such_tool'"),
        (["lookup_dataset", "{name: iris}"], "JSON-ARGS is not valid JSON"),
        (["lookup_dataset", "[1, 2]"], "must be a JSON object"),
    ],
)
def test_tool_call_usage_errors_exit_1(args: list[str], message: str) -> None:
    result = invoke("tool", "call", *args)
    assert result.exit_code == 1 and message in result.output


def test_subcommand_help_imports_no_heavy_library() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from agent.cli import app; "
        "r = CliRunner(); "
        "assert r.invoke(app, ['datasets', '--help']).exit_code == 0; "
        "assert r.invoke(app, ['tool', 'call', '--help']).exit_code == 0; "
        "heavy = ('mlflow', 'sklearn', 'lightgbm', 'pandas', 'numpy', 'langchain_core'); "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
