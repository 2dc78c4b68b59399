"""One section model, rendered twice: to HTML through a Jinja2 template (every figure embedded,
so the file stands alone) and to a Markdown summary (tables and words, no figures). Tables are
data frames, written by pandas (`to_html`, `to_markdown`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from tasks.config import ReportParams
from tasks.io import write_atomic
from tasks.paths import Paths
from tasks.report import figures, study, text
from tasks.report import progression as progression_section
from tasks.report import tune as tune_section
from tasks.report.inputs import ReportInputs

TITLE = "CIFAR-10: CNN vs ANN — evaluation report"
COMMAND = "python -m flows.report"  # the `report` stage of `dvc repro`
SECTIONS = {  # id -> heading, in the order they appear
    "headline": "Headline comparison",
    "tests": "Statistical tests",
    "study": "The study's published figures beside ours",
    "progression": "Progression: what each ingredient is worth",
    "tuning": "Tuning: what an Optuna study found",
    "learning-curves": "Learning curves",
    "confusion": "Confusion matrices and classification reports",
    "samples": "Sample predictions",
    "mistakes": "Most confident mistakes",
    "changes": "Change against the previous commit",
}
_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


@dataclass
class Table:
    frame: pd.DataFrame
    id: str = ""

    def html(self) -> str:
        return self.frame.to_html(index=False, border=0, table_id=self.id or None, na_rep="—",
                                  float_format="{:.6g}".format)

    def markdown(self) -> str:
        # Cells as written: text stays text ("0.100" is not re-parsed into 0.1), floats get 6 digits.
        cells = self.frame.map(lambda v: "—" if pd.isna(v) else f"{v:.6g}" if isinstance(v, float) else v)
        return cells.to_markdown(index=False, disable_numparse=True)


@dataclass
class Block:
    """What one heading holds, in order: paragraphs (str), tables and pictures."""
    title: str | None
    items: list[str | Table | figures.Picture] = field(default_factory=list)
    side_by_side: bool = False


@dataclass
class Section:
    id: str
    blocks: list[Block]
    in_markdown: bool = True  # the Markdown summary leaves out the sections made of figures

    @property
    def title(self) -> str:
        return SECTIONS[self.id]


_TEMPLATES.tests.update(table=lambda item: isinstance(item, Table),
                        picture=lambda item: isinstance(item, figures.Picture))


def inline_markdown(text: str) -> Markup:
    """A paragraph's `**bold**` and `code` as HTML; everything else escaped."""
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text)))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", html))


_TEMPLATES.filters["inline"] = inline_markdown


@dataclass
class Report:
    html: str
    markdown: str
    headline: list[dict]  # one row per model, as displayed


def _figures_only(pictures: list[figures.Picture]) -> list[Block]:
    return [Block(p.title, [p]) for p in pictures]


def sections(inputs: ReportInputs, params: ReportParams, seed: int) -> list[Section]:
    """The report's content, in order, for every format."""
    classes = inputs.details["classes"]
    confusion = {p.model: p for p in figures.confusion_figures(inputs)}
    mistakes = figures.mistake_figures(inputs, params)
    metrics_file = str(Paths().eval_metrics)
    published = study.load_published()
    table = study.comparison(inputs, published)
    return [
        Section("headline", [Block(None, [
            *text.answer(inputs),
            Table(pd.DataFrame(text.headline(inputs)), "headline"),
            f"{text.HEADLINE_NOTE} {text.jpeg_note(inputs.source)}".strip(),
            Table(text.fold_table(inputs), "folds")])]),
        Section("tests", [Block(None, text.statistics_in_words(inputs))]),
        Section("study", [Block(None, [*study.comparison_in_words(inputs, published)]
                                + ([Table(table, "study")] if table is not None else []))]),
        Section("progression", [Block(None, [Table(item) if isinstance(item, pd.DataFrame) else item
                                             for item in progression_section.items(inputs.progression, published)])]),
        Section("tuning", [Block(None, [Table(item) if isinstance(item, pd.DataFrame) else item
                                        for item in tune_section.items(inputs.tune)])]),
        Section("learning-curves", _figures_only(figures.learning_curve_figures(inputs)), in_markdown=False),
        Section("confusion", [Block(None, ["The confusion matrix and the per-class scores of each fold ensemble "
                                           "on the test set."])] + [
            Block(text.display_name(m), [confusion[m],
                                         Table(text.class_table(inputs.details["models"][m]["ensemble"]["report"],
                                                                classes))], side_by_side=True)
            for m in inputs.models]),
        Section("samples", _figures_only(figures.sample_figures(inputs, params, seed)), in_markdown=False),
        Section("mistakes", _figures_only(mistakes) or [Block(None, ["No mistakes to show."])], in_markdown=False),
        Section("changes", [Block(None, [text.changes_in_words(inputs.changes, metrics_file)]
                                  + ([Table(inputs.changes)] if inputs.changes is not None
                                     and not inputs.changes.empty else []))]),
    ]


def build_report(inputs: ReportInputs, params: ReportParams, seed: int) -> Report:
    """The HTML and Markdown documents and the headline rows."""
    details = inputs.details
    meta = (f"{details['test_images']:,} test images, {len(details['classes'])} classes; horizontal-flip "
            f"test-time augmentation {'on' if details['tta_flip'] else 'off'}; data: "
            f"{inputs.source.get('source', '?')}. Generated by `{COMMAND}` (stage `report` of `dvc repro`) "
            "from metrics/evaluate.json, eval/details.json, eval/predictions/ and models/*/fold_*/.")
    content = sections(inputs, params, seed)
    context = {"title": TITLE, "meta": meta, "sections": content}
    return Report(html=_TEMPLATES.get_template("report.html.j2").render(context),
                  markdown=_TEMPLATES.get_template("report.md.j2").render(context).rstrip() + "\n",
                  headline=text.headline(inputs))


def write_report(report: Report, paths: Paths) -> Path:
    """Write report.html and report.md atomically; return the HTML's path."""
    write_atomic(paths.report_md, lambda p: p.write_text(report.markdown))
    return write_atomic(paths.report_html, lambda p: p.write_text(report.html))
