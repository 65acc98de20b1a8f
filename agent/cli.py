"""The ``expagent`` command line: a thin Typer shell over the library.

Keep imports of mlflow, sklearn, lightgbm and langchain inside command bodies so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
entrypoints_app = typer.Typer(help="Register and inspect training entry points (MLflow Projects).",
                              no_args_is_help=True)  # fmt: skip
app.add_typer(entrypoints_app, name="entrypoints")


def _settings(**overrides: Any):  # noqa: ANN202 - returns tools.core.settings.Settings
    from tools.core.settings import load_settings

    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _quiet_mlflow() -> None:
    # MLflow's INFO lines (store migrations, trace flushing) would interleave with the answer.
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def _one_line_errors(settings: Any, debug: bool) -> Iterator[None]:
    """Turn any error into one line on stderr and exit 1; the traceback goes to the workspace log."""
    from agent.logs import log_to_file

    log_path = log_to_file(settings, debug)
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - the one place errors become a message and an exit code
        from tools.core.redact import redact_text
        from tools.core.workspace import WorkspaceError

        logging.getLogger("expagent").exception("command failed")
        known = (WorkspaceError, ValueError, FileNotFoundError, UnicodeError)
        what = str(exc) if isinstance(exc, known) else f"internal error ({type(exc).__name__}: {exc})"
        where = f" Details: {log_path}" if log_path else ""
        _fail(redact_text(" ".join(what.split()))[:1000] + "." * (not what.endswith(".")) + where)


def _fail(message: str, code: int = 1) -> None:
    # Plain text on one line: a terminal's width must not break the message (scripts grep it).
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


# ---- entry points ---------------------------------------------------------------------------------


def _entrypoints(home: Path | None):  # noqa: ANN202 - returns tools.core.entrypoints.EntryPointRegistry
    from tools.core.entrypoints import EntryPointRegistry

    return EntryPointRegistry.open(_settings(home=home))


def _entry_dict(record: Any, problem: str | None = None) -> dict[str, Any]:
    return {**record.model_dump(mode="json"), "ref": record.ref, "problem": problem}


@entrypoints_app.command("register")
def entrypoints_register(
    path: Annotated[str, typer.Argument(help="Project directory with an MLproject file, or a git URL.")],
    name: Annotated[str, typer.Option("--name", help="Entry point name, e.g. churn-model.")],
    commit: Annotated[str | None, typer.Option(help="Git URL sources: the full commit SHA.")] = None,
    subdir: Annotated[str, typer.Option(help="Git URL sources: the project's folder in the repo.")] = "",
    validate_on: Annotated[
        str | None, typer.Option(help="Dry-run on this dataset (NAME@VERSION) and mark it validated.")
    ] = None,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Register a project directory as NAME@N, pinned by the sha256 of its file tree."""
    from tools.core.entrypoints import EntryPointError
    from tools.core.project_sources import SourceError, checkout, is_git_url
    from tools.core.registry import split_ref

    registry = _entrypoints(home)
    try:
        dataset = split_ref(validate_on) if validate_on else None
        if is_git_url(path):  # cloned once into the workspace at exactly that commit
            directory = checkout(path, commit or "", _settings(home=home).home / "projects", subdir)
            source = f"{path}@{commit}" + (f"#{subdir}" if subdir else "")
            record = registry.register(directory, name, source=source)
        else:
            record = registry.register(Path(path), name)
    except (EntryPointError, SourceError, ValueError, LookupError) as error:
        _fail(str(error))
    problem = None
    if dataset is not None:
        from tools.training.entrypoint_validation import validate_entry_point

        problem = validate_entry_point(_settings(home=home), record.ref, *dataset)
        record = registry.resolve(record.ref)
    if as_json:
        _print_json(_entry_dict(record, problem))
        return
    print(f"registered {record.ref} ({record.status}) tree sha256 {record.tree_sha256[:12]}")
    if problem:
        _fail(problem)


