from pathlib import Path

from tasks.paths import Paths, project_dir


def test_a_temporary_experiment_workspace_belongs_to_its_project(tmp_path):
    project = tmp_path / "project"
    workspace = project / ".dvc" / "tmp" / "exps" / "tmpk3x9"  # where `dvc exp run --temp` runs
    workspace.mkdir(parents=True)
    assert project_dir(workspace) == project.resolve()
    assert project_dir(project) == project.resolve()
    # What must outlive the workspace lives in the project: a retried run resumes its folds.
    assert Paths(workspace).checkpoints == project.resolve() / "checkpoints"
    assert Paths(workspace).models == workspace / "models"  # the outputs stay the workspace's own


def test_the_default_layout_is_relative_to_the_current_directory():
    assert Paths().prepared_train == Path("data/prepared/train.parquet")
    assert Paths().fold_dir("cnn", 3) == Path("models/cnn/fold_3")
