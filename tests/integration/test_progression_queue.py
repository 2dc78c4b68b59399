"""The progression as queued DVC experiments, end to end: two tiny steps queued with
`dvc exp run --queue`, run by DVC's queue in temporary copies of a throw-away project, the table
collected from the experiments they recorded, and the report's Progression section made from it."""

from __future__ import annotations

import yaml

from tests.integration.project import make_project, run

STEPS = {"steps": [
    {"name": "ann-plain", "label": "ANN, no augmentation", "set": {"train.models": ["ann"], "augment.enabled": False}},
    {"name": "cnn-plain", "label": "CNN, no augmentation, no balancing", "builds_on": "ann-plain",
     "set": {"train.models": ["cnn"], "augment.enabled": False, "split.balancing": "none"}},
]}


def test_the_queue_runs_every_step_and_the_table_lists_them(prefect_server, tmp_path):
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project")
    run(project, "dvc", "repro")  # the baseline: its data stages are what the experiments restore
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "baseline")
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump(STEPS, sort_keys=False))

    out = run(project, "python", "-m", "flows.progression", "run", "--steps", str(steps), "--prefix", "t")

    # Each step ran in its own temporary copy, its data restored from DVC's cache, not rebuilt.
    assert out.count("Running stage 'train'") == 2
    assert "Running stage 'prepare'" not in out and "Running stage 'download'" not in out
    names = run(project, "dvc", "exp", "ls", "--name-only")
    assert "t-ann-plain" in names and "t-cnn-plain" in names
    table = out[out.index("| step"):]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:] if line.startswith("|")}
    assert set(rows) == {"ANN, no augmentation", "CNN, no augmentation, no balancing"}
    assert "not run" not in table and " %" in rows["ANN, no augmentation"]
    assert "points vs ann-plain" in rows["CNN, no augmentation, no balancing"]
    # The workspace is the committed baseline still, but for the collected table.
    assert run(project, "git", "status", "--porcelain").strip() == "M progression/results.json"
    # The report shows it: `dvc repro` re-renders the report alone, its Progression section lists both.
    out = run(project, "dvc", "repro")
    assert "Running stage 'report'" in out and "Running stage 'train'" not in out
    section = (project / "reports/report.md").read_text().split("## Progression", 1)[1].split("\n## ", 1)[0]
    assert "2 of 2 steps ran" in section and "`t-<step>`" in section
    assert "| ANN, no augmentation" in section and "| CNN, no augmentation, no balancing" in section

    # Run again at the same commit with a changed step: different results under the same name,
    # which DVC refuses to save over the earlier experiment; `run` replaces it first.
    before = run(project, "dvc", "exp", "ls", "--sha-only").split()
    STEPS["steps"][0]["set"]["train.epochs"] = 2
    steps.write_text(yaml.safe_dump(STEPS, sort_keys=False))
    out = run(project, "python", "-m", "flows.progression", "run", "--steps", str(steps), "--prefix", "t")
    assert "replacing 2 earlier experiments of this commit: t-ann-plain, t-cnn-plain" in out
    after = run(project, "dvc", "exp", "ls", "--sha-only").split()
    assert len(before) == len(after) == 2 and not set(after) & set(before)