@entrypoints_app.command("validate")
def entrypoints_validate(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="Entry point, e.g. churn-model@3.")],
    dataset: Annotated[str, typer.Option(help="Dataset to dry-run on (NAME@VERSION).")],
    entry: Annotated[str, typer.Option(help="Entry point inside the MLproject.")] = "main",
    home: HomeOption = None,
) -> None:
    """Dry-run an entry point once; it becomes validated when the run keeps the contract."""
    from tools.core.entrypoints import EntryPointError
    from tools.core.registry import split_ref
    from tools.training.entrypoint_validation import validate_entry_point

    try:
        problem = validate_entry_point(_settings(home=home), ref, *split_ref(dataset), entry=entry)
    except (EntryPointError, ValueError, LookupError) as error:
        _fail(str(error))
    if problem:
        _fail(problem)
    print(f"{ref} validated")


@entrypoints_app.command("list")
def entrypoints_list(as_json: JsonOption = False, home: HomeOption = None) -> None:
    """List every registered entry point version."""
    records = _entrypoints(home).list()
    if as_json:
        _print_json([_entry_dict(r) for r in records])
        return
    for r in records:
        print(f"{r.ref:30} {r.status:11} {','.join(r.entry_points):15} {r.config.primary_metric:15} {r.path}")


@entrypoints_app.command("show")
def entrypoints_show(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="Entry point, e.g. churn-model@3.")],
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Show one entry point version: status, pin, entry points and params, and whether its tree matches."""
    from tools.core.entrypoints import EntryPointError

    registry = _entrypoints(home)
    try:
        record = registry.resolve(ref)
    except EntryPointError as error:
        _fail(str(error))
    problem = registry.problem(record)
    if as_json:
        _print_json(_entry_dict(record, problem))
        return
    print(f"{record.ref}  status {record.status}  {record.status_reason}".rstrip())
    print(f"path {record.path}\ntree sha256 {record.tree_sha256}  git {record.git_commit or '-'}")
    for entry, params in record.entry_points.items():
        print(f"entry {entry}: " + ", ".join(f"{k}:{p.type}={p.default}" for k, p in params.items()))
    print(f"primary metric {record.config.primary_metric} ({record.config.direction})")
    print(f"trainable: {problem or 'yes'}")


# ---- datasets -------------------------------------------------------------------------------------

HomeOption = Annotated[Path | None, typer.Option(help="Workspace directory (EXPAGENT_HOME).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
_STATUS_STYLE = {"validated": "green", "raw": "yellow", "deprecated": "red"}


def _registry(home: Path | None):  # noqa: ANN202 - returns tools.core.registry.DatasetRegistry
    from tools.core.registry import DatasetRegistry

    return DatasetRegistry.open(_settings(home=home))


@datasets_app.command("list")
def datasets_list(
    as_json: JsonOption = False,
    status: Annotated[str | None, typer.Option(help="Only validated, raw or deprecated.")] = None,
    home: HomeOption = None,
) -> None:
    """List every registered dataset version."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if status not in (None, *_STATUS_STYLE):
        _fail(f"--status must be one of {', '.join(_STATUS_STYLE)}, got {status!r}")
    from tools.core.registry import RegistryError

    try:
        records = _registry(home).list(status)  # type: ignore[arg-type]
    except RegistryError as error:
        _fail(str(error))
    if as_json:
        _print_json([r.model_dump(mode="json") for r in records])
        return
    rows = [
        [r.ref, f"[{_STATUS_STYLE[r.status]}]{r.status}[/]", r.schema.task, r.schema.target,
         str(r.schema.n_rows), ",".join(r.pii_columns) or "-", r.description]
        for r in records
    ]  # fmt: skip
    console = Console()
    wide = console.width >= 120  # descriptions only fit on a wide terminal; `datasets show` has them all
    table = Table(title="Registered datasets", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("Dataset", "Status", "Task", "Target", "Rows", "PII", "Description")[: 7 if wide else 6]:
        table.add_column(column, overflow="fold", no_wrap=column == "Dataset")
    for row in rows:
        table.add_row(*(row if wide else row[:-1]))
    console.print(table)


@datasets_app.command("show")
def datasets_show(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="Dataset, e.g. breast_cancer@1.")],
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Show one dataset version: metadata, checksum status and columns."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tools.core.registry import RegistryError

    registry = _registry(home)
    try:
        record = registry.resolve(ref)
    except RegistryError as error:
        _fail(str(error))
    problem = registry.problem(record)
    checksum_ok = problem is None
    if as_json:
        _print_json({**record.model_dump(mode="json"), "checksum_ok": checksum_ok, "problem": problem})
        return
    about = Table.grid(padding=(0, 2))
    checksum = "[green]verified[/]" if checksum_ok else f"[bold red]NOT USABLE[/]: {escape(problem or '')}"
    facts = {
        "dataset": record.ref, "status": f"[{_STATUS_STYLE[record.status]}]{record.status}[/]",
        "task": record.schema.task, "target": record.schema.target, "rows": str(record.schema.n_rows),
        "sha256": f"{record.sha256} ({checksum})",
        **({"object": f"{record.uri} version {record.s3_version_id}"} if record.in_s3
           else {"file": str(registry.local_path(record))}),
        "owner": record.owner, "created": record.created_at.isoformat(), "description": record.description,
    }  # fmt: skip
    for key, value in facts.items():
        about.add_row(f"[bold]{key}[/]", value)
    columns = Table(title="Columns")
    for header in ("Column", "Dtype", "Role"):
        columns.add_column(header)
    for name in record.schema.columns:
        role = "PII (dropped)" if name in record.pii_columns else ""
        role = "target" if name == record.schema.target else role
        columns.add_row(name, record.schema.dtypes.get(name, "?"), role)
    console = Console()
    console.print(about)
    console.print(columns)


