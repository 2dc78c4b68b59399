import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tasks import evaluate, train
from tasks.paths import Paths
from tasks.tables import read_test
from tests.conftest import two_fold_data, with_changes
from tests.evaluation_data import (
    CLASSES,
    EVALUATE,
    run_evaluation,
    write_fold,
    write_pipeline_inputs,
)

# ----------------------------------------------------------------------------- metrics by hand


def test_score_on_four_hand_made_predictions():
    probs = np.array([[0.7, 0.2, 0.1],   # true 0, predicted 0
                      [0.1, 0.6, 0.3],   # true 1, predicted 1
                      [0.5, 0.4, 0.1],   # true 1, predicted 0
                      [0.2, 0.2, 0.6]])  # true 2, predicted 2
    labels = np.array([0, 1, 1, 2])
    s = evaluate.score(probs, labels, ["a", "b", "c"], bins=15)
    assert s["accuracy"] == 0.75
    assert s["loss"] == pytest.approx(-(math.log(0.7) + math.log(0.6) + math.log(0.4)
                                        + math.log(0.6)) / 4)
    assert s["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    # class a: predicted twice, right once; class b: 2 true, found once, never wrongly predicted
    assert s["report"]["a"]["precision"] == 0.5 and s["report"]["a"]["recall"] == 1.0
    assert s["report"]["a"]["f1-score"] == pytest.approx(2 / 3)
    assert s["report"]["b"]["precision"] == 1.0 and s["report"]["b"]["recall"] == 0.5
    assert s["report"]["c"]["f1-score"] == 1.0
    assert s["report"]["macro avg"]["f1-score"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_a_class_never_predicted_still_has_a_row():
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]])
    s = evaluate.score(probs, np.array([0, 2]), ["a", "b", "c"], bins=15)
    assert s["report"]["b"]["support"] == 0 and s["report"]["c"]["recall"] == 0.0
    assert s["confusion"] == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert math.isfinite(s["loss"])  # p(true) = 0 is clipped, not log(0)


def test_ece_on_a_hand_made_example():
    # Two images at confidence 0.95 (one right) and two at 0.7 (both right): bins 15 and 11.
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.7, 0.3], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    expected = 0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.7)
    assert evaluate.expected_calibration_error(probs, labels, 15) == pytest.approx(expected)
    # With one bin it is |accuracy - mean confidence| over everything.
    assert evaluate.expected_calibration_error(probs, labels, 1) == pytest.approx(abs(0.75 - 0.825))


def test_ece_is_zero_when_confidence_matches_accuracy_and_handles_certainty():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])  # confidence exactly 1 falls in the last bin
    assert evaluate.expected_calibration_error(probs, np.array([0, 1]), 15) == 0.0
    probs = np.array([[0.5, 0.5]] * 4)
    assert evaluate.expected_calibration_error(probs, np.array([0, 0, 1, 1]), 15) == 0.0


# ----------------------------------------------------------------------------- statistics


def test_paired_t_test_matches_scipy_and_the_formula():
    a, b = [0.80, 0.90, 0.85], [0.70, 0.75, 0.80]
    out = evaluate.paired_t_test(a, b)
    # differences 0.10, 0.15, 0.05: mean 0.1, sd 0.05, t = 0.1 / (0.05 / sqrt 3)
    assert out["mean_diff"] == pytest.approx(0.1)
    assert out["t_statistic"] == pytest.approx(0.1 / (0.05 / math.sqrt(3)))
    assert out["t_pvalue"] == pytest.approx(2 * stats.t.sf(0.1 / (0.05 / math.sqrt(3)), df=2))
    assert out["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["folds"] == 3 and out["note"] is None
    # 95 % interval: mean ± t(0.975, df 2) x sd / sqrt 3, t(0.975, 2) = 4.3027
    half = 4.302653 * 0.05 / math.sqrt(3)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-6)


