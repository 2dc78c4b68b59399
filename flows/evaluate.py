"""Stage `evaluate`: `python -m flows.evaluate` (see dvc.yaml)."""

from __future__ import annotations

import torch
from prefect import flow

from flows.common import PATHS, available_cpus, stage_main, step
from tasks import evaluate, tables
from tasks.config import EvaluateParams, load_params
from tasks.paths import Paths

read_test = step(tables.read_test)
evaluate_model = step(evaluate.evaluate_model, task_run_name="evaluate-{model}")
compare = step(evaluate.compare)
write_outputs = step(evaluate.write_outputs)


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: EvaluateParams, models: tuple[str, ...],
                  paths: Paths = PATHS) -> dict:
    torch.set_num_threads(available_cpus())  # the stage's share of the cores ($PIPELINE_CPUS)
    test = read_test(paths.prepared_test)
    results = [evaluate_model(model, paths, test, params) for model in models]
    comparisons = compare(results, test.labels)
    return write_outputs(results, comparisons, test, params, paths)


def main() -> None:
    params = load_params()
    evaluate_flow(params.evaluate, params.train.models)


if __name__ == "__main__":
    stage_main(main)
