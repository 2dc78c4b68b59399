"""The evaluate and report flows through Prefect's engine, and the report's Prefect artifacts."""

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.evaluate import evaluate_flow
from flows.report import report_flow
from tasks.paths import Paths
from tests.evaluation_data import EVALUATE, REPORT, write_pipeline_inputs


def test_evaluate_then_report_publish_files_and_artifacts(prefect_server, tmp_path):
    write_pipeline_inputs(tmp_path)
    summary = evaluate_flow(EVALUATE, ("ann", "cnn"), Paths(tmp_path))
    assert set(summary) == {"ann", "cnn", "comparison"}
    assert (tmp_path / "eval/predictions/cnn.parquet").exists()

    state = report_flow(REPORT, ("ann", "cnn"), 42, Paths(tmp_path), return_state=True)
    built = state.result()
    assert (tmp_path / "reports/report.html").read_text() == built.html
    assert (tmp_path / "reports/report.md").read_text() == built.markdown

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_key = {a.key: a for a in artifacts}
    assert by_key["evaluation-report"].type == "markdown"
    assert by_key["evaluation-report"].data == built.markdown
    assert by_key["evaluation-headline"].type == "table"
    assert "CNN" in str(by_key["evaluation-headline"].data)
