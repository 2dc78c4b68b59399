"""The prepared data's format: one Parquet table per split, written by the prepare stage and
read by every stage after it.

Each row is one image: `id` (row number within its split), `pixels` (H*W*3 uint8 bytes, HWC
order), `label` (class index), `class_name` and `origin` (the archive member, or batch:index).
The class list, in label order, and the image size travel in the table's metadata. Readers
import this module alone, not the archive and download code that made the tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class Split:
    pixels: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64
    origins: list[str]


def to_table(split: Split, classes: list[str]) -> pa.Table:
    n, size = len(split.labels), split.pixels.shape[1]
    width = size * size * 3
    pixels = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(np.ascontiguousarray(split.pixels))]
    )
    table = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int32)),
        "pixels": pixels,
        "label": pa.array(split.labels.astype(np.int16)),
        "class_name": pa.array([classes[i] for i in split.labels]).dictionary_encode(),
        "origin": pa.array(split.origins),
    })
    meta = {"classes": json.dumps(classes), "image_size": str(size)}
    return table.replace_schema_metadata(meta)


def read_prepared(path: Path | str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(pixels (N, S, S, 3) uint8, labels (N,) int64, class names) of a prepared split."""
    table = pq.read_table(path, columns=["pixels", "label"])
    meta = table.schema.metadata
    classes, size = json.loads(meta[b"classes"]), int(meta[b"image_size"])
    column = table.column("pixels").combine_chunks()
    width = size * size * 3
    flat = np.frombuffer(column.buffers()[1], np.uint8, len(column) * width, column.offset * width)
    pixels = flat.reshape(-1, size, size, 3).copy()  # own the memory: Arrow's buffer is read-only
    return pixels, table.column("label").to_numpy().astype(np.int64), classes


@dataclass
class TestSet:
    ids: np.ndarray  # (N,) the prepared table's `id` column
    pixels: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]


def read_test(path: Path) -> TestSet:
    """The prepared test split, with its image ids."""
    pixels, labels, classes = read_prepared(path)
    ids = pq.read_table(path, columns=["id"]).column("id").to_numpy().astype(np.int64)
    return TestSet(ids, pixels, labels, classes)


def read_labels(path: Path | str) -> tuple[np.ndarray, list[str]]:
    """(labels (N,) int64, class names) of a prepared split, without reading the pixels."""
    table = pq.read_table(path, columns=["label"])
    return table.column("label").to_numpy().astype(np.int64), json.loads(
        table.schema.metadata[b"classes"])
