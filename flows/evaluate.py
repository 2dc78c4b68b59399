"""Stage `evaluate`: `python -m flows.evaluate` (see dvc.yaml)."""

from __future__ import annotations

from prefect import flow

from flows.common import stage_main, step
from tasks import evaluate
from tasks.config import EvaluateParams, load_params

read_test = step(evaluate.read_test)
evaluate_model = step(evaluate.evaluate_model, task_run_name="evaluate-{model}")
compare = step(evaluate.compare)
write_outputs = step(evaluate.write_outputs)
PATHS = evaluate.EvalPaths()


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: EvaluateParams, models: tuple[str, ...],
                  paths: evaluate.EvalPaths = PATHS) -> dict:
    test = read_test(paths.test)
    results = [evaluate_model(model, paths.models, test, params) for model in models]
    comparisons = compare(results, test.labels)
    return write_outputs(results, comparisons, test, params, paths)


def main() -> None:
    params = load_params()
    evaluate_flow(params.evaluate, params.train.models)


if __name__ == "__main__":
    stage_main(main)
