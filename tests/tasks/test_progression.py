import math

import pytest

from flows.train_compare import exp_run_command
from tasks import progression
from tasks.config import load_params


def evaluation(model: str, folds: list[float], f1: float) -> dict:
    return {model: {"ensemble_macro_f1": f1,
                    "folds": {f"fold_{k}": {"test_acc_no_tta": a, "test_acc": a + 0.01} for k, a in enumerate(folds)}}}


def test_the_checked_in_steps_are_valid_and_use_real_parameters():
    steps = progression.load_steps()
    names = [s.name for s in steps]
    assert names[:2] == ["ann-plain", "cnn-plain"] and len(set(names)) == len(names)
    params = load_params().model_dump()
    for step in steps:
        for key in step.overrides:
            section, leaf = key.split(".")
            assert leaf in params[section], f"{step.name}: {key} is not a parameter"
    by_name = {s.name: s for s in steps}
    assert by_name["cnn-plain"].overrides == {"train.models": ["cnn"], "augment.enabled": False,
                                              "split.balancing": "none"}
    assert {s.model for s in steps} >= {"ann", "cnn", "cnn_blog", "resnet18", "vgg11_bn"}
    assert {s.overrides.get("train.activation") for s in steps} >= {"gelu", "silu"}
    assert {s.overrides.get("split.balancing") for s in steps if s.overrides.get("split.imbalance")} == {
        "none", "oversample", "class_weight"}


def test_table_orders_rows_as_the_steps_and_computes_the_gains():
    steps = [progression.Step("a", "ANN", {"train.models": ["ann"]}),
             progression.Step("b", "CNN", {"train.models": ["cnn"]}, builds_on="a"),
             progression.Step("c", "CNN + aug", {"train.models": ["cnn"], "augment.rotation": 20}, builds_on="b"),
             progression.Step("d", "never ran", {"train.models": ["cnn"]}, builds_on="c")]
    results = {
        "b": progression.step_result(steps[1], evaluation("cnn", [0.60, 0.62], 0.6),
                                     {"cnn": {"train_seconds": 120.0}}),
        "a": progression.step_result(steps[0], evaluation("ann", [0.50, 0.52], 0.5), None),
        "c": progression.step_result(steps[2], evaluation("cnn", [0.70, 0.74], 0.7), {"cnn": {"train_seconds": 60}}),
        "d": progression.step_result(steps[3], None, None),
    }
    table = progression.progression_table(steps, results)
    assert list(table["step"]) == ["a", "b", "c", "d"]
    assert table["test_acc_mean"].iloc[:3].tolist() == pytest.approx([0.51, 0.61, 0.72])
    assert table["test_acc_std"].iloc[0] == pytest.approx(math.sqrt(2) * 0.01)
    assert math.isnan(table["gain"].iloc[0])  # builds on nothing
    assert table["gain"].iloc[1:3].tolist() == pytest.approx([0.10, 0.11])
    assert math.isnan(table["gain"].iloc[3]) and not table["ran"].iloc[3]
    shown = progression.format_table(table)
    assert shown["gain"].tolist() == ["—", "+10.00 points vs a", "+11.00 points vs b", "— vs c"]
    assert shown["test accuracy (mean ± std, one view)"].iloc[3] == "not run"
    assert shown["training time"].tolist() == ["—", "2.0 min", "1.0 min", "—"]
    assert shown["what changed"].iloc[2] == "train.models=[cnn], augment.rotation=20"


@pytest.mark.parametrize(("text", "words"), [
    ("steps: []", "non-empty list"),
    ("steps: [{name: a, label: A}]", "exactly one model"),
    ("steps: [{name: a, label: A, set: {train.models: [ann, cnn]}}]", "exactly one model"),
    ("steps: [{name: a, label: A, set: {train.models: [ann]}}, {name: a, label: B, set: {train.models: [cnn]}}]",
     "used twice"),
    ("steps: [{name: a, label: A, builds_on: z, set: {train.models: [ann]}}]", "not an earlier step"),
    ("steps: [{name: a, label: A, sett: {}}]", "nothing else"),
    ("steps: [", "cannot read"),
])
def test_a_bad_steps_file_is_one_line_naming_the_file(tmp_path, text, words):
    path = tmp_path / "progression.yaml"
    path.write_text(text)
    with pytest.raises(progression.ProgressionError, match=words) as error:
        progression.load_steps(path)
    assert str(error.value).startswith(f"{path}:") and "\n" not in str(error.value).strip()


def test_a_step_is_queued_with_its_overrides():
    step = progression.load_steps()[1]
    command = exp_run_command(step.overrides, progression.experiment_name("p", step), queue=True)
    assert command[:7] == ["dvc", "--wait-for-lock", "exp", "run", "--queue", "--name", "p-cnn-plain"]
    assert command[7:] == ["--set-param", "train.models=[cnn]", "--set-param", "augment.enabled=false",
                           "--set-param", "split.balancing=none"]
