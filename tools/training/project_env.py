"""The Python environment an entry point runs in: a virtualenv built once per environment hash with uv.

A project that declares a ``python_env`` (MLflow's ``python_env.yaml``: python version, build
dependencies, dependencies; named in ``MLproject`` or found beside it under MLflow's default name) runs
with the interpreter of ``<home>/envs/<hash>/``. The hash covers the declared environment (and the
bytes of any ``-r``/``-c`` file it names) and the agent's interpreter, so an edited requirement gets a
new environment and an unchanged one is reused by every later trial. A project that declares none runs
in the current environment (hash ``current``).

How the project's interpreter logs to MLflow: the environment is layered over the agent's own venv. It
uses the same Python (a project asking for another minor version is refused with a one-line reason:
run it on Kubernetes in its own image instead), and a ``.pth`` file appends the agent's
``site-packages`` *after* the project's own, so the project's pinned packages win and mlflow (and its
dependencies) come from the agent when the project does not pin them. (``--system-site-packages`` does
not do this: a venv made from a venv sees the *base* interpreter's packages, not the venv's.)

Building is atomic: under an exclusive lock on ``<hash>.lock`` the builder creates the venv in a
temporary directory beside the target, installs with ``uv pip install``, writes ``expagent-env.json``
and renames the directory into place; a concurrent builder waits on the lock and then reuses it. A
failed build removes its temporary directory and raises :class:`ProjectEnvError` with one line naming
what uv could not install. Installs need the package index (uv's usual configuration applies:
``UV_INDEX_URL``, ``UV_FIND_LINKS``, ``UV_NO_INDEX``, ``UV_OFFLINE``…); the uv cache is uv's default.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, Field

CURRENT = "current"
MARKER = "expagent-env.json"
_PTH_NAME = "_expagent_agent_site.pth"
_BUILD_TIMEOUT = 1800


class ProjectEnvError(RuntimeError):
    """The project's environment cannot be built or used; the message is one line."""


class PythonEnvSpec(BaseModel):
    """What a project's ``python_env.yaml`` declares (MLflow's format)."""

    python: str | None = Field(None, description="Python version, e.g. '3.11' (major.minor must match).")
    build_dependencies: list[str] = Field(default_factory=list, description="Installed first.")
    dependencies: list[str] = Field(default_factory=list, description="Requirements (pip syntax).")


class ProjectEnv(BaseModel):
    """The interpreter a project runs with and the environment hash recorded on its run."""

    env_hash: str = Field(description="sha256 of the declared environment, or 'current'.")
    python: str = Field(description="Absolute path of the interpreter ('python' in the command).")
    built_seconds: float = Field(0.0, description="Time spent building it now (0: reused or none).")


def declared_env_file(project_dir: Path) -> Path | None:
    """Return the project's ``python_env.yaml`` (as MLflow's loader finds it), or None."""
    from mlflow.projects import env_type
    from mlflow.projects._project_spec import load_project as mlflow_load_project

    project = mlflow_load_project(str(project_dir))
    if project.env_type == env_type.PYTHON and project.env_config_path:
        return Path(project.env_config_path)
    fallback = Path(project_dir) / "python_env.yaml"  # beside a docker_env project: used off-cluster
    return fallback if fallback.is_file() else None


def load_env_spec(path: Path) -> PythonEnvSpec:
    """Parse ``python_env.yaml`` with MLflow's reader; raise ProjectEnvError on a bad file."""
    from mlflow.utils.environment import _PythonEnv

    try:
        parsed = _PythonEnv.from_yaml(str(path))
        return PythonEnvSpec(
            python=None if parsed.python is None else str(parsed.python),
            build_dependencies=[str(d) for d in parsed.build_dependencies],
            dependencies=[str(d) for d in parsed.dependencies],
        )
    except Exception as exc:
        raise ProjectEnvError(f"{path} is not a valid python_env file: {str(exc).splitlines()[0]}") from exc


