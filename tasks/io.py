"""Atomic writes: a stage's output appears whole or not at all.

Everything is written to a temporary sibling first and renamed into place, so an interrupted or
failed run never leaves a half-written file where a finished one used to be.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def atomic_path(target: Path | str, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create private files; outputs get the usual umask-based permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_atomic(target: Path | str, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` and move the result to `target`."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def write_json(target: Path | str, data: object) -> Path:
    return write_atomic(target, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def write_parquet(target: Path | str, frame: pd.DataFrame) -> Path:
    return write_atomic(target, lambda p: frame.to_parquet(p, index=False))


def write_csv(target: Path | str, frame: pd.DataFrame) -> Path:
    return write_atomic(target, lambda p: frame.to_csv(p, index=False))