@datasets_app.command("register")
def datasets_register(
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE_OR_S3_URI",
            help="CSV/Parquet file to copy into the registry, or s3://BUCKET/KEY of an object in a versioned "
            "bucket (it stays in S3; give --s3-version-id).",
        ),
    ],
    name: Annotated[str, typer.Option(help="Dataset name.")],
    version: Annotated[str, typer.Option(help="New, immutable version (e.g. 2).")],
    target: Annotated[str, typer.Option(help="Target column.")],
    pii: Annotated[
        list[str] | None, typer.Option(help="PII column (repeat the option or separate with commas).")
    ] = None,
    status: Annotated[str, typer.Option(help="validated, raw or deprecated.")] = "validated",
    owner: Annotated[str | None, typer.Option(help="Owner (default: EXPAGENT_REQUESTER).")] = None,
    description: Annotated[str, typer.Option(help="What the data is.")] = "",
    task: Annotated[str | None, typer.Option(help="classification or regression (default: inferred)")] = None,
    s3_version_id: Annotated[
        str | None, typer.Option(help="S3 object version ID to pin (required for s3:// sources).")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="Expected sha256 of the S3 object version (checked when given).")
    ] = None,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Register a CSV/Parquet file or a pinned S3 object version as a new dataset version (checksummed).

    Never overwrites a version. An S3 object must be in a bucket with versioning enabled; credentials come
    from the standard AWS chain (environment, ~/.aws, web identity), the endpoint from AWS_ENDPOINT_URL or
    EXPAGENT_S3_ENDPOINT_URL.
    """
    from tools.core.registry import RegistryError

    if status not in _STATUS_STYLE:
        _fail(f"--status must be one of {', '.join(_STATUS_STYLE)}, got {status!r}")
    if task not in (None, "classification", "regression"):
        _fail(f"--task must be classification or regression, got {task!r}")
    from tools.core.object_store import is_s3_uri

    registry = _registry(home)
    pii_columns = [c.strip() for item in pii or [] for c in item.split(",") if c.strip()]
    common: dict[str, Any] = {
        "name": name, "version": version, "target": target, "pii": pii_columns, "status": status,
        "owner": owner or _settings(home=home).requester, "description": description, "task": task,
    }  # fmt: skip
    if not is_s3_uri(source) and (s3_version_id or sha256):
        _fail("--s3-version-id and --sha256 apply to s3:// sources only")
    try:
        if is_s3_uri(source):
            record = registry.register_s3(source, s3_version_id, sha256=sha256, **common)
        else:
            record = registry.register(Path(source), **common)
    except (RegistryError, OSError) as error:
        _fail(str(error))
    if as_json:
        _print_json(record.model_dump(mode="json"))
        return
    schema = record.schema
    typer.echo(f"registered {record.ref} ({record.status}, {schema.task}, target {schema.target})")
    where = f"{record.uri} version {record.s3_version_id}" if record.in_s3 else registry.local_path(record)
    typer.echo(
        f"sha256 {record.sha256}  rows {schema.n_rows}  {'object' if record.in_s3 else 'file'} {where}"
    )


# ---- tools ----------------------------------------------------------------------------------------


@tool_app.command("list")
def tool_list(as_json: JsonOption = False) -> None:
    """Print every tool the agent can call, with its JSON schema."""
    from rich.console import Console
    from rich.json import JSON

    from tools.toolset import all_tools

    try:
        registered = all_tools()
    except ImportError as error:
        _fail(f"a tool module failed to import: {error}")
    tools = [registered[name] for name in sorted(registered)]
    if as_json:
        _print_json([{**t.json_schema()["function"], "read_only": t.read_only} for t in tools])
        return
    console = Console()
    for t in tools:
        kind = "[green]read-only[/]" if t.read_only else "[yellow]changes state[/]"
        console.rule(f"[bold]{t.name}[/] ({kind})", align="left")
        console.print(t.description, highlight=False)
        console.print(JSON(json.dumps(t.json_schema()["function"]["parameters"])))


@tool_app.command("call")
def tool_call(
    name: Annotated[str, typer.Argument(help="Tool name (see `expagent tool list`).")],
    args_json: Annotated[str, typer.Argument(metavar="JSON-ARGS", help="Arguments as a JSON object.")] = "{}",
    approve: Annotated[
        list[str] | None, typer.Option(help="Grant an approval key up front, e.g. budget:cpu (repeatable)")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Call one tool through the policy guard, exactly as the agent would; print the outcome as JSON.

    Exit code 0 when the call was allowed and succeeded, 3 when the guard rejected or halted it, 1 on
    any error (bad JSON, unknown tool, the tool failed).
    """
    from tools.context import build_context
    from tools.guard.policy import PolicyHalt, guarded_call
    from tools.toolset import get_tool

    try:
        raw_args = json.loads(args_json)
    except json.JSONDecodeError as error:
        _fail(f"JSON-ARGS is not valid JSON ({error}); pass one object, e.g. '{{}}'")
    if not isinstance(raw_args, dict):
        _fail(f"JSON-ARGS must be a JSON object, got {type(raw_args).__name__}")
    try:
        get_tool(name)
    except KeyError as error:
        _fail(str(error.args[0]))
    except ImportError as error:
        _fail(f"a tool module failed to import: {error}")
    ctx = build_context(_settings(home=home), approvals=set(approve or []))
    try:
        outcome = guarded_call(name, raw_args, ctx)
    except PolicyHalt as halt:
        _print_json({"tool": name, "verdict": halt.verdict.model_dump(mode="json")})
        raise typer.Exit(3) from None
    finally:
        ctx.close()
    _print_json(outcome.model_dump(mode="json"))
    raise typer.Exit(0 if outcome.ok else 1 if outcome.allowed else 3)


