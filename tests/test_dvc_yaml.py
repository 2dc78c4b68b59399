"""`dvc.yaml` against the code: a stage that runs a project file it does not list under `deps`
keeps stale results when that file changes, while `dvc status` says all is up to date."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from tasks import sources
from tasks.paths import Paths
from tests.conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# tune/dvc.yaml: a pipeline of its own (not on the default `dvc repro` path), checked the same way.
STAGES |= yaml.safe_load((ROOT / "tune/dvc.yaml").read_text())["stages"]


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in sources.PACKAGES


def entry_module(command: str) -> str:
    match = re.fullmatch(r"python -m ([\w.]+)", command.strip())
    assert match, f"stage command {command!r} is not 'python -m <module>'"
    return match[1]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_exactly_the_project_code_it_runs(stage):
    runs = set(sources.source_files(entry_module(STAGES[stage]["cmd"])))
    listed = {d for d in STAGES[stage]["deps"] if is_code(d)}
    assert not runs - listed, f"dvc.yaml: stage {stage!r} runs but does not list {sorted(runs - listed)}"
    assert not listed - runs, f"dvc.yaml: stage {stage!r} lists code it never imports {sorted(listed - runs)}"


def write(root, name, text):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_imports_are_followed_everywhere_and_transitively(tmp_path):
    write(tmp_path, "flows/__init__.py", "")
    write(tmp_path, "tasks/__init__.py", "")
    write(tmp_path, "flows/stage.py", """
        import os
        from tasks import a
        from tasks.b import thing
        def main():
            import tasks.lazy  # runs when main() does: a dependency all the same
        """)
    write(tmp_path, "tasks/a.py", "from .c import x\n")
    write(tmp_path, "tasks/b.py", "thing = 1\n")
    write(tmp_path, "tasks/c.py", "x = 1\n")
    write(tmp_path, "tasks/lazy.py", "")
    write(tmp_path, "tasks/unused.py", "")
    write(tmp_path, "tasks/b/__init__.py", "thing = 1\n")  # a package instead of tasks/b.py ...
    (tmp_path / "tasks/b.py").unlink()
    write(tmp_path, "tasks/b/templates/page.html.j2", "{{ thing }}")  # ... with a template it reads
    write(tmp_path, "tasks/b/sub/__init__.py", "")  # a subpackage nobody imports
    assert sources.source_files("flows.stage", tmp_path) == [
        "flows/__init__.py", "flows/stage.py", "tasks/__init__.py", "tasks/a.py", "tasks/b/__init__.py",
        "tasks/b/templates/page.html.j2", "tasks/c.py", "tasks/lazy.py"]
    before = sources.source_digest("flows.stage", tmp_path)
    write(tmp_path, "tasks/unused.py", "changed = True\n")
    assert sources.source_digest("flows.stage", tmp_path) == before
    write(tmp_path, "tasks/c.py", "x = 2\n")
    assert sources.source_digest("flows.stage", tmp_path) != before


def test_an_unknown_module_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="flows.nothing: not a module of the project"):
        sources.imported_modules("flows.nothing", tmp_path)


def _named(entries) -> list[str]:
    """Paths of a deps/outs/metrics list, whose items are strings or {path: options}."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def test_every_data_path_in_dvc_yaml_is_one_of_the_pipelines_paths():
    """tasks/paths.py is the one home of each path: dvc.yaml may only name those."""
    known = {str(getattr(Paths(), name)) for name, value in vars(Paths).items() if isinstance(value, property)}
    named = {p for stage in STAGES.values() for key in ("deps", "outs", "metrics")
             for p in _named(stage.get(key)) if not is_code(p)}
    for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]:
        for name, spec in plot.items():  # a path, or a title with the paths under `y`
            y = (spec or {}).get("y")
            named |= set(y) if isinstance(y, dict) else {name}
    assert named - known == set(), f"dvc.yaml names paths that tasks/paths.py does not: {sorted(named - known)}"
