"""Stage `prepare`: `python -m flows.prepare` (see dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.common import stage_main, step
from tasks import prepare
from tasks.config import DataParams, load_params
from tasks.download import RAW_DIR

read_archive = step(prepare.read_archive)
write_prepared = step(prepare.write_prepared)


@flow(name="prepare", log_prints=True)
def prepare_flow(params: DataParams, raw_dir: Path = RAW_DIR,
                 out_dir: Path = prepare.PREPARED_DIR) -> dict:
    data = read_archive(raw_dir, params.image_size)
    return write_prepared(data, out_dir)


def main() -> None:
    prepare_flow(load_params().data)


if __name__ == "__main__":
    stage_main(main)
