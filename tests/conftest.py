"""Shared fixtures: small synthetic archives and data sets, and one Prefect server per session."""

from __future__ import annotations

import copy
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tasks.config import Params, parse_params
from tasks.paths import Paths
from tasks.tables import Split, to_table

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


def write_tar(path: Path, files: dict[str, bytes], dirs=(), links=(), special=()) -> Path:
    """A tar.gz of `files`, plus directories, symbolic `links` (name, target) and `special`
    members (name, tarfile type, link target), e.g. hard links and devices."""
    with tarfile.open(path, "w:gz") as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind, target in [(n, tarfile.SYMTYPE, t) for n, t in links] + list(special):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tar.addfile(info)
    return path


def write_zip(path: Path, files: dict[str, bytes], links=()) -> Path:
    """A zip of `files`, plus symbolic `links` (name, target) as Info-ZIP stores them."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # S_IFLNK: the member's data is the target
            zf.writestr(info, target)
    return path


class _Python2Pickler(pickle._Pickler):
    """Pickles the way the original CIFAR-10 batches were written (Python 2, protocol 2): every
    string, bytes or text, is a Python 2 `str` (BINSTRING), not Python 3's `_codecs.encode` call."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = _save_py2_str


def python2_pickle(obj) -> bytes:
    """`obj` pickled as by Python 2 and numpy 1: arrays rebuilt through `numpy.core.multiarray`
    (numpy 2 renamed it `numpy._core`, and writes that name)."""
    out = io.BytesIO()
    _Python2Pickler(out, protocol=2).dump(obj)
    data = out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data or b"cnumpy" not in data
    return data


def official_files(per_batch: int = 4, seed: int = 0) -> dict[str, bytes]:
    """The official archive's members (cifar-10-batches-py/: five training batches, the test batch,
    batches.meta and readme.html), pickled as the original was, with tiny batches of 10 classes."""
    rng = np.random.default_rng(seed)
    files = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        batch_label = f"training batch {i + 1} of 5" if i < 5 else "testing batch 1 of 1"
        batch = {"batch_label": batch_label, "labels": labels,
                 "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        files[f"cifar-10-batches-py/{name}"] = python2_pickle(batch)
    meta = {"num_cases_per_batch": per_batch, "num_vis": 3072, "label_names": [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    files["cifar-10-batches-py/batches.meta"] = python2_pickle(meta)
    files["cifar-10-batches-py/readme.html"] = b"<meta HTTP-EQUIV='REFRESH' content='0; url=...'>"
    return files


def write_prepared_split(path: Path, classes: list[str], pixels, labels) -> Path:
    split = Split(pixels, np.asarray(labels, np.int64), [f"synthetic:{i}" for i in range(len(labels))])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(split, classes), path)  # the same conversion the stage uses
    return path


class ServedFile(http.server.BaseHTTPRequestHandler):
    """Serves one payload. Honours Range (and If-Range against its ETag) unless `honour_range` is
    off, answers 416 to a range past the end, can cut the first response short or fail every one."""

    payload = b""
    etag = '"v1"'
    honour_range = True
    cut_first_at = None
    fail_with = None
    requests: list = []

    def do_GET(self):  # noqa: N802
        requested = self.headers.get("Range")
        type(self).requests.append(requested)
        if self.fail_with:
            self.send_error(self.fail_with)
            return
        start = int(requested[6:-1]) if requested and self.honour_range else 0
        if self.headers.get("If-Range") not in (None, self.etag):
            start = 0  # the file changed since the partial bytes: send it whole
        if start >= len(self.payload) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(self.payload)}")
            self.end_headers()
            return
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", self.etag)
        self.end_headers()
        if type(self).cut_first_at is not None and len(type(self).requests) == 1:
            self.wfile.write(body[: type(self).cut_first_at])
            return  # the connection closes early, as a dropped download would
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """`serve(path)` -> (handler class, URL): the file on a loopback HTTP server for this test.
    Set attributes on the handler class to change how it answers; `requests` records each Range."""
    servers = []

    def start(path: Path):
        handler = type("Handler", (ServedFile,), {"payload": Path(path).read_bytes(), "requests": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return handler, f"http://127.0.0.1:{server.server_port}/{Path(path).name}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def two_fold_data(root: Path, params: Params, classes: list[str], per_class: int, size: int):
    """What the train stage reads, under `root`: class-coloured images split into 2 folds.
    Returns the train stage's paths, the pixels and the labels."""
    from tasks import split

    pixels, labels = class_images(len(classes), per_class, size=size)
    paths = Paths(root)
    write_prepared_split(paths.prepared_train, classes, pixels, labels)
    split.write_splits(split.make_splits(labels, classes, with_changes(params, split={"folds": 2}).split, 0),
                       paths)
    return paths, pixels, labels


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
