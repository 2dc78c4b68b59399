"""Start each deployment run with the pipeline already imported.

Prefect's runner starts every flow run in a fresh `spawn` interpreter, which then imports
Prefect, DVC, torch, scikit-learn and matplotlib again: about 8 s a run on a 2-core machine
before any work starts. `use_preloaded_forkserver()`, called once by `train_compare serve`,
starts a multiprocessing forkserver that imports every stage module when the executor starts,
and has Prefect fork each run from it instead of spawning a new interpreter.

A run must never execute code older than the files on disk: DVC would record the new code's
hash next to the old code's results. So when any file under `flows/` or `tasks/`, or `uv.lock`,
changed after the forkserver imported them, runs go back to a fresh `spawn` interpreter (slow, but current),
and the executor logs that restarting it makes runs fast again.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import pkgutil
from pathlib import Path

from prefect.logging import get_logger

import flows

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("flows", "tasks")
LOCK_FILE = "uv.lock"  # a changed environment counts as changed code
NOT_PRELOADED = {"server", "forkserver"}  # the executor's own helpers, not what runs import
# What `tasks/pipeline.py` imports lazily (a stage run as `dvc repro`'s command does not need it).
DVC_MODULES = ["dvc.repo", "dvc.repo.reproduce", "dvc.stage.cache", "dvc.repo.experiments.save"]

logger = get_logger("flows.forkserver")  # under Prefect's configured `prefect` logger


def source_fingerprint(root: Path = ROOT) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every Python file the runs import from this project, and the lock."""
    files = sorted(p for package in SOURCE_PACKAGES for p in (root / package).rglob("*.py"))
    files += [root / LOCK_FILE] if (root / LOCK_FILE).exists() else []
    return tuple((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


def preloaded_modules() -> list[str]:
    """Every flow module (each imports its stage's `tasks` module and their libraries), and DVC."""
    stages = [f"flows.{m.name}" for m in pkgutil.iter_modules(flows.__path__) if m.name not in NOT_PRELOADED]
    return sorted(stages) + DVC_MODULES


class _ForkserverForSpawn:
    """Stands in for the `multiprocessing` module inside `prefect.flow_engine`, whose
    `run_flow_in_subprocess` asks for the "spawn" context: hands back the preloaded forkserver
    while the project's sources are the ones it imported."""

    def __init__(self, fingerprint: tuple) -> None:
        self._fingerprint = fingerprint

    def __getattr__(self, name: str):
        return getattr(multiprocessing, name)

    def get_context(self, method: str | None = None):
        if method == "spawn":
            if source_fingerprint() == self._fingerprint:
                return multiprocessing.get_context("forkserver")
            logger.warning("flows/, tasks/ or uv.lock changed since this executor started: the run starts a fresh "
                           "interpreter (restart the executor to start runs from preloaded modules again)")
        return multiprocessing.get_context(method)


def use_preloaded_forkserver() -> bool:
    """Start the forkserver (it imports the stage modules now) and route Prefect's flow-run
    processes through it. Returns False, changing nothing, if this Prefect version does not
    start runs the way this module expects."""
    from prefect import flow_engine

    if getattr(flow_engine, "multiprocessing", None) is not multiprocessing or not hasattr(
            flow_engine, "run_flow_in_subprocess"):
        logger.warning("prefect.flow_engine no longer starts runs with multiprocessing: runs start from "
                       "a fresh interpreter")
        return False
    fingerprint = source_fingerprint()
    multiprocessing.set_forkserver_preload(preloaded_modules())
    multiprocessing.forkserver.ensure_running()
    flow_engine.multiprocessing = _ForkserverForSpawn(fingerprint)
    return True
