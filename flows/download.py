"""Stage `download`: `python -m flows.download` (see dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.common import PATHS, stage_main, step
from tasks import download
from tasks.config import DataParams, load_params
from tasks.paths import Paths

choose_source = step(download.choose_source)
fetch_archive = step(download.fetch_archive, retry_delay_seconds=[2, 10, 30])
check_archive = step(download.check_archive)
publish = step(download.publish)


@flow(name="download", log_prints=True)
def download_flow(params: DataParams, paths: Paths = PATHS) -> Path:
    source = choose_source(params)
    partial = fetch_archive.with_options(retries=params.download_retries - 1)(source, paths.partial_download)
    layout = check_archive(partial, source)
    return publish(partial, source, layout, paths.raw)


def main() -> None:
    download_flow(load_params().data)


if __name__ == "__main__":
    stage_main(main)