@pytest.mark.parametrize(("a", "b", "words"), [
    ([0.8], [0.7], "at least 2 folds"),
    ([0.8, 0.9], [0.7, 0.8], "zero variance"),
    ([0.8, 0.8], [0.8, 0.8], "zero variance"),
])
def test_paired_t_test_guards_never_crash_or_warn(a, b, words):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = evaluate.paired_t_test(a, b)
    assert out["t_statistic"] is None and out["t_pvalue"] is None and words in out["note"]
    assert out["ci_low"] is None and out["ci_high"] is None
    assert out["mean_diff"] == pytest.approx(np.mean(a) - np.mean(b))


def test_mcnemar_exact_binomial_for_few_discordant_pairs():
    a = np.array([True] * 10 + [True] + [False] * 6)
    b = np.array([True] * 10 + [False] + [True] * 6)
    out = evaluate.mcnemar_test(a, b)
    assert (out["only_a"], out["only_b"]) == (1, 6)
    # two-sided: 2 * P(X <= 1), X ~ Binomial(7, 1/2) = 2 * (1 + 7) / 128
    assert out["pvalue"] == pytest.approx(0.125)
    assert out["method"].startswith("exact binomial") and out["statistic"] is None


def test_mcnemar_chi_square_with_continuity_correction_for_many():
    a = np.array([True] * 30 + [False] * 10 + [True] * 50)
    b = np.array([False] * 30 + [True] * 10 + [True] * 50)
    out = evaluate.mcnemar_test(a, b)
    assert out["statistic"] == pytest.approx((abs(30 - 10) - 1) ** 2 / 40)
    # chi-square with 1 df: P(X > s) = erfc(sqrt(s / 2))
    assert out["pvalue"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert out["method"] == "chi-square with continuity correction"


def test_paired_accuracy_gap_and_its_interval_by_hand():
    # 100 images: 30 only a right, 10 only b right, 50 both, 10 neither -> gap 0.2,
    # se = sqrt(30 + 10 - 20^2 / 100) / 100 = 0.06, 95 %: 0.2 ± 1.95996 x 0.06
    a = np.array([True] * 30 + [False] * 10 + [True] * 50 + [False] * 10)
    b = np.array([False] * 30 + [True] * 10 + [True] * 50 + [False] * 10)
    out = evaluate.paired_accuracy_gap(a, b)
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((0.2 - 0.1175978, 0.2 + 0.1175978), abs=1e-6)
    same = evaluate.paired_accuracy_gap(a, a)
    assert same == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_mcnemar_without_discordant_pairs():
    same = np.array([True, False, True])
    out = evaluate.mcnemar_test(same, same)
    assert out["pvalue"] == 1.0 and out["only_a"] == out["only_b"] == 0


def test_baseline_is_the_ann_when_present():
    assert evaluate.baseline_of(["cnn", "ann", "resnet18"]) == "ann"
    assert evaluate.baseline_of(["cnn", "resnet18"]) == "cnn"


# ----------------------------------------------------------------------------- models and files


def test_predict_scores_a_trained_fold_as_the_training_loop_did(tmp_path, params):
    """Evaluation must feed a network exactly what training fed it: on the fold's own validation
    images, `predict` reproduces the loss and accuracy the training loop recorded."""
    paths, pixels, labels = two_fold_data(tmp_path, params, CLASSES, 20, size=16)
    p = with_changes(params, train={"epochs": 1, "batch_size": 16, "device": "cpu",
                                    "input_scaling": "standardize"})
    metrics = train.train_fold("cnn_blog", 0, 0, p.train, p.augment, paths)
    model, config = evaluate.load_model(paths.fold_dir("cnn_blog", 0) / "weights.pt")
    assert config["std"] != [1.0, 1.0, 1.0]  # standardised: the scaling matters
    folds = pd.read_parquet(paths.folds)
    val = folds.loc[folds["fold"] == 0, "id"].to_numpy()
    no_tta = EVALUATE.model_copy(update={"tta_flip": False, "batch_size": 7})
    probs = evaluate.predict(model, config, pixels[val], no_tta, torch.device("cpu"))
    loss = -np.log(probs[np.arange(len(val)), labels[val]]).mean()
    assert loss == pytest.approx(metrics["val_loss"], rel=1e-4)
    assert (probs.argmax(1) == labels[val]).mean() == metrics["val_acc"]


def test_predict_with_flip_tta_averages_the_mirrored_images(tmp_path):
    model, config = evaluate.load_model(write_fold(tmp_path, "cnn_blog", 0) / "weights.pt")
    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    cpu = torch.device("cpu")
    no_tta = EVALUATE.model_copy(update={"tta_flip": False, "batch_size": 2})
    plain = evaluate.predict(model, config, pixels, no_tta, cpu)
    mirrored = evaluate.predict(model, config, np.ascontiguousarray(pixels[:, :, ::-1]), no_tta, cpu)
    assert evaluate.predict(model, config, pixels, EVALUATE, cpu) == pytest.approx(
        (plain + mirrored) / 2, abs=1e-6)
    single, counted = evaluate.predict_views(model, config, pixels, EVALUATE, cpu)
    assert single == pytest.approx(plain, abs=1e-6) and counted == pytest.approx((plain + mirrored) / 2, abs=1e-6)
    single, counted = evaluate.predict_views(model, config, pixels, no_tta, cpu)
    assert single is counted


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluated")
    write_pipeline_inputs(root)
    return root, run_evaluation(root)


def test_metrics_file_has_stable_numeric_keys(evaluated):
    root, summary = evaluated
    assert json.loads((root / "metrics/evaluate.json").read_text()) == summary
    assert set(summary) == {"ann", "cnn", "comparison"}
    assert set(summary["cnn"]) == {"test_acc_mean", "test_acc_std", "test_acc_no_tta_mean",
                                   "test_loss_mean", "ensemble_acc", "ensemble_acc_no_tta",
                                   "ensemble_loss", "ensemble_macro_f1", "ece", "folds"}
    assert set(summary["cnn"]["folds"]) == {"fold_0", "fold_1"}
    assert set(summary["cnn"]["folds"]["fold_0"]) == {"test_acc", "test_acc_no_tta", "test_loss", "ece"}
    assert set(summary["comparison"]) == {"cnn_vs_ann"}
    assert set(summary["comparison"]["cnn_vs_ann"]) == {
        "mean_diff", "mean_diff_ci_low", "mean_diff_ci_high", "t_statistic", "t_pvalue",
        "ensemble_diff", "ensemble_diff_ci_low", "ensemble_diff_ci_high", "mcnemar_statistic",
        "mcnemar_pvalue", "cnn_only_right", "ann_only_right"}
    text = (root / "metrics/evaluate.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON for `dvc metrics`


def test_summary_agrees_with_the_details_and_predictions(evaluated):
    root, summary = evaluated
    details = json.loads((root / "eval/details.json").read_text())
    folds = [details["models"]["cnn"]["folds"][f]["accuracy"] for f in ("fold_0", "fold_1")]
    assert summary["cnn"]["test_acc_mean"] == pytest.approx(np.mean(folds), abs=1e-4)
    assert summary["cnn"]["test_acc_std"] == pytest.approx(np.std(folds, ddof=1), abs=1e-4)
    predictions = pd.read_parquet(root / "eval/predictions/cnn.parquet")
    assert list(predictions.columns) == ["id", "true", "predicted", "confidence", "probabilities"]
    assert len(predictions) == 40 and list(predictions["id"]) == list(range(40))
    probs = np.stack(predictions["probabilities"])
    assert probs.sum(1) == pytest.approx(np.ones(40), abs=1e-5)
    assert (predictions["true"] == predictions["predicted"]).mean() == pytest.approx(
        summary["cnn"]["ensemble_acc"], abs=1e-4)
    assert np.asarray(details["models"]["cnn"]["ensemble"]["confusion"]).sum() == 40
    pair = summary["comparison"]["cnn_vs_ann"]
    assert pair["mean_diff_ci_low"] < pair["mean_diff"] < pair["mean_diff_ci_high"]
    assert pair["ensemble_diff"] == pytest.approx(summary["cnn"]["ensemble_acc"] - summary["ann"]["ensemble_acc"],
                                                  abs=1e-4)
    assert pair["ensemble_diff_ci_low"] <= pair["ensemble_diff"] <= pair["ensemble_diff_ci_high"]


def test_accuracy_without_tta_is_the_image_alone(evaluated):
    """The study had no TTA: its figures compare with `test_acc_no_tta`, scored on one view."""
    root, summary = evaluated
    paths = Paths(root)
    test = read_test(paths.prepared_test)
    no_tta = EVALUATE.model_copy(update={"tta_flip": False})
    folds = [evaluate.predict(*evaluate.load_model(d / "weights.pt"), test.pixels, no_tta,
                              torch.device("cpu")) for d in paths.trained_folds("cnn")]
    assert [summary["cnn"]["folds"][f"fold_{k}"]["test_acc_no_tta"] for k in (0, 1)] == pytest.approx(
        [(f.argmax(1) == test.labels).mean() for f in folds], abs=1e-4)
    assert summary["cnn"]["ensemble_acc_no_tta"] == pytest.approx(
        (np.mean(folds, axis=0).argmax(1) == test.labels).mean(), abs=1e-4)


def test_ensemble_is_the_mean_of_the_folds_softmax(evaluated):
    root, _ = evaluated
    paths = Paths(root)
    test = read_test(paths.prepared_test)
    folds = [evaluate.predict(*evaluate.load_model(d / "weights.pt"), test.pixels, EVALUATE,
                              torch.device("cpu")) for d in paths.trained_folds("ann")]
    stored = np.stack(pd.read_parquet(paths.predictions / "ann.parquet")["probabilities"])
    assert stored == pytest.approx(np.mean(folds, axis=0), abs=1e-6)


def test_dvc_plot_tables(evaluated):
    root, _ = evaluated
    confusion = pd.read_csv(root / "eval/plots/confusion/ann.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 40
    assert set(confusion["actual"]) == set(CLASSES)
    f1 = pd.read_csv(root / "eval/plots/class_f1/ann.csv")
    assert list(f1["class"]) == CLASSES and f1["f1"].between(0, 1).all()


def test_a_missing_model_names_the_folder(tmp_path):
    write_pipeline_inputs(tmp_path, models=("ann",), folds=1)
    test = read_test(Paths(tmp_path).prepared_test)
    with pytest.raises(FileNotFoundError, match=r"models/cnn: no trained fold"):
        evaluate.evaluate_model("cnn", Paths(tmp_path), test, EVALUATE)


def test_a_model_trained_on_other_classes_is_refused(tmp_path):
    write_pipeline_inputs(tmp_path, models=(), folds=0)
    write_fold(tmp_path / "models", "cnn_blog", 0, classes=["a", "b", "c", "d"])
    test = read_test(Paths(tmp_path).prepared_test)
    with pytest.raises(ValueError, match="re-run the train stage"):
        evaluate.evaluate_model("cnn_blog", Paths(tmp_path), test, EVALUATE)


def test_one_fold_gives_no_t_test_but_still_a_mcnemar(tmp_path):
    write_pipeline_inputs(tmp_path, folds=1)
    summary = run_evaluation(tmp_path)
    pair = summary["comparison"]["cnn_vs_ann"]
    assert pair["t_pvalue"] is None and pair["t_statistic"] is None
    assert 0 <= pair["mcnemar_pvalue"] <= 1 and summary["cnn"]["test_acc_std"] == 0.0
    details = json.loads((tmp_path / "eval/details.json").read_text())
    assert "at least 2 folds" in details["comparisons"]["cnn_vs_ann"]["t_test"]["note"]
