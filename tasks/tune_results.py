"""tune/summary.json (`Paths.tune_summary`): the Optuna study as the report reads it, kept in git.

Not an output of the tune stage: a report depending on one would put the study on the default
`dvc repro` path. `python -m flows.tune table` writes it from the study's storage
(`tasks.tune.results_record`), as `python -m flows.progression table` writes
progression/results.json from the experiments. Reading it needs neither Optuna nor the training
code, so the report stage depends on this module alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.errors import PipelineError

KEYS = {"study", "collected", "model", "fold", "epochs", "subsample", "pruner", "baseline", "trials", "summary",
        "importances"}


class TuneResultsError(PipelineError):
    """A tune/summary.json that cannot be read; the message names the file."""


def read_results(path: Path) -> dict | None:
    """The record `tasks.tune.results_record` wrote; None if there is none."""
    try:
        record = json.loads(Path(path).read_text())
        missing = KEYS - set(record)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TuneResultsError(f"{path}: not a tune results file ({type(error).__name__}: {error}); "
                               "write it again with `python -m flows.tune table`") from None
