"""Stage `report`: `python -m flows.report` (see dvc.yaml).

Besides the two files, the flow publishes the headline table and the Markdown report as Prefect
artifacts, so the flow run's page in the Prefect UI shows the result.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import PATHS, stage_main, step
from tasks import report
from tasks.config import ReportParams, load_params
from tasks.paths import Paths

load_inputs = step(report.load_inputs)
build_report = step(report.build_report)
write_report = step(report.write_report)


@flow(name="report", log_prints=True)
def report_flow(params: ReportParams, models: tuple[str, ...], seed: int,
                paths: Paths = PATHS) -> report.Report:
    inputs = load_inputs(models, paths)
    built = build_report(inputs, params, seed)
    html_path = write_report(built, paths)
    create_table_artifact(table=built.headline, key="evaluation-headline",
                          description=report.HEADLINE_NOTE)
    create_markdown_artifact(markdown=built.markdown, key="evaluation-report",
                             description=f"The report's Markdown summary; figures: {html_path}")
    print(f"wrote {html_path} and {paths.report_md}")
    return built


def main() -> None:
    params = load_params()
    report_flow(params.report, params.train.models, params.base.seed)


if __name__ == "__main__":
    stage_main(main)
