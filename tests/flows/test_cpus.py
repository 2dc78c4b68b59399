import os

import pytest

from flows.common import CPUS_ENV, available_cpus
from flows.progression import job_env
from tasks.errors import PipelineError


def test_without_the_setting_a_stage_uses_the_cores_it_may_run_on(monkeypatch):
    monkeypatch.delenv(CPUS_ENV, raising=False)
    assert available_cpus() == len(os.sched_getaffinity(0))


def test_the_setting_gives_a_stage_its_share(monkeypatch):
    monkeypatch.setenv(CPUS_ENV, "3")
    assert available_cpus() == 3


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_setting_is_one_line_naming_it(monkeypatch, value):
    monkeypatch.setenv(CPUS_ENV, value)
    with pytest.raises(PipelineError, match=f"{CPUS_ENV}='{value}'"):
        available_cpus()


@pytest.mark.parametrize(("jobs", "cpus", "share"), [(1, 2, "2"), (2, 2, "1"), (4, 2, "1"), (2, 16, "8")])
def test_parallel_experiments_split_the_cores_between_them(jobs, cpus, share):
    assert job_env(jobs, cpus) == {CPUS_ENV: share}
