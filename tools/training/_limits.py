"""Resource caps applied by the job itself, from the plan's resources, whatever the parameters say.

A job may run with as many threads as it has CPUs in its plan and as much memory as its plan grants:
``apply_resource_limits`` sets the thread count of every native pool that reads an environment variable
(OpenMP, OpenBLAS, MKL, numexpr, Accelerate) and of the pools the process already started, pins the
process to that many cores (spread over the machine by process ID, so parallel jobs do not share one
core), and caps the process's data segment
(``RLIMIT_DATA``: heap and private mappings) at the plan's memory. Thread-count hyperparameters
(``n_jobs``, ``num_threads``, ``nthread``, ...) are set by ``_modeling`` from the same count. On
Kubernetes the pod's requests = limits do the same; these calls are then harmless.

In a warm worker each job sets its own caps from the affinity the worker started with.
"""

from __future__ import annotations

import math
import os

from tools.core.specs import Resources

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")  # fmt: skip
_START_AFFINITY: frozenset[int] | None = (
    frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
)


def cpu_count_for(resources: Resources) -> int:
    """The whole number of CPUs a run may use (at least 1)."""
    return max(1, math.ceil(resources.cpu))


def _limit_started_pools(cpus: int) -> None:
    """Cap the native thread pools this process already holds at ``cpus`` threads, for good.

    The variables above only reach pools started later. A job forked from a warm process (the fork
    server, a warm worker) inherits pools its parent started with one thread per core; pinned to fewer
    cores, those threads spin against each other on every parallel call outside the fit (predictions,
    scoring, the model check at logging): measured, a hist-gradient-boosting job on diabetes took
    5.5 CPU-s instead of 0.8.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it there are no such pools to cap
        return
    threadpool_limits(limits=cpus)


def apply_resource_limits(resources: Resources) -> dict[str, object]:
    """Cap this process at the run's CPUs and memory; return what was applied (for the job's log)."""
    cpus = cpu_count_for(resources)
    for name in THREAD_ENV:
        os.environ[name] = str(cpus)
    _limit_started_pools(cpus)
    applied: dict[str, object] = {"threads": cpus}
    if _START_AFFINITY is not None and cpus < len(_START_AFFINITY):
        cores = sorted(_START_AFFINITY)
        first = os.getpid() % len(cores)
        chosen = {cores[(first + i) % len(cores)] for i in range(cpus)}
        try:
            os.sched_setaffinity(0, chosen)
            applied["cores"] = sorted(chosen)
        except OSError:  # a container may forbid it; the thread counts still hold
            pass
    elif _START_AFFINITY is not None:
        try:
            os.sched_setaffinity(0, _START_AFFINITY)
        except OSError:
            pass
    try:
        import resource

        limit = int(resources.memory_gb * 2**30)
        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard == resource.RLIM_INFINITY or limit <= hard:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
            applied["memory_bytes"] = limit
    except (ImportError, ValueError, OSError):  # not POSIX, or the limit is not allowed here
        pass
    return applied
