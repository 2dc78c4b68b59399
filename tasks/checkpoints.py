"""Training checkpoints at a location every worker can reach: a local folder (the default,
`<project>/checkpoints`) or any fsspec URL (`s3://bucket/cifar`, `gs://…`, `memory://` in tests).

Layout: `<root>/<pair>/<key>/checkpoint.pt`, where `pair` names what is trained (`cnn/fold_0`) and
`key` everything its result depends on (tasks/train.py's `checkpoint_key`). A checkpoint is
written under a temporary name and moved into place, so a worker killed mid-write leaves the
previous one whole. Each pair keeps the checkpoints of its `KEEP` keys used last, so switching
back to earlier parameters (an experiment, the workspace before a change) resumes or restores.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass

import fsspec
import torch

KEEP = 3  # keys per pair whose checkpoints stay
USED = "used"  # per-key file holding when the key was last used (object stores have no mtimes to set)


@dataclass(frozen=True)
class Checkpoint:
    root: str  # a local folder or an fsspec URL
    pair: str  # e.g. "cnn/fold_0"
    key: str

    def _where(self):
        """(filesystem, root path, this key's folder) for fsspec."""
        fs, root = fsspec.core.url_to_fs(self.root)
        root = root.rstrip("/")
        return fs, root, f"{root}/{self.pair}/{self.key}"

    def load(self) -> dict | None:
        fs, _, folder = self._where()
        path = f"{folder}/checkpoint.pt"
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as fh:
            return torch.load(io.BytesIO(fh.read()), map_location="cpu", weights_only=True)

    def save(self, state: dict) -> None:
        fs, _, folder = self._where()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        fs.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.checkpoint.{uuid.uuid4().hex}.tmp"
        fs.pipe_file(tmp, buffer.getvalue())
        fs.mv(tmp, f"{folder}/checkpoint.pt")

    def use(self, keep: int = KEEP) -> None:
        """Mark this key as used now and delete the pair's other keys but the `keep - 1` used last."""
        fs, root, folder = self._where()
        fs.makedirs(folder, exist_ok=True)
        fs.pipe_file(f"{folder}/{USED}", repr(time.time()).encode())
        pair_dir = f"{root}/{self.pair}"
        others = [d for d in fs.ls(pair_dir, detail=False) if d.rstrip("/").rsplit("/", 1)[-1] != self.key]
        others.sort(key=lambda d: _last_used(fs, d))
        for stale in others[:max(0, len(others) - (keep - 1))]:
            fs.rm(stale, recursive=True)


def _last_used(fs, folder: str) -> float:
    try:
        return float(fs.cat_file(f"{folder.rstrip('/')}/{USED}"))
    except (FileNotFoundError, ValueError):
        return 0.0