def env_hash(spec: PythonEnvSpec, project_dir: Path) -> str:
    """Return the environment hash: the declaration, files it includes, and the base interpreter."""
    included = {}
    for line in spec.build_dependencies + spec.dependencies:
        match = re.match(r"^-(?:r|c)\s*(\S+)$", line.strip()) or re.match(
            r"^--(?:requirement|constraint)[= ]\s*(\S+)$", line.strip()
        )
        if match:
            path = Path(project_dir) / match.group(1)
            included[match.group(1)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    payload = {
        "env": spec.model_dump(mode="json"),
        "included": included,
        # the agent's venv itself (its site-packages is layered in), not only the interpreter it wraps
        "base": [os.path.realpath(sys.prefix), sys.version],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def uv_binary() -> str:
    """Return the uv executable: the one beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise ProjectEnvError(
            "uv is not installed: per-project environments are built with uv (pip install uv)"
        )
    return found


def ensure_project_env(project_dir: Path, envs_dir: Path) -> ProjectEnv:
    """Return the environment to run ``project_dir`` in, building it once per hash under ``envs_dir``."""
    declared = declared_env_file(Path(project_dir))
    if declared is None:
        return ProjectEnv(env_hash=CURRENT, python=sys.executable)
    spec = load_env_spec(declared)
    _check_python(spec, declared)
    digest = env_hash(spec, Path(project_dir))
    target = Path(envs_dir) / digest
    python = target / "bin" / "python"
    if (target / MARKER).is_file():
        return ProjectEnv(env_hash=digest, python=str(python))
    begun = time.monotonic()
    with _build_lock(Path(envs_dir), digest):
        if not (target / MARKER).is_file():  # another builder may have finished while we waited
            _build(spec, Path(project_dir), target)
    return ProjectEnv(env_hash=digest, python=str(python), built_seconds=time.monotonic() - begun)


def _check_python(spec: PythonEnvSpec, declared: Path) -> None:
    if spec.python is None:
        return
    wanted = ".".join(spec.python.split(".")[:2])
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted != have:
        raise ProjectEnvError(
            f"{declared.name} asks for Python {spec.python} but this runtime has Python {have} (environments"
            f" layer over the agent's interpreter); declare python: {have} or use a Kubernetes image"
        )


@contextmanager
def _build_lock(envs_dir: Path, digest: str) -> Iterator[None]:
    envs_dir.mkdir(parents=True, exist_ok=True)
    with open(envs_dir / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(spec: PythonEnvSpec, project_dir: Path, target: Path) -> None:
    """Create the venv in a temporary directory, install, mark it complete and rename it into place."""
    if target.exists():  # a directory without the marker: a build killed mid-rename; start over
        shutil.rmtree(target)
    for stale in target.parent.glob(f".build-{target.name[:12]}-*"):  # builds killed before the rename
        shutil.rmtree(stale, ignore_errors=True)  # (we hold this hash's lock: nobody else is building it)
    staging = Path(tempfile.mkdtemp(prefix=f".build-{target.name[:12]}-", dir=target.parent))
    staging.chmod(0o755)
    try:
        uv = uv_binary()
        _uv([uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(staging)], project_dir)
        python = staging / "bin" / "python"
        _layer_over_agent_env(python)
        for group in (spec.build_dependencies, spec.dependencies):
            if group:
                _uv([uv, "pip", "install", "--quiet", "--python", str(python), *group], project_dir)
        marker = {"python": sys.version.split()[0], **spec.model_dump(mode="json")}
        (staging / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _layer_over_agent_env(python: Path) -> None:
    """Append the agent's site-packages to the new venv's path (after its own) so mlflow is importable."""
    done = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    agent_site = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    # An "import" line runs at startup: addsitedir appends each directory and processes its own .pth
    # files (e.g. an editable install), after the project's site-packages.
    lines = [f"import site; site.addsitedir({p!r})" for p in sorted(set(agent_site)) if Path(p).is_dir()]
    (Path(done.stdout.strip()) / _PTH_NAME).write_text("\n".join(lines) + "\n")


def _uv(command: list[str], project_dir: Path) -> None:
    """Run a uv command in the project directory (relative ``-r`` paths); raise one line on failure."""
    try:
        done = subprocess.run(
            command, cwd=project_dir, capture_output=True, text=True, timeout=_BUILD_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise ProjectEnvError(f"building the project environment timed out after {_BUILD_TIMEOUT} s") from exc
    if done.returncode != 0:
        raise ProjectEnvError(f"building the project environment failed: {uv_failure(done.stderr)}")


def uv_failure(stderr: str) -> str:
    """Return uv's error as one line (the resolver's 'Because …' explanation names the requirement)."""
    lines = [re.sub(r"^[\s×╰─▶│]+", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith("hint:")]
    because = next((line[line.index("Because") :] for line in lines if "Because" in line), None)
    if because is not None:
        return because[:400]
    errors = [line for line in lines if "error" in line.lower()] or lines[-1:] or ["uv exited with an error"]
    return " ".join(errors)[:400]
