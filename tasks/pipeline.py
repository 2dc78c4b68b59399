"""`dvc repro`, step by step, through DVC's own Python API, so that one process can run every
stage in turn (and Prefect can watch each): DVC still decides which stages are stale, restores
from its run cache, hashes and caches the outputs and writes `dvc.lock`, exactly as `dvc repro`
does; only the execution of a stage's command is handed to the caller.

Also: temporary parameter overrides (what `dvc exp run -S` does) and recording the result as a
DVC experiment (`dvc exp save`), for the `train-compare` deployment.
"""

from __future__ import annotations

import fcntl
import io
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tasks.config import PARAMS_FILE, parse_params

STAGE_COMMAND = re.compile(r"^python -m (?P<module>flows\.\w+)$")
# Outputs git does not track yet that an experiment should still carry.
EXPERIMENT_UNTRACKED = ["metrics", "logs", "reports", "eval", "data/prepared/summary.json"]


def stage_module(command: str) -> str:
    """The flow module a stage's `cmd` runs (`python -m flows.train` -> `flows.train`)."""
    match = STAGE_COMMAND.match(command.strip())
    if not match:
        raise ValueError(f"dvc.yaml: stage command {command!r} is not 'python -m flows.<stage>'")
    return match["module"]


@contextmanager
def locked_repo(root: Path | str = ".") -> Iterator[Any]:
    """The DVC repository with DVC's repository lock held for the whole block: a concurrent
    `dvc repro` or second run fails at once with DVC's "Unable to acquire lock" error."""
    from dvc.repo import Repo, lock_repo

    repo = Repo(str(root))
    try:
        with lock_repo(repo):
            yield repo
    finally:
        repo.close()


def plan(repo) -> list:
    """Every pipeline stage, upstream before downstream (the order `dvc repro` uses)."""
    from dvc.repo.reproduce import plan_repro

    return plan_repro(repo.index.graph, None)


def is_stale(stage) -> bool:
    return bool(stage.changed())


def reproduce_stage(stage, execute: Callable[[Any], None]) -> str:
    """What `dvc repro` does for one stale stage, with `execute(stage)` running its command.

    Returns "restored" when DVC's run cache already held these outputs, else "ran".
    """
    from dvc.stage.cache import RunCacheNotFoundError

    stage.remove_outs(ignore_remove=False, force=False)
    try:
        stage.repo.stage_cache.restore(stage)
        outcome = "restored"
    except RunCacheNotFoundError:
        stage.save_deps()
        execute(stage)
        outcome = "ran"
    stage.save()
    stage.commit()
    stage.dump(update_pipeline=False)
    return outcome


def _dotted_set(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        if part not in tree:
            raise KeyError(f"{PARAMS_FILE}: no section {part!r} for override {key!r}")
        tree = tree[part]
    if leaf not in tree:
        raise KeyError(f"{PARAMS_FILE}: no key {key!r} to override")
    tree[leaf] = value


def _backup_of(path: Path) -> Path:
    return path.parent / ".dvc" / "tmp" / f"{path.name}.keep"  # survives a crash; not in the workspace


@contextmanager
def _params_lock(path: Path) -> Iterator[None]:
    """Held by a run for as long as it uses `path`: a second run must not override the file under
    it, and a backup found while nobody holds the lock was left by a run that died. The kernel
    releases the lock when its process ends, however it ends."""
    lock_file = _backup_of(path).with_suffix(".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{path}: another train-compare run is using it; wait for that run to end") from None
        yield


def _restore_backup(path: Path) -> bool:
    backup = _backup_of(path)
    if not backup.exists():
        return False
    backup.replace(path)
    print(f"{path}: restored from {backup}, left there by a run with overrides that was interrupted")
    return True


def restore_interrupted_params(path: Path = PARAMS_FILE) -> bool:
    """Put back the `params.yaml` a killed run with overrides could not restore; True if it did.
    Does nothing while a live run holds the file."""
    try:
        with _params_lock(path):
            return _restore_backup(path)
    except RuntimeError:
        return False


@contextmanager
def overridden_params(overrides: dict[str, Any] | None, path: Path = PARAMS_FILE) -> Iterator[None]:
    """`params.yaml` with `{"train.epochs": 3, ...}` applied (comments kept) inside the block,
    as it was afterwards. Overrides are validated before the file is touched. A backup left by
    an earlier run that was killed is restored first."""
    with _params_lock(path):
        _restore_backup(path)
        if not overrides:
            yield
            return
        yaml = YAML()  # round-trip mode: comments and order survive
        tree = yaml.load(path.read_text())
        for key, value in overrides.items():
            _dotted_set(tree, key, value)
        buffer = io.StringIO()
        yaml.dump(tree, buffer)
        parse_params(YAML(typ="safe").load(buffer.getvalue()), f"{path} with overrides {overrides}")
        backup = _backup_of(path)
        shutil.copyfile(path, backup)
        try:
            path.write_text(buffer.getvalue())
            yield
        finally:
            backup.replace(path)


def save_experiment(root: Path | str = ".", name: str | None = None) -> str | None:
    """Record the workspace (params, dvc.lock, metrics, plots) as a DVC experiment.

    Called after `locked_repo` is released: `dvc exp save` takes the repository lock itself.
    """
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        include = [p for p in EXPERIMENT_UNTRACKED if Path(repo.root_dir, p).exists()]
        return repo.experiments.save(name=name, include_untracked=include, force=True)
