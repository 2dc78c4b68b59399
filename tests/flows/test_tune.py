"""The tune stage on tiny data: trials through the train loop, pruning, resuming, the best preset."""

import optuna
import pandas as pd
import pytest

from flows.tune import table, tune_flow
from tasks import tune, tune_results
from tasks.config import SearchDimension
from tasks.presets import load_preset
from tasks.report import tune as tune_section
from tasks.report.figures import Picture
from tests.conftest import ROOT, two_fold_data, with_changes

CLASSES = ["red", "green", "blue", "grey"]


@pytest.fixture
def tiny_study(tmp_path, params):
    paths, _, _ = two_fold_data(tmp_path, params, CLASSES, 40, size=16)
    p = with_changes(params,
                     train={"epochs": 3, "batch_size": 32, "device": "cpu", "lr": 0.05, "schedule": "none"},
                     tune={"model": "cnn_blog", "fold": 0, "trials": 3, "epochs": 3, "subsample": 0.5,
                           "pruner": "median", "warmup_epochs": 0, "parallel": 1, "timeout_minutes": 0,
                           "space": {"train.lr": SearchDimension(choices=(0.05, 0.08, 1e-7))}})
    return p, paths


def test_study_prunes_a_bad_trial_resumes_and_writes_an_applicable_preset(prefect_server, tiny_study):
    params, paths = tiny_study
    study = tune.open_study(params, paths)  # trial 0: params' own recipe (lr 0.05)
    study.enqueue_trial({"train.lr": 0.08})
    study.enqueue_trial({"train.lr": 1e-7})  # learns nothing: below the median at epoch 1
    summary = tune_flow(params, paths)

    trials = pd.read_parquet(paths.tune_trials)
    assert trials["params_train.lr"].tolist() == [0.05, 0.08, 1e-7]
    assert trials["state"].tolist() == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert summary["baseline_val_acc"] == round(trials["value"].iloc[0], 4)
    assert summary["best_val_acc"] == round(trials["value"].max(), 4) and summary["pruned"] == 1

    # More trials for the same study: it continues where it stopped, its first trials untouched.
    more = with_changes(params, tune={"trials": 4})
    assert tune.study_name(more, paths) == tune.study_name(params, paths)
    more_summary = tune_flow(more, paths)
    again = pd.read_parquet(paths.tune_trials)
    assert len(again) == 4
    pd.testing.assert_series_equal(again["value"].iloc[:2], trials["value"].iloc[:2])

    # A changed budget is another study, in the same storage.
    assert tune.study_name(with_changes(params, tune={"epochs": 2}), paths) != tune.study_name(params, paths)

    # The best recipe is a preset the apply command accepts (checked against params.yaml).
    overrides = load_preset(paths.tune_best, ROOT / "params.yaml")
    assert overrides == {"train.lr": summary["best_params"]["train.lr"]}
    assert paths.tune_history_plot.stat().st_size > 0

    # `python -m flows.tune table`: the study as the report reads it, from the storage.
    record = table(more, paths)
    assert tune_results.read_results(paths.tune_summary) == record
    assert [tr["state"] for tr in record["trials"][:3]] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert record["trials"][2]["epochs"] == 1 and record["trials"][2]["value"] is not None  # its last report
    assert record["summary"] == more_summary and record["baseline"] == {"train.lr": 0.05}
    assert record["importances"] == {"train.lr": 1.0}  # the one tuned key explains all
    assert [i for i in tune_section.items(paths.tune_summary) if isinstance(i, Picture)]


