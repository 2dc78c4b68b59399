"""What every stage flow shares: how a plain function becomes a Prefect task, and `main()`."""

from __future__ import annotations

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


def step(fn: Callable, **options):
    """Wrap a plain function as a Prefect task.

    No Prefect caching: DVC decides what is stale, and hashing large arrays to build cache
    keys would cost more than the work itself.
    """
    return task(fn, cache_policy=NO_CACHE, **options)


def stage_main(run: Callable[[], object]) -> None:
    """Run a stage; an expected failure (bad parameters, a bad archive, a failed download) ends
    it with one clear line, not a traceback."""
    parent = os.environ.get(RUN_TAG_ENV)
    try:
        with tags(*([f"train-compare:{parent}"] if parent else [])):
            run()
    except PipelineError as exc:
        sys.exit(f"error: {exc}")
