"""Stage 2: decode the archive into one canonical form, a Parquet table per split (the format:
tasks/tables.py)."""

from __future__ import annotations

import io
import json
import pickle
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from tasks.archive import OFFICIAL_META, OFFICIAL_TEST, OFFICIAL_TRAIN, ArchiveError, iter_members
from tasks.download import verify_checksum
from tasks.io import write_atomic, write_json
from tasks.paths import Paths
from tasks.tables import Split, to_table

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


@dataclass
class Dataset:
    classes: list[str]
    splits: dict[str, Split]
    converted: int = 0  # images whose mode was not RGB
    resized: int = 0  # images whose size was not the configured one
    skipped: list[str] = field(default_factory=list)  # members that are not images


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch holds (numpy arrays, lists, bytes): no code can run."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in a CIFAR batch")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"  # numpy 2 moved it; the archive predates that
        return super().find_class(module, name)


def load_batch(data: bytes, name: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ArchiveError(f"{name}: not a CIFAR batch ({exc})") from None
    if not isinstance(batch, dict):
        raise ArchiveError(f"{name}: not a CIFAR batch (a {type(batch).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _read_official(archive: Path, size: int) -> Dataset:
    batches, meta = {}, None
    wanted = {*OFFICIAL_TRAIN, OFFICIAL_TEST}
    for member in iter_members(archive):
        base = PurePosixPath(member.name).name
        if base in wanted:
            batches[base] = load_batch(member.read(), member.name)
        elif base == OFFICIAL_META:
            meta = load_batch(member.read(), member.name)
    classes = [c.decode() for c in meta["label_names"]]
    splits = {}
    for split, names in (("train", OFFICIAL_TRAIN), ("test", (OFFICIAL_TEST,))):
        pixels = np.concatenate([batches[n]["data"] for n in names]).reshape(-1, 3, 32, 32)
        pixels = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
        if size != 32:
            pixels = np.stack([_resize(Image.fromarray(p), size) for p in pixels])
        labels = np.concatenate([np.asarray(batches[n]["labels"], np.int64) for n in names])
        origins = [f"{n}:{i}" for n in names for i in range(len(batches[n]["labels"]))]
        splits[split] = Split(pixels, labels, origins)
    resized = 0 if size == 32 else sum(len(s.labels) for s in splits.values())
    return Dataset(classes, splits, resized=resized)


def _resize(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def _decode(job: tuple[bytes, int]) -> tuple[np.ndarray | None, bool, bool]:
    """(pixels or None if not an image, mode was converted, size was changed)."""
    data, size = job
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError):
        return None, False, False
    converted = image.mode != "RGB"
    if converted:
        image = image.convert("RGB")
    if image.size != (size, size):
        return _resize(image, size), converted, True
    return np.asarray(image), converted, False


def _read_image_folder(archive: Path, prefix: str, size: int, workers: int) -> Dataset:
    depth = len(PurePosixPath(prefix).parts) if prefix else 0
    entries, blobs = [], []
    for member in iter_members(archive):
        parts = PurePosixPath(member.name).parts
        if member.name.endswith("/") or len(parts) != depth + 3 or parts[depth] not in ("train", "test"):
            continue
        entries.append((parts[depth], parts[depth + 1], member.name))
        blobs.append(member.read())
    found = sorted({cls for _, cls, _ in entries})
    classes = list(CIFAR10_CLASSES) if set(found) == set(CIFAR10_CLASSES) else found
    index = {c: i for i, c in enumerate(classes)}
    # Archive order is whatever the packer chose: sort so ids do not depend on it.
    order = sorted(range(len(entries)), key=lambda i: (entries[i][0], index[entries[i][1]], entries[i][2]))
    entries, blobs = [entries[i] for i in order], [blobs[i] for i in order]

    # JPEG decoding is the only heavy work; spread it over the cores in large chunks.
    jobs = [(blob, size) for blob in blobs]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            decoded = list(pool.map(_decode, jobs, chunksize=2048))
    else:
        decoded = list(map(_decode, jobs))

    data = Dataset(classes, {})
    rows: dict[str, list] = {"train": [], "test": []}
    for (split, cls, name), (pixels, converted, resized) in zip(entries, decoded, strict=True):
        if pixels is None:
            data.skipped.append(name)
            continue
        data.converted += converted
        data.resized += resized
        rows[split].append((pixels, index[cls], name))
    for split, items in rows.items():
        if not items:
            raise ArchiveError(f"{archive}: split {split!r} holds no decodable image")
        pixels = np.empty((len(items), size, size, 3), np.uint8)
        for i, (image, _, _) in enumerate(items):
            pixels[i] = image
        labels = np.asarray([label for _, label, _ in items], np.int64)
        data.splits[split] = Split(pixels, labels, [name for _, _, name in items])
    return data


def read_archive(raw_dir: Path, size: int, workers: int = 2) -> Dataset:
    """Decode the archive `data/raw/` holds, after checking it is the one the download verified."""
    source = json.loads((raw_dir / "source.json").read_text())
    archive = raw_dir / source["file"]
    verify_checksum(archive, "sha256:" + source["sha256"])
    if source["layout"] == "cifar-python":
        return _read_official(archive, size)
    return _read_image_folder(archive, source["prefix"], size, workers)


def summarize(data: Dataset) -> dict:
    summary = {"classes": len(data.classes)}
    for split, part in data.splits.items():
        counts = Counter(part.labels.tolist())
        summary[split] = {
            "images": len(part.labels),
            "per_class": {c: counts.get(i, 0) for i, c in enumerate(data.classes)},
        }
    summary.update(converted=data.converted, resized=data.resized, skipped=len(data.skipped))
    return summary


def write_prepared(data: Dataset, paths: Paths) -> dict:
    """Write one Parquet table per split and the summary metric; return the summary."""
    for name in data.skipped:
        print(f"skipped {name}: not an image")
    for split, target in (("train", paths.prepared_train), ("test", paths.prepared_test)):
        table = to_table(data.splits[split], data.classes)
        write_atomic(target, lambda p, t=table: pq.write_table(t, p))
    summary = summarize(data)
    write_json(paths.prepared_summary, summary)
    print(f"{paths.prepared}: " + ", ".join(f"{s} {summary[s]['images']} images" for s in data.splits)
          + f", {summary['classes']} classes")
    return summary
