"""Caps enforced by the job process itself (issue #17): threads, cores and memory from the plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os, resource
import numpy
from threadpoolctl import threadpool_info
from tools.core.specs import Resources
from tools.training._limits import apply_resource_limits
numpy.ones((64, 64)) @ numpy.ones((64, 64))  # a BLAS pool started before the caps, as in a warm parent
applied = apply_resource_limits(Resources(cpu=1, memory_gb=0.75))
pools = sorted({pool["num_threads"] for pool in threadpool_info()})
try:
    blob = bytearray(1024 * 1024 * 1024)  # 1 GiB: more than the plan grants
    allocated = True
except MemoryError:
    allocated = False
print(json.dumps({"applied": applied, "affinity": sorted(os.sched_getaffinity(0)),
                  "omp": os.environ.get("OMP_NUM_THREADS"), "allocated": allocated, "pools": pools,
                  "limit": resource.getrlimit(resource.RLIMIT_DATA)[0]}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux process controls")
def test_a_job_gets_its_threads_cores_and_memory_from_the_plan() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["omp"] == "1" and seen["applied"]["threads"] == 1
    assert seen["pools"] == [1]  # pools started before the caps too (a job forked from a warm process)
    assert seen["limit"] == int(0.75 * 2**30)
    assert seen["allocated"] is False  # the plan's memory is a real limit, not a label
    if len(os.sched_getaffinity(0)) > 1:
        assert len(seen["affinity"]) == 1  # pinned to one core
