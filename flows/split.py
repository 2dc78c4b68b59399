"""Stage `split`: `python -m flows.split` (see dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.common import stage_main, step
from tasks import split
from tasks.config import SplitParams, load_params
from tasks.prepare import PREPARED_DIR
from tasks.prepare import read_labels as _read_labels

read_labels = step(_read_labels)
make_splits = step(split.make_splits)
write_splits = step(split.write_splits)


@flow(name="split", log_prints=True)
def split_flow(params: SplitParams, seed: int, prepared: Path = PREPARED_DIR / "train.parquet",
               out_dir: Path = split.SPLITS_DIR) -> Path:
    labels, classes = read_labels(prepared)
    splits = make_splits(labels, classes, params, seed)
    return write_splits(splits, out_dir)


def main() -> None:
    params = load_params()
    split_flow(params.split, params.base.seed)


if __name__ == "__main__":
    stage_main(main)
