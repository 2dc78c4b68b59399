import math

import pytest

from flows.train_compare import exp_run_command
from tasks import progression
from tasks.config import load_params
from tasks.presets import resolve


def evaluation(model: str, folds: list[float], f1: float) -> dict:
    return {model: {"ensemble_macro_f1": f1,
                    "folds": {f"fold_{k}": {"test_acc_no_tta": a, "test_acc": a + 0.01} for k, a in enumerate(folds)}}}


def test_the_checked_in_steps_are_valid_and_use_real_parameters():
    steps = progression.load_steps()
    names = [s.name for s in steps]
    assert names[:2] == ["ann-plain", "cnn-plain"] and len(set(names)) == len(names)
    params = load_params().model_dump()
    fast = progression.load_fast()
    for name, overrides in [*((s.name, s.overrides) for s in steps), ("fast", fast)]:
        for key in overrides:
            section, leaf = key.split(".")
            assert leaf in params[section], f"{name}: {key} is not a parameter"
        resolve({**overrides, **(fast if name != "fast" else {})})  # valid values, alone and fast
    # The fast variant shrinks the budget (images seen per fold: fewer images, more epochs), the same
    # for every step, and leaves each step's model alone.
    def images_seen(split: dict, train: dict) -> float:
        return split["subsample"] * (split["folds"] - 1) / split["folds"] * train["epochs"]

    fast_params = resolve(fast)
    assert fast["split.folds"] == 2 and 0 < fast["split.subsample"] < 1
    assert images_seen(fast_params.split.model_dump(), fast_params.train.model_dump()) < images_seen(
        params["split"], params["train"]) / 20
    by_name = {s.name: s for s in steps}
    assert by_name["cnn-plain"].overrides == {"train.models": ["cnn"], "augment.enabled": False,
                                              "split.balancing": "none", "train.dropout": True}
    assert {s.model for s in steps} >= {"ann", "cnn", "cnn_blog", "resnet18", "vgg11_bn"}
    # Without regularisation: the study's augmentation step minus weight decay, L2 and dropout.
    no_reg = resolve(by_name["cnn-no-reg"].overrides).train
    assert by_name["cnn-no-reg"].builds_on == "cnn-study-aug"
    assert (no_reg.weight_decay, no_reg.l2, no_reg.dropout) == (0, 0, False)
    assert resolve(by_name["cnn-study-aug"].overrides).augment == resolve(by_name["cnn-no-reg"].overrides).augment
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
    ("stepz: []", "nothing else"),
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
                           "--set-param", "split.balancing=none", "--set-param", "train.dropout=true"]


@pytest.mark.parametrize("fast", ["fast: {}\n", "fast: {train.models: [cnn]}\n", ""])
def test_bad_fast_overrides_are_refused(tmp_path, fast):
    path = tmp_path / "progression.yaml"
    path.write_text(fast + "steps: [{name: a, label: A, set: {train.models: [ann]}}]")
    progression.load_steps(path)  # the steps themselves are fine
    with pytest.raises(progression.ProgressionError, match="'fast' must map"):
        progression.load_fast(path)


def _state(rev: str, time: str, params: dict, metrics: dict | None, name: str | None = None) -> dict:
    data = {"rev": rev, "timestamp": time, "params": {"params.yaml": {"data": params}},
            "metrics": {"metrics/evaluate.json": {"data": metrics}} if metrics else {}}
    return {"rev": rev, "name": name, "data": data}


def _lock(params: dict) -> dict:
    return {"stages": {"train": {"params": {"params.yaml": {"train": params["train"]}}}}}


