"""Stage `prepare`: `python -m flows.prepare` (see dvc.yaml)."""

from __future__ import annotations

from prefect import flow

from flows.common import PATHS, stage_main, step
from tasks import prepare
from tasks.config import DataParams, load_params
from tasks.paths import Paths

read_archive = step(prepare.read_archive)
write_prepared = step(prepare.write_prepared)


@flow(name="prepare", log_prints=True)
def prepare_flow(params: DataParams, paths: Paths = PATHS) -> dict:
    data = read_archive(paths.raw, params.image_size)
    return write_prepared(data, paths)


def main() -> None:
    prepare_flow(load_params().data)


if __name__ == "__main__":
    stage_main(main)
