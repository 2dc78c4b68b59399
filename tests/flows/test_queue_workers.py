"""The progression's queue keeps its workers: DVC's queue workers can stop on a half-written broker
message (treeverse/dvc#10428), and `run --jobs N` starts them again while experiments wait."""

import threading

from flows.progression import keep_workers, queue_state

# `dvc queue status` as DVC 3 printed it during a fast progression, after one of two workers stopped.
STATUS = """Task     Name                        Created    Status
178f085  fast-resnet18               07:03 AM   Running
7d49ce9  fast-longtail-none          07:03 AM   Queued
5269f9c  fast-longtail-oversample    07:03 AM   Queued
042f907  fast-ann-plain              07:03 AM   Success
b6580df  fast-vgg11-bn               07:03 AM   Failed

Worker status: 1 active, 0 idle
"""


def test_queue_state_counts_waiting_experiments_and_active_workers():
    assert queue_state(STATUS) == (2, 1)
    assert queue_state(STATUS.replace("Queued", "Success").replace("1 active", "2 active")) == (0, 2)
    assert queue_state("") == (0, 0)  # no queue yet, or DVC printed nothing


def run_watcher(statuses: list[str], jobs: int = 2) -> int:
    """How often keep_workers starts workers when `dvc queue status` reads `statuses` in turn."""
    stop, started, answers = threading.Event(), [], iter(statuses)

    def status() -> str:
        answer = next(answers, None)
        if answer is None:
            stop.set()
            return ""
        return answer

    keep_workers(jobs, status, lambda: started.append(1), stop, every=0.001)
    return len(started)


def test_workers_are_started_again_only_while_experiments_wait_and_workers_are_missing():
    full = STATUS.replace("1 active", "2 active")
    drained = STATUS.replace("Queued", "Running")
    assert run_watcher([STATUS]) == 1
    assert run_watcher([full, full, STATUS, full]) == 1
    assert run_watcher([drained, drained]) == 0  # the last experiments are running: nothing to start
    assert run_watcher([STATUS], jobs=1) == 0  # one worker asked for, one running
