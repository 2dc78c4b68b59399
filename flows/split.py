"""Stage `split`: `python -m flows.split` (see dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.common import PATHS, stage_main, step
from tasks import split
from tasks.config import SplitParams, load_params
from tasks.paths import Paths
from tasks.tables import read_labels as _read_labels

read_labels = step(_read_labels)
make_splits = step(split.make_splits)
write_splits = step(split.write_splits)


@flow(name="split", log_prints=True)
def split_flow(params: SplitParams, seed: int, paths: Paths = PATHS) -> Path:
    labels, classes = read_labels(paths.prepared_train)
    splits = make_splits(labels, classes, params, seed)
    return write_splits(splits, paths)


def main() -> None:
    params = load_params()
    split_flow(params.split, params.base.seed)


if __name__ == "__main__":
    stage_main(main)
