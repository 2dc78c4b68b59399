"""What every stage flow shares: how a plain function becomes a Prefect task, and `main()`."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from prefect import tags, task
from prefect.cache_policies import NO_CACHE

from tasks.errors import PipelineError
from tasks.paths import Paths

PATHS = Paths()  # the project's own layout; tests pass a Paths under a temporary folder
# Set by the train-compare flow for the `dvc exp run` it starts: its name, so that the stage
# flows of one run can be found together in the Prefect UI (tag `train-compare:<name>`).
RUN_TAG_ENV = "TRAIN_COMPARE_RUN"
DEBUG_ENV = "PIPELINE_DEBUG"  # set to 1 for the tracebacks of expected failures too
# The cores a stage may use. Unset: every core this process may run on. The progression queue
# sets it for each of its parallel experiments, so that they share the cores, not oversubscribe them.
CPUS_ENV = "PIPELINE_CPUS"


def available_cpus() -> int:
    """Cores this stage may use: $PIPELINE_CPUS when set, else the process's CPU affinity."""
    value = os.environ.get(CPUS_ENV, "").strip()
    if not value:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise PipelineError(f"{CPUS_ENV}={value!r}: must be a whole number of cores, at least 1")
    return int(value)


def step(fn: Callable, **options):
    """Wrap a plain function as a Prefect task.

    No Prefect caching: DVC decides what is stale, and hashing large arrays to build cache
    keys would cost more than the work itself.
    """
    return task(fn, cache_policy=NO_CACHE, **options)


class _WithoutTraceback(logging.Filter):
    """Prefect logs a failed task or flow run with its traceback. For an expected failure the
    message already names the file and the cause: keep the line, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.exc_info, record.exc_text = None, None
        return True


def stage_main(run: Callable[[], object]) -> None:
    """Run a stage; an expected failure (bad parameters, a bad archive, a failed download) ends
    it with one clear line, not a traceback (unless PIPELINE_DEBUG=1)."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if not debug:
        quiet = _WithoutTraceback()
        for name in ["prefect", *(n for n in list(logging.root.manager.loggerDict) if n.startswith("prefect."))]:
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(quiet)
    parent = os.environ.get(RUN_TAG_ENV)
    try:
        with tags(*([f"train-compare:{parent}"] if parent else [])):
            run()
    except PipelineError as exc:
        if debug:
            raise
        sys.exit(f"error: {exc}")
