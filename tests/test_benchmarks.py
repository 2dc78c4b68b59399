"""The benchmark suite runs and writes what it measured; it never judges speed."""

import json
import os
import sys

import pandas as pd
import yaml

from benchmarks import machine, orchestration_overhead, stages, suite
from tasks.paths import Paths
from tests.conftest import ROOT, image_folder_files, write_tar


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
    stage_names = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    stages = [r for r in rows if r["section"] == "stages"]
    assert [r["what"] for r in stages] == [f"{name}: {what}" for name in stage_names for what in
                                           ("start-up and teardown (wall - flow run)", "peak memory")]
    assert all(r["unit"] == ("MiB" if "memory" in r["what"] else "s") and r["reference_value"] > 0 for r in stages)
    orchestration = [r for r in rows if r["section"] == "orchestration"]
    assert [(r["what"], r["unit"]) for r in orchestration] == [
        (f"tiny project through {mode}: overhead", "s") for mode in orchestration_overhead.MODES]
    assert all(r["reference_value"] > 0 for r in orchestration)  # each run's stages did compute
    table = suite.markdown(rows, machine.describe())
    assert machine.cpu_model() in table and "| training | cnn_blog, batch 32: real loop |" in table
    assert "| stages | train: peak memory |" in table


def test_missing_inputs_are_skipped_not_failed(tmp_path):
    rows = suite.run(["prepare", "time-to-accuracy"], quick=True, paths=Paths(tmp_path))
    assert [r["what"] for r in rows] == ["skipped", "skipped"]
    assert "dvc repro download" in rows[0]["skipped"] and "| prepare | skipped:" in suite.markdown(
        rows, machine.describe())


def test_time_to_accuracy_falls_back_on_the_committed_logs(tmp_path):
    """A clone has no models/ (DVC's cache) but git holds the DVCLive logs and metrics/train.json."""
    log = tmp_path / "logs/train/cnn/fold_0/plots/metrics/val/acc.tsv"
    log.parent.mkdir(parents=True)
    log.write_text("step\tacc\n0\t0.5\n1\t0.81\n2\t0.85\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/train.json").write_text(json.dumps({"cnn": {"train_seconds": 300.0}}))
    [row] = suite.run(["time-to-accuracy"], quick=True, paths=Paths(tmp_path))
    assert row["what"] == "cnn fold_0: to 80% validation accuracy (epoch 2, from the committed logs)"
    assert (row["value"], row["reference_value"]) == (200 / 60, 5.0)  # 100 s an epoch


def test_a_stage_peak_memory_is_its_own_not_the_benchmark_process_size(tmp_path):
    """Started straight from a large process, a child reports at least that process's resident set."""
    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # resident, not only reserved
    allocate = "x = bytearray(200 * 2**20); x[::4096] = b'y' * len(x[::4096]); print('done')"
    _, peak, out = stages.measured([sys.executable, "-c", allocate], tmp_path, dict(os.environ))
    _, idle, _ = stages.measured([sys.executable, "-c", "pass"], tmp_path, dict(os.environ))
    assert out.strip() == "done"
    assert 200 <= peak < 300 and idle < 100, (peak, idle)
