"""`feedback`: one self-contained HTML page per notebook from an autograde output directory.

The page is what the *student* may see (`visibility.student_view`): the student's code and
outputs, each graded cell's points, status and failure message, and the total on top. Test cells
with hidden tests show only the part the student was given (plus a notice); every cell from the
first hidden test on shows a notice instead of its outputs, and its error only as far as the
student view keeps it (the name of a built-in exception, the instructor's own message). The
page carries no scripts and no links to external assets (MathJax, require.js, widget CDNs are
left out), and student-supplied HTML and Markdown is sanitised: feedback is opened by
instructors too, and must not run a student's JavaScript in their browser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from . import cells as nbcells
from .notebooks import atomic_write_text, read_notebook
from .preprocessors.base import Context, run_pipeline
from .preprocessors.feedback_cells import AttachResults, HideHiddenTestCode, WithholdOutputs
from .visibility import student_view

TEMPLATES = Path(__file__).with_name("templates")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


# What student Markdown and HTML outputs may contain on the page (nbconvert's own sanitiser
# escapes headings and paragraphs, which makes every Markdown cell unreadable).
SAFE_TAGS = [
    "a", "abbr", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table", "tbody",
    "td", "th", "thead", "tr", "ul",
]  # fmt: skip
SAFE_ATTRIBUTES = {
    "*": ["class", "id", "title", "align"],
    "a": ["href"],
    "img": ["src", "alt", "width", "height"],
}


def safe_html(html: str) -> str:
    """Sanitise student HTML: no scripts or styles, links only to web/mail, images only inline."""
    import bleach

    cleaned = bleach.clean(
        str(html),
        tags=SAFE_TAGS,
        attributes=SAFE_ATTRIBUTES,
        protocols=["http", "https", "mailto", "data"],
        strip=True,
    )
    # Images must not make the browser fetch anything: only data: URIs survive.
    return re.sub(r"""<img\b[^>]*\bsrc="(?!data:)[^"]*"[^>]*>""", "", cleaned)


_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_STYLE = re.compile(r"(<style[^>]*>)(.*?)(</style>)", re.DOTALL | re.IGNORECASE)


def _strip_css_comments(html: str) -> str:
    """The inlined JupyterLab CSS cites URLs in comments; drop them so the page names no site."""
    return _STYLE.sub(lambda m: m.group(1) + _CSS_COMMENT.sub("", m.group(2)) + m.group(3), html)


def _exporter() -> Any:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="feedback",
        extra_template_basedirs=[str(TEMPLATES)],
        sanitize_html=True,
        embed_images=True,
    )
    exporter.register_filter("safe_html", safe_html)
    return exporter


def apply_grades(book: dict[str, Any], grades: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The gradebook with what people gave each cell (the service's per-cell grades, keyed by grade_id
    or `<notebook>/<grade_id>`): `manual_points` (replacing the cell's points when set),
    `extra_credit`, `comment`; each notebook's score is then the sum of its cells' counted points."""
    for name, entry in (book.get("notebooks") or {}).items():
        cells = entry.get("cells") or {}
        for grade_id, cell in cells.items():
            given = grades.get(f"{name}/{grade_id}") or grades.get(grade_id)
            if not isinstance(given, dict):
                continue
            cell["manual_points"] = given.get("manual")
            cell["extra_credit"] = given.get("extra_credit") or 0.0
            cell["comment"] = given.get("comment")
        if cells:
            entry["score"] = round(sum(counted_points(c) for c in cells.values()), 6)
            entry["needs_manual"] = [g for g, c in cells.items() if c.get("status") == "needs-manual"
                                     and c.get("manual_points") is None]  # fmt: skip
    return book


def counted_points(cell: dict[str, Any]) -> float:
    """A person's points if set, else grading's, plus extra credit (`grader_service.grades`)."""
    manual = cell.get("manual_points")
    return (manual if manual is not None else cell.get("points") or 0.0) + (cell.get("extra_credit") or 0.0)


def generate_feedback(
    output_dir: Path, feedback_dir: Path, grades: dict[str, dict[str, Any]] | None = None
) -> list[Path]:
    """Render `<feedback_dir>/<notebook>.html` for each notebook in `output_dir/gradebook.json`, with
    the per-cell manual points, extra credit and comments of `grades` (`apply_grades`) if given."""
    output_dir, feedback_dir = Path(output_dir), Path(feedback_dir)
    book_path = output_dir / "gradebook.json"
    book = json.loads(book_path.read_text(encoding="utf-8"))
    if book.get("kind") != "autograde":
        raise ValueError(f"{book_path} is not an autograde gradebook")
    if book.get("engine") == "command":  # a command assignment's tests: one page
        from ..command.results import feedback_html

        if grades:
            book = apply_grades(book, grades)
        page = feedback_dir / "results.html"
        atomic_write_text(page, feedback_html(book))
        return [page]
    book = student_view(book)
    if grades:
        book = apply_grades(book, grades)
    exporter = _exporter()
    pages = []
    for name, entry in book["notebooks"].items():
        rel = Path(entry["path"])
        nb = _load(output_dir / rel, entry)
        first_withheld = entry.get("withheld_from_cell")
        if first_withheld == -1:  # graded before cells were withheld: find the first hidden test
            entry["withheld_from_cell"] = first_withheld = _first_hidden_test(nb)
        steps = [HideHiddenTestCode(), WithholdOutputs(first_withheld), AttachResults(entry)]
        nb = run_pipeline(nb, Context(name), steps)
        resources = {"metadata": {"name": f"Feedback: {name}"}, "grader": _summary(name, entry)}
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        body = _strip_css_comments(body)
        page = feedback_dir / rel.with_suffix(".html")
        atomic_write_text(page, body)
        pages.append(page)
    return pages


def _first_hidden_test(nb: NotebookNode) -> int | None:
    for index, cell in enumerate(nb.cells):
        role = (cell.metadata.get("grader") or {}).get("role")
        if role == "test" and nbcells.has_hidden_tests(nbcells.source_text(cell)):
            return index
    return None


def _load(path: Path, entry: dict[str, Any]) -> NotebookNode:
    if entry.get("status") == "graded" and path.is_file():
        return read_notebook(path)
    message = entry.get("message") or "this notebook could not be graded"
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"**{message}**")])


def _graded_by_someone(cell: dict[str, Any]) -> bool:
    return cell.get("manual_points") is not None or bool(cell.get("extra_credit"))


def _summary(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    rows = [
        {
            "grade_id": gid,
            "points_text": _fmt(counted_points(cell) if _graded_by_someone(cell) else cell.get("points")),
            "comment": cell.get("comment"),
            "max_text": _fmt(cell.get("max_points")),
            "status": cell.get("status", ""),
        }
        for gid, cell in entry["cells"].items()
    ]
    notes = [
        n["message"] for n in entry.get("notes", []) if n.get("kind") in ("tampering", "integrity", "timeout")
    ]
    first_withheld = entry.get("withheld_from_cell")
    return {
        "withheld": None
        if first_withheld is None
        else f"Outputs are shown up to cell {first_withheld}; from cell {first_withheld + 1} on, where hidden "
        "tests ran, they are not: what code prints after hidden tests ran could reveal them.",
        "name": name,
        "score_text": _fmt(entry.get("score", 0.0)),
        "max_text": _fmt(entry.get("max_score", 0.0)),
        "message": entry.get("message"),
        "needs_manual": bool(entry.get("needs_manual")),
        "rows": rows,
        "notes": notes,
    }
