"""The report: `reports/report.html` (self-contained, figures embedded) and `reports/report.md`.

Everything in them is read from the pipeline's files: the evaluation metrics and details, each
fold's training metrics and history, the ensembles' test predictions, the test images, and DVC's
own `dvc metrics diff` against the last commit. Nothing is typed in by hand. Along its seams:

- `inputs.py`   reading every file the report is made of
- `text.py`     numbers, sentences and tables (data frames), pure functions of the inputs
- `study.py`    the study's published figures (`published.yaml`) beside the measured ones
- `progression.py` the progression's experiments and the retraining history (progression/results.json)
- `tune.py`     the Optuna study of params.yaml's `tune` section (tune/summary.json)
- `figures.py`  one builder per kind of figure
- `render.py`   one section model, rendered to HTML (a Jinja2 template) and to Markdown

Steps: `load_inputs` -> `build_report` -> `write_report` (wired in flows/report.py, which also
publishes the result as Prefect artifacts).
"""

from tasks.report.inputs import ReportInputs, load_inputs, metrics_diff
from tasks.report.render import SECTIONS, Report, build_report, write_report
from tasks.report.study import comparison as study_comparison
from tasks.report.study import load_published
from tasks.report.text import HEADLINE_NOTE, jpeg_note, sample_ids, statistics_in_words

__all__ = ["HEADLINE_NOTE", "SECTIONS", "Report", "ReportInputs", "build_report", "jpeg_note", "load_inputs",
           "load_published", "metrics_diff", "study_comparison", "sample_ids", "statistics_in_words", "write_report"]