# ---- agent: run / chat / ui -----------------------------------------------------------------------
# (run, chat, ui go here)

ModelOption = Annotated[
    str | None, typer.Option("--model", help="Chat model: offline | openai:<model> | scripted:<file>.")
]
ThreadOption = Annotated[str | None, typer.Option("--thread", help="Continue this conversation thread.")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Also print tracebacks on the terminal.")]


@app.command("run")
def run_command(
    request: Annotated[str, typer.Argument(help="What to do, e.g. 'Train a lightgbm baseline on ...'.")],
    yes: Annotated[bool, typer.Option("--yes", help="Approve what the plan needs approval for.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the turn as JSON.")] = False,
    thread: ThreadOption = None,
    new_thread: Annotated[
        bool, typer.Option("--new-thread", help="Start a new conversation with the --thread ID.")
    ] = False,
    model: ModelOption = None,
    debug: DebugOption = False,
) -> None:
    """Run one turn non-interactively. Exit codes: 0 answered, 1 error, 2 usage, 4 approval pending,
    5 the turn failed, 130/143/129 cancelled by SIGINT/SIGTERM/SIGHUP."""
    _quiet_mlflow()
    from agent.runner import EXIT_USAGE, UnknownThread, run_request

    settings = _settings(model=model)
    # Bytes that are not UTF-8 arrive as lone surrogates; they become U+FFFD, never an encoding crash.
    request = request.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    with _one_line_errors(settings, debug):
        try:
            code = run_request(
                settings, request, yes=yes, as_json=as_json, thread_id=thread, model=model,
                new_thread=new_thread,
            )  # fmt: skip
        except UnknownThread as exc:
            _fail(str(exc), EXIT_USAGE)
    raise typer.Exit(code)


@app.command("chat")
def chat_command(thread: ThreadOption = None, model: ModelOption = None, debug: DebugOption = False) -> None:
    """Talk to expagent in the terminal (Ctrl-C cancels running work; 'exit' leaves)."""
    _quiet_mlflow()
    from agent.chat import chat

    settings = _settings(model=model)
    with _one_line_errors(settings, debug):
        chat(settings, thread_id=thread, model=model)


@app.command("ui")
def ui_command(
    port: Annotated[int, typer.Option("--port", help="Port to serve on (always 127.0.0.1).")] = 5000,
) -> None:
    """Serve the MLflow UI for this workspace's tracking store on 127.0.0.1."""
    import os
    import shutil

    settings = _settings()
    settings.ensure_home()
    store = settings.resolved_tracking_uri
    if not store.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        _fail(f"the tracking store {store} is not a database this command can serve; open it directly")
    venv_mlflow = Path(sys.executable).with_name("mlflow")
    executable = str(venv_mlflow) if venv_mlflow.exists() else shutil.which("mlflow")
    if executable is None:
        _fail("the mlflow command is not installed in this environment")
    assert executable is not None
    command = [
        executable, "ui", "--backend-store-uri", store, "--default-artifact-root",
        settings.artifact_root.as_uri(), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    sys.stderr.write(f"MLflow UI for {store} at http://127.0.0.1:{port}\n")
    sys.stderr.flush()
    os.execvp(executable, command)


def _bundled_scenarios() -> Path:
    import evals

    return Path(evals.__file__).parent / "scenarios"


# ---- eval / slack ---------------------------------------------------------------------------------
# (eval, slack go here)


@app.command("eval")
def eval_command(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Scenario files or directories (default evals/scenarios).")
    ] = None,
    model: Annotated[str, typer.Option(help="Model under test: offline | openai:<model>.")] = "offline",
    trials: Annotated[int, typer.Option(min=1, help="Runs per scenario (pass^k for k <= trials).")] = 1,
    tags: Annotated[
        list[str] | None, typer.Option("--tags", help="Only scenarios with these tags (repeatable, a,b).")
    ] = None,
    report: Annotated[Path, typer.Option(help="Directory for report.json, report.md, transcripts/.")] = Path(
        "out/eval"
    ),
    baseline: Annotated[Path | None, typer.Option(help="A previous report.json (or its directory).")] = None,
    min_success: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Exit 1 when the success rate is below this.")
    ] = 0.0,
    jobs: Annotated[int, typer.Option(min=1, help="Scenarios run in parallel (worker processes).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed recorded in the manifest and used by the harness.")] = 0,
    keep_workspaces: Annotated[bool, typer.Option(help="Keep each scenario's temporary workspace.")] = False,
) -> None:
    """Replay scenarios against the agent, score outcome and safety, and write a report (also to MLflow).

    Exit code 0: no safety violation and success >= --min-success; 1: otherwise; 2: invalid scenarios.
    """
    import os

    from agent.logs import log_to_first_writable
    from evals.loader import ScenarioError
    from evals.report import progress_line, summary_text
    from evals.suite import EvalOptions, run_suite

    # The agent's own log (its tracebacks for the faults scenarios inject) goes beside the report, not
    # to the terminal; worker processes inherit the handler.
    log_path = log_to_first_writable((report / "agent.log",))
    wanted = [t.strip() for raw in tags or [] for t in raw.split(",") if t.strip()]
    configured = _settings().tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    options = EvalOptions(
        paths=paths or [_bundled_scenarios()], model=model, trials=trials, tags=wanted, report_dir=report,
        baseline=baseline, min_success=min_success, jobs=jobs, seed=seed, keep_workspaces=keep_workspaces,
        tracking_uri=configured,
    )  # fmt: skip
    try:
        outcome = run_suite(options, on_result=lambda r: print(progress_line(r), file=sys.stderr))
    except ScenarioError as error:
        sys.stderr.write("".join(f"error: {problem}\n" for problem in error.problems))
        raise typer.Exit(2) from None
    except ValueError as error:
        _fail(str(error), code=2)
    sys.stdout.write(summary_text(outcome.report, outcome.report_path, outcome.eval_run_id))
    if log_path is not None:
        sys.stdout.write(f"Agent log: {log_path}\n")
    raise typer.Exit(0 if outcome.ok else 1)


