import copy
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tasks import report
from tasks.paths import Paths
from tests.conftest import ROOT
from tests.evaluation_data import REPORT, evaluated_report_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The report's inputs, read from a tiny evaluated pipeline (outside any git repository)."""
    return evaluated_report_inputs(tmp_path_factory.mktemp("reported"))


@pytest.fixture(scope="module")
def built(inputs):
    return report.build_report(inputs, REPORT, seed=42)


def test_html_has_every_section_and_only_embedded_images(built):
    page = built.html
    for key, title in report.SECTIONS.items():
        assert f'<section id="{key}"><h2>{title}</h2>' in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    # per model: learning curves, confusion matrix, sample grid, mistakes grid
    assert len(images) == 8 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page
    assert 'id="headline"' in page and page.count("<h3>ANN</h3>") == 1


def test_markdown_has_the_summary_sections(built):
    for title in ("Headline comparison", "Statistical tests",
                  "Confusion matrices and classification reports",
                  "Change against the previous commit"):
        assert f"\n## {title}\n" in built.markdown
    assert "### ANN" in built.markdown and "### CNN" in built.markdown
    assert re.search(r"\| model\s+\| test accuracy, one view \(mean ± std\)\s+\| ensemble, one view\s+\|",
                     built.markdown)


def test_headline_numbers_come_from_the_metrics_files(inputs, built):
    rows = {r["model"]: r for r in built.headline}
    assert set(rows) == {"ANN", "CNN"}
    cnn = inputs.metrics["cnn"]
    assert rows["CNN"]["ensemble, flip TTA"] == f"{100 * cnn['ensemble_acc']:.2f} %"
    assert rows["CNN"]["ensemble, one view"] == f"{100 * cnn['ensemble_acc_no_tta']:.2f} %"
    assert rows["CNN"]["test accuracy, flip TTA (mean ± std)"] == (
        f"{100 * cnn['test_acc_mean']:.2f} ± {100 * cnn['test_acc_std']:.2f} %")
    single = [cnn["folds"][f]["test_acc_no_tta"] for f in ("fold_0", "fold_1")]
    assert rows["CNN"]["test accuracy, one view (mean ± std)"] == (
        f"{100 * np.mean(single):.2f} ± {100 * np.std(single, ddof=1):.2f} %")
    assert rows["CNN"]["parameters"] == f"{inputs.training['cnn'][0]['parameters']:,}"
    assert rows["ANN"]["training time"] == "9.0 s"  # two folds of 4.5 s
    assert rows["ANN"]["epochs run per fold"] == "3, 3" and rows["ANN"]["early stops"] == "1 of 2"
    assert rows["CNN"]["ensemble, one view"] in built.html and rows["CNN"]["ensemble, one view"] in (
        built.markdown)


def test_the_report_opens_with_the_answer(inputs, built):
    """Both models' accuracies, then the gap with its interval and both tests' p-values."""
    first = built.markdown.split("## Headline comparison", 1)[1].split("| model", 1)[0]
    cnn, pair = inputs.metrics["cnn"], inputs.metrics["comparison"]["cnn_vs_ann"]
    assert f"**CNN**: {100 * cnn['test_acc_no_tta_mean']:.2f} % mean test accuracy of its 2 fold models" in first
    assert f"{100 * cnn['ensemble_acc_no_tta']:.2f} % for their ensemble" in first
    assert f"with flip TTA {100 * cnn['test_acc_mean']:.2f} % per fold" in first
    assert "trained in 9.0 s on CPU" in first and "**ANN**" in first
    gap = first.split("**The gap, CNN − ANN** (with flip TTA): ", 1)[1]
    assert gap.startswith(f"{100 * pair['mean_diff']:+.2f} points per fold (95 % CI "
                          f"{100 * pair['mean_diff_ci_low']:+.2f} to {100 * pair['mean_diff_ci_high']:+.2f}, "
                          "paired t-test p")
    low, high = 100 * pair["ensemble_diff_ci_low"], 100 * pair["ensemble_diff_ci_high"]
    assert (f"{100 * pair['ensemble_diff']:+.2f} points between the ensembles (95 % CI "
            f"{low:+.2f} to {high:+.2f}, McNemar p") in gap


def test_every_figure_caption_carries_the_jpeg_note(built):
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", built.html)
    assert len(captions) == 8
    assert all("shared JPEG copy of CIFAR-10" in c for c in captions)


def test_the_jpeg_note_only_for_the_jpeg_archive():
    assert "JPEG" in report.jpeg_note({"source": "../shared/datasets/cifar-10-jpeg.tar.gz"})
    official = {"source": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "file": "cifar-10-python.tar.gz", "layout": "cifar-python"}
    assert report.jpeg_note(official) == ""


def test_sample_images_are_seeded(built):
    ids = np.arange(1000)
    assert list(report.sample_ids(ids, 24, 42)) == list(report.sample_ids(ids, 24, 42))
    assert list(report.sample_ids(ids, 24, 42)) != list(report.sample_ids(ids, 24, 7))
    assert len(set(report.sample_ids(ids, 24, 42))) == 24 and len(report.sample_ids(ids[:5], 24, 0)) == 5
    assert "drawn at random (seed 42)" in built.html


