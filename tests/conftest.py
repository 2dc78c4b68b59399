"""Shared fixtures: small synthetic archives and data sets, and one Prefect server per session."""

from __future__ import annotations

import copy
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tasks.config import Params, parse_params
from tasks.prepare import Split, to_table

ROOT = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar-10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def params(raw_params) -> Params:
    return parse_params(copy.deepcopy(raw_params))


def with_changes(params: Params, **sections: dict) -> Params:
    """A copy of `params` with some keys of some sections replaced."""
    return params.model_copy(update={
        name: getattr(params, name).model_copy(update=changes) for name, changes in sections.items()
    })


def class_images(classes: int, per_class: int, size: int = 32, seed: int = 0):
    """Images whose colour depends on the class, plus noise: learnable, but not trivially."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, (classes, 3))
    labels = np.repeat(np.arange(classes), per_class)
    noise = rng.normal(0, 40, (len(labels), size, size, 3))
    pixels = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return pixels, labels


def png_bytes(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="PNG")
    return out.getvalue()


def image_folder_files(classes=("cat", "dog", "frog"), per_class=(6, 3), size=32, top="images"):
    """{archive path: bytes} for an image-folder archive with `per_class` (train, test) images."""
    files = {}
    pixels, labels = class_images(len(classes), sum(per_class), size)
    for c, name in enumerate(classes):
        own = pixels[labels == c]
        for i in range(per_class[0]):
            files[f"{top}/train/{name}/{i:04d}.png".lstrip("/")] = png_bytes(own[i])
        for i in range(per_class[1]):
            files[f"{top}/test/{name}/{i:04d}.png".lstrip("/")] = png_bytes(own[per_class[0] + i])
    return files


def write_tar(path: Path, files: dict[str, bytes], dirs=(), links=()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def official_files(per_batch: int = 4, seed: int = 0) -> dict[str, bytes]:
    """The official pickled layout (cifar-10-batches-py/), tiny batches, 10 classes."""
    rng = np.random.default_rng(seed)
    files = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}
        files[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
    meta = {b"label_names": [c.encode() for c in (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]}
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(meta, protocol=2)
    return files


def write_prepared_split(path: Path, classes: list[str], pixels, labels) -> Path:
    split = Split(pixels, np.asarray(labels, np.int64), [f"synthetic:{i}" for i in range(len(labels))])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(split, classes), path)  # the same conversion the stage uses
    return path


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One Prefect server for the whole session, on a free loopback port, torn down at the end."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server import running_server

    home = tmp_path_factory.mktemp("prefect-home")
    previous = os.environ.get("PREFECT_API_URL")
    with running_server(home=home) as api_url, temporary_settings({PREFECT_API_URL: api_url}):
        os.environ["PREFECT_API_URL"] = api_url  # for the subprocesses tests start (dvc repro)
        yield api_url
        # Send the last logs and events while the server still listens, not into a closed port.
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    if previous is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = previous
