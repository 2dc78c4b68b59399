"""Prepare-stage speed and memory on the archive `data/raw/` holds (run `dvc repro download` first).

    python -m benchmarks.prepare_speed [--workers 2]

Decodes every image and writes the Parquet tables to a temporary folder; prints wall time,
images per second and peak resident memory (this process and its decoding workers).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from tasks.paths import Paths
from tasks.prepare import read_archive, write_prepared


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    started = time.perf_counter()
    data = read_archive(Paths().raw, args.size, args.workers)
    decoded = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_prepared(data, Path(tmp))
    done = time.perf_counter()
    images = sum(summary[s]["images"] for s in ("train", "test"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"prepare: {images} images in {done - started:.1f} s ({images / (done - started):.0f} img/s; "
          f"decode {decoded - started:.1f} s, write {done - decoded:.1f} s)")
    print(f"peak memory: {peak:.0f} MB main process, {workers:.0f} MB largest worker")


if __name__ == "__main__":
    main()
