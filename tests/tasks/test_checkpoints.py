"""Checkpoints at a local folder and at an fsspec URL (memory://, standing in for s3:// and the like)."""

import uuid

import fsspec
import pytest
import torch

from tasks.checkpoints import KEEP, Checkpoint


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "checkpoints")
    return f"memory://checkpoints-{uuid.uuid4().hex}"


def test_a_saved_state_loads_back(root):
    checkpoint = Checkpoint(root, "cnn/fold_0", "abc")
    assert checkpoint.load() is None
    checkpoint.save({"epoch": 3, "weights": torch.arange(4.0)})
    state = Checkpoint(root, "cnn/fold_0", "abc").load()
    assert state["epoch"] == 3 and torch.equal(state["weights"], torch.arange(4.0))
    fs, folder = fsspec.core.url_to_fs(f"{root}/cnn/fold_0/abc")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)) == ["checkpoint.pt"]  # no temporary left


def test_only_the_keys_used_last_stay(root):
    for key in ["k0", "k1", "k2", "k3", "k1"]:  # k1 again: used last, so it stays
        checkpoint = Checkpoint(root, "ann/fold_1", key)
        checkpoint.use()
        checkpoint.save({"key": key})
    fs, folder = fsspec.core.url_to_fs(f"{root}/ann/fold_1")
    kept = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))
    assert len(kept) == KEEP and kept == ["k1", "k2", "k3"]
    assert Checkpoint(root, "ann/fold_0", "k0").load() is None  # other pairs are not touched