def test_the_history_holds_every_run_of_the_default_recipe_in_time_order():
    old = {"train": {"epochs": 13, "lr": 0.1, "parallel": 1, "models": ["ann", "cnn"]}, "deploy": {"cron": "x"}}
    new = {"train": {**old["train"], "epochs": 16}, "deploy": {"cron": "x"}}
    quick = {"train": {**new["train"], "epochs": 4}, "deploy": {"cron": "x"}}

    def acc(cnn: float, ann: float) -> dict:
        return {"cnn": {"ensemble_acc": cnn}, "ann": {"ensemble_acc": ann}}

    def exp(state: dict) -> dict:
        return {"revs": [state], "name": state["name"]}

    first = _state("a" * 40, "2026-11-01T10:00:00", old, acc(0.83, 0.55), "main")
    first["experiments"] = [
        # a scheduled retraining that only ran with other scheduling keys: a run of the recipe
        exp(_state("b" * 40, "2026-11-03T03:00:00", {**old, "train": {**old["train"], "parallel": 2},
                                                     "deploy": {"cron": "y"}}, acc(0.80, 0.56), "weekly-1")),
        exp(_state("c" * 40, "2026-11-02T09:00:00", quick, acc(0.54, 0.41), "quick-1")),  # another recipe
    ]
    drifted = _state("d" * 40, "2026-11-04T10:00:00", new, acc(0.39, 0.39))  # its dvc.lock is the quick run's
    second = _state("e" * 40, "2026-11-05T10:00:00", new, acc(0.84, 0.56))
    workspace = _state("workspace", None, new, acc(0.1, 0.1))
    no_lock = _state("f" * 40, "2026-11-06T10:00:00", new, acc(0.2, 0.2))
    locks = {"a" * 40: _lock(old), "d" * 40: _lock(quick), "e" * 40: _lock(new)}
    history = progression.retraining_history([workspace, no_lock, second, drifted, first],
                                             "metrics/evaluate.json", locks.get)
    cnn = history[history["model"] == "cnn"]
    assert cnn["rev"].tolist() == ["aaaaaaa", "bbbbbbb", "eeeeeee"]
    assert cnn["kind"].tolist() == ["commit", "experiment", "commit"]
    assert cnn["name"].tolist() == ["main", "weekly-1", "eeeeeee"]
    assert cnn["ensemble_acc"].tolist() == [0.83, 0.80, 0.84]
    assert set(history["model"]) == {"ann", "cnn"} and len(history) == 6
    assert history["time"].is_monotonic_increasing


def test_a_commit_that_trained_nothing_new_is_not_a_second_run():
    params = {"train": {"epochs": 16, "models": ["cnn"]}}
    metrics = {"cnn": {"ensemble_acc": 0.85}}

    def lock(models_md5: str) -> dict:
        return {"stages": {"train": {"params": {"params.yaml": {"train": params["train"]}},
                                     "outs": [{"path": "models", "md5": models_md5}]}}}

    baseline = _state("a" * 40, "2026-12-01T23:11:06", params, metrics)
    docs_only = _state("b" * 40, "2026-12-01T23:40:00", params, metrics, "main")  # dvc.lock as it was
    retrained = _state("c" * 40, "2026-12-02T03:00:00", params, {"cnn": {"ensemble_acc": 0.84}})
    locks = {"a" * 40: lock("m1"), "b" * 40: lock("m1"), "c" * 40: lock("m2")}
    history = progression.retraining_history([retrained, docs_only, baseline], "metrics/evaluate.json", locks.get)
    assert history["rev"].tolist() == ["aaaaaaa", "ccccccc"]
    assert history["ensemble_acc"].tolist() == [0.85, 0.84]


def test_same_recipe_ignores_only_what_cannot_change_the_results():
    base = {"train": {"epochs": 16, "parallel": 1, "task_runner": "threads", "models": ["ann", "cnn"]},
            "report": {"mistakes": 12}, "split": {"folds": 5}}
    assert progression.same_recipe({**base, "train": {**base["train"], "parallel": 2, "task_runner": "processes",
                                                      "models": ["cnn"]}, "report": {"mistakes": 0}}, base)
    assert not progression.same_recipe({**base, "split": {"folds": 2}}, base)
    assert not progression.same_recipe({**base, "train": {**base["train"], "epochs": 4}}, base)
    assert not progression.same_recipe({**base, "augment": {"zoom": 0.2}}, base)


def test_without_dvc_on_path_queuing_is_one_line_saying_so(monkeypatch, tmp_path):
    from flows import progression as flow
    from tasks.errors import PipelineError

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no `dvc` (the environment not activated)
    with pytest.raises(PipelineError, match="`dvc` is not on PATH") as error:
        flow.queue("p", {})
    assert "\n" not in str(error.value)


def test_the_queue_starts_with_the_costliest_steps_and_keeps_file_order_among_equals():
    from flows import progression as flow

    steps = progression.load_steps()
    queued = [s.name for s in flow.costliest_first(steps)]
    assert sorted(queued) == sorted(s.name for s in steps)
    assert queued[:2] == ["resnet18", "vgg11-bn"]
    cnn_steps = [s.name for s in steps if s.model == "cnn"]
    assert [name for name in queued if name in cnn_steps] == cnn_steps