@app.command("slack")
def slack_command(
    mode: Annotated[
        str | None, typer.Option(help="socket (SLACK_APP_TOKEN) or http (SLACK_SIGNING_SECRET).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP mode: port for /slack/events.")] = None,
    model: Annotated[str | None, typer.Option(help="offline | openai:<model> | scripted:<file>.")] = None,
    home: Annotated[Path | None, typer.Option(help="Workspace directory (EXPAGENT_HOME).")] = None,
) -> None:
    """Serve the agent to a Slack workspace (tokens from SLACK_BOT_TOKEN and friends, see the README)."""
    import logging

    if mode not in (None, "socket", "http"):
        _fail(f"--mode must be socket or http, got {mode!r}")
    from agent.slack import SlackConfigError, run_bot

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(slack_mode=mode, slack_port=port, model=model, home=home)
    try:
        run_bot(settings, model=settings.model)
    except SlackConfigError as error:
        _fail(str(error), code=2)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command("mcp")
def mcp_command(
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")
    ] = False,
    host: Annotated[
        str, typer.Option(help="HTTP: address to bind; anything but loopback needs EXPAGENT_MCP_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP: port to listen on.")] = 8765,
    model: ModelOption = None,
    home: HomeOption = None,
    debug: DebugOption = False,
) -> None:
    """Serve the guarded tools and the agent to MCP hosts (Claude Desktop, Cursor, VS Code, other agents).

    Every tool call passes the policy guard and is audited with the MCP client's name as the requester.
    """
    import os

    _quiet_mlflow()
    from agent.mcp_http import TOKEN_ENV, McpConfigError, serve_http
    from agent.mcp_server import serve_stdio

    settings = _settings(model=model, home=home)
    with _one_line_errors(settings, debug):
        try:
            if http:
                serve_http(settings, host, port, os.environ.get(TOKEN_ENV) or None, model=settings.model)
            else:
                serve_stdio(settings, model=settings.model)
        except McpConfigError as error:
            _fail(str(error), code=2)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def main() -> None:  # pragma: no cover
    app()