def test_the_tests_in_plain_words(inputs):
    fake = copy.copy(inputs)
    fake.details = copy.deepcopy(inputs.details)
    pair = fake.details["comparisons"]["cnn_vs_ann"]
    pair["t_test"].update(folds=5, mean_diff=0.1234, t_statistic=8.5, t_pvalue=0.00105, ci_low=0.1, ci_high=0.15)
    pair["mcnemar"].update(only_a=1500, only_b=300, pvalue=1e-200,
                           method="chi-square with continuity correction")
    words = " ".join(report.statistics_in_words(fake))
    assert "Over 5 folds, the CNN beats the ANN by 12.34 points of test accuracy" in words
    assert "95 % confidence interval +10.00 to +15.00 points; paired t-test" in words
    assert "t = 8.50, p = 0.001, significant at the 5 % level" in words
    assert "only the CNN is right on 1,500, only the ANN on 300" in words
    assert "p < 0.0001" in words and "Expected calibration error" in words
    pair["t_test"].update(mean_diff=-0.02, t_statistic=None, t_pvalue=None, note="needs 2 folds")
    words = " ".join(report.statistics_in_words(fake))
    assert "the CNN trails the ANN by 2.00 points" in words
    pair["t_test"].update(mean_diff=0.00001)
    tie = report.statistics_in_words(fake)[0]
    assert "the CNN and the ANN tie in test accuracy on average" in tie
    assert "a paired t-test is not possible: needs 2 folds" in words


def test_metrics_diff_outside_a_dvc_repository_is_none(tmp_path):
    metrics = Paths(tmp_path).eval_metrics
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"cnn": {"test_acc_mean": 0.5}}))
    assert report.metrics_diff(Paths(tmp_path)) is None


def test_change_section_without_and_with_previous_metrics(inputs, built):
    assert "No previous metrics" in built.markdown
    before = copy.copy(inputs)
    now = inputs.metrics["cnn"]["ensemble_acc"]
    before.changes = pd.DataFrame([{"metric": "cnn.ensemble_acc", "HEAD": round(now - 0.1, 4), "workspace": now,
                                    "change": 0.1}])
    md = report.build_report(before, REPORT, seed=42).markdown
    assert re.search(r"\|\s*metric\s*\|\s*HEAD\s*\|\s*workspace\s*\|\s*change\s*\|", md)
    assert re.search(r"\|\s*cnn\.ensemble_acc\s*\|\s*[0-9.]+\s*\|\s*[0-9.]+\s*\|\s*0\.1\s*\|", md)
    unchanged = copy.copy(inputs)
    unchanged.changes = before.changes.iloc[:0]
    assert "No metric changed against metrics/evaluate.json at HEAD" in report.build_report(
        unchanged, REPORT, seed=42).markdown


def test_write_report_writes_both_files(built, tmp_path):
    html_path = report.write_report(built, Paths(tmp_path))
    assert html_path.read_text() == built.html
    assert (tmp_path / "reports" / "report.md").read_text() == built.markdown


def test_the_report_stage_does_not_import_torch_or_the_training_code():
    """It reads files; a change to the training loop must not make it re-run (or wait for torch)."""
    code = ("import sys\nimport flows.report\n"
            "print(sorted(m for m in ('torch', 'tasks.train', 'tasks.models') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_paragraphs_keep_their_emphasis_and_code_in_html(built):
    assert "<p><strong>CNN</strong>: " in built.html and "**CNN**" not in built.html
    assert "<code>python -m flows.report</code>" in built.html
    assert str(report.render.inline_markdown("a < b **c**")) == "a &lt; b <strong>c</strong>"


def test_the_study_s_published_figures_beside_the_measured_ones(inputs, built):
    published = report.load_published()
    assert published["per_fold"]["test_accuracy"] == [0.8325, 0.8427, 0.8355, 0.8422, 0.8460]
    assert published["per_fold"]["mean_test_accuracy"] == pytest.approx(
        np.mean(published["per_fold"]["test_accuracy"]), abs=5e-5)
    table = report.study_comparison(inputs, published).set_index("figure")
    cnn = inputs.metrics["cnn"]
    mean = table.loc["CNN, mean of the folds: test accuracy"]
    assert (mean["published, not measured"], mean["measured here"]) == (
        "83.98 %", f"{100 * cnn['test_acc_no_tta_mean']:.2f} %")
    assert mean["difference"] == f"{100 * (cnn['test_acc_no_tta_mean'] - 0.8398):+.2f} points"
    fold = table.loc["CNN fold 1: test accuracy"]
    assert fold["measured here"] == f"{100 * cnn['folds']['fold_1']['test_acc_no_tta']:.2f} %"
    assert table.loc["CNN fold 4: test accuracy", "measured here"] == "n/a"  # this run has 2 folds
    assert table.loc["early CNN, no sampling or augmentation", "published, not measured"] == "54.00 %"
    assert table.loc["CNN: recall of cat", "difference"] == "—"  # no class "cat" in the tiny data
    assert "published, not measured" in built.markdown and 'id="study"' in built.html
    assert "faulty metric" in built.markdown


def test_published_recall_ranges_against_the_measured_recall(inputs):
    fake = copy.copy(inputs)
    fake.details = copy.deepcopy(inputs.details)
    ensemble = fake.details["models"]["cnn"]["ensemble"]["report"]
    ensemble["cat"], ensemble["bird"] = {"recall": 0.6}, {"recall": 0.70}
    table = report.study_comparison(fake, report.load_published()).set_index("figure")
    assert table.loc["CNN: recall of cat", "difference"] == "-1.00 points below the range"
    assert table.loc["CNN: recall of bird", "difference"] == "within the range"
    fake.models = ["ann"]
    assert report.study_comparison(fake, report.load_published()) is None
