"""The benchmark suite runs and writes what it measured; it never judges speed."""

import json

import pandas as pd

from benchmarks import machine, suite
from tasks.paths import Paths
from tests.conftest import image_folder_files, write_tar


def test_quick_suite_measures_every_section_beside_its_reference(tmp_path):
    paths = Paths(tmp_path)
    paths.raw.mkdir(parents=True)
    archive = write_tar(paths.raw / "images.tar.gz", image_folder_files(per_class=(4, 2)))
    (paths.raw / "source.json").write_text(json.dumps({"file": archive.name, "layout": "image-folder",
                                                       "prefix": "images"}))
    fold = tmp_path / "models/cnn/fold_0"
    fold.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2, 3], "val/acc": [0.5, 0.81, 0.85], "seconds": [60.0, 60.0, 120.0]}).to_csv(
        fold / "history.csv", index=False)
    rows = suite.run(list(suite.SECTIONS), quick=True, paths=paths)
    by_section = {r["section"]: r for r in rows}
    assert set(by_section) == set(suite.SECTIONS)
    assert by_section["prepare"]["value"] > 0  # 18 images decoded one by one
    training, evaluation = by_section["training"], by_section["evaluation"]
    assert training["reference"] == "bare step" and training["ratio"] == training["value"] / training["reference_value"]
    assert evaluation["what"] == "cnn_blog: test images with flip TTA" and evaluation["reference"] == "without TTA"
    reached = by_section["time-to-accuracy"]
    assert (reached["value"], reached["reference_value"]) == (2.0, 4.0) and "epoch 2" in reached["what"]
    table = suite.markdown(rows, machine.describe())
    assert machine.cpu_model() in table and "| training | cnn_blog, batch 32: real loop |" in table


def test_missing_inputs_are_skipped_not_failed(tmp_path):
    rows = suite.run(["prepare", "time-to-accuracy"], quick=True, paths=Paths(tmp_path))
    assert [r["what"] for r in rows] == ["skipped", "skipped"]
    assert "dvc repro download" in rows[0]["skipped"] and "| prepare | skipped:" in suite.markdown(
        rows, machine.describe())