def test_a_trial_whose_loss_diverges_fails_and_the_study_goes_on(prefect_server, tiny_study):
    """A learning rate that turns the loss NaN is a bad recipe, not a broken study: such a trial
    once stopped its worker, and the flow failed."""
    params, paths = tiny_study
    params = with_changes(params, tune={"trials": 2, "space": {"train.lr": SearchDimension(choices=(0.05, 1e30))}})
    study = tune.open_study(params, paths)  # trial 0: params' own recipe (lr 0.05)
    study.enqueue_trial({"train.lr": 1e30})
    study.enqueue_trial({"train.lr": 0.05})
    summary = tune_flow(params, paths)
    trials = pd.read_parquet(paths.tune_trials)
    assert trials["state"].tolist() == ["COMPLETE", "FAIL", "COMPLETE"]
    assert (summary["trials"], summary["completed"], summary["failed"]) == (3, 2, 1)
    table(params, paths)
    assert "2 completed, 0 pruned, 1 failed" in tune_section.items(paths.tune_summary)[0]


def test_trials_that_all_score_the_same_get_no_importances_and_still_a_plot(tiny_study):
    """Trials whose recipes differ but whose values do not (none learned anything, say) give
    fANOVA no variance to explain: no importances, a plot that says why, no failure."""
    params, paths = tiny_study
    study = optuna.create_study(direction="maximize")
    for lr in (0.05, 0.08):
        study.add_trial(optuna.trial.create_trial(
            params={"train.lr": lr}, value=0.25,
            distributions={"train.lr": optuna.distributions.CategoricalDistribution((0.05, 0.08, 1e-7))}))
    assert tune._importances(study, seed=0) == {}
    paths.tune.mkdir(parents=True, exist_ok=True)
    tune._plots(study, paths, seed=0)
    assert paths.tune_importance_plot.stat().st_size > 0


def test_table_before_any_study_writes_a_record_without_trials(tiny_study):
    params, paths = tiny_study
    record = table(params, paths)
    assert record["study"] == tune.study_name(params, paths) and record["trials"] == []
    assert record["summary"] is None and not paths.tune_storage.exists()  # reading created nothing


def test_trial_recipe_is_validated_like_params_yaml(params):
    train_p, aug = tune.trial_recipe(params, {"train.lr": 0.02, "augment.rotation": 5.0})
    assert train_p.lr == 0.02 and aug.rotation == 5.0 and train_p.epochs == params.tune.epochs
    with pytest.raises(Exception, match="train.label_smoothing"):
        tune.trial_recipe(params, {"train.label_smoothing": 1.5})


def test_subsample_keeps_a_stratified_share_of_the_fold(tmp_path, params):
    paths, _, labels = two_fold_data(tmp_path, params, CLASSES, 40, size=8)
    sub = tune.subsample_paths(with_changes(params, tune={"fold": 1, "subsample": 0.5}), paths, tmp_path / "w")
    full = pd.read_parquet(paths.train_index)
    full = full[full["fold"] == 1]
    kept = pd.read_parquet(sub.train_index)
    assert set(kept["fold"]) == {1} and set(kept["id"]) <= set(full["id"])
    per_class = pd.Series(labels[kept["id"]]).value_counts()
    assert per_class.tolist() == [len(kept) // 4] * 4 and len(kept) == pytest.approx(len(full) / 2, abs=4)
    assert optuna  # the study's library is part of the locked environment


def test_two_workers_of_one_study_draw_different_trials(tiny_study):
    """Each worker seeds its sampler apart: with one seed both drew the same first trial."""
    params, paths = tiny_study
    wide = with_changes(params, tune={"space": {"train.lr": SearchDimension(low=0.001, high=0.1, log=True)}})
    tune.open_study(wide, paths).tell(tune.open_study(wide, paths).ask(), 0.5)  # the baseline, told
    first = [tune.open_study(wide, paths, worker).ask() for worker in (0, 1)]
    values = [tune.suggest(trial, wide)["train.lr"] for trial in first]
    assert values[0] != values[1]


def test_a_recipe_outside_the_space_stops_the_study_naming_the_key(tiny_study):
    params, paths = tiny_study
    outside = with_changes(params, tune={"space": {"train.batch_size": SearchDimension(choices=(64, 256))}})
    with pytest.raises(tune.TuneError, match=r"tune.space.train.batch_size: train.batch_size = 32 lies outside"):
        tune.open_study(outside, paths)
