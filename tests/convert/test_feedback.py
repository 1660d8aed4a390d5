"""`feedback`: a self-contained page per notebook; hidden tests as results only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from grader_service.convert.autograde import autograde
from grader_service.convert.feedback import generate_feedback

from .conftest import HAVE_NUMPY, requires_numpy, stage


@pytest.fixture(scope="module")
def pages(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("feedback")
    rendered = {}
    cases = [("s26", "basics"), ("s08", "basics")] + ([("s37", "numpy")] if HAVE_NUMPY else [])
    for student, assignment in cases:
        source = stage(corpus / "source" / assignment, root / student / "src")
        submission = stage(corpus / "submitted" / student / assignment, root / student / "sub")
        if student == "s08":
            _add_hostile_html(submission / "basics.ipynb")
        autograde(submission, source, root / student / "out", cell_timeout=10)
        (page,) = generate_feedback(root / student / "out", root / student / "feedback")
        rendered[student] = page.read_text()
    return rendered


def _add_hostile_html(path: Path) -> None:
    nb = json.loads(path.read_text())
    nb["cells"].append(
        {
            "cell_type": "markdown",
            "metadata": {},
            "source": '# Notes\n<script>alert("md")</script><img src="http://x.test/t.png">',
        }
    )
    nb["cells"].append(
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b><script>alert(2)</script>'))"}
    )  # fmt: skip
    path.write_text(json.dumps(nb))


def test_markdown_renders_and_student_html_is_defused(pages: dict[str, str]) -> None:
    html = pages["s08"]
    assert '<h1 id="Notes">Notes' in html, "markdown is rendered, not escaped"
    assert "<b>bold</b>" in html
    assert "<script" not in html.lower() and "x.test" not in html


@requires_numpy
def test_total_and_per_cell_points_are_shown(pages: dict[str, str]) -> None:
    html = pages["s37"]
    assert "Score: 12 / 15" in html
    assert "0 / 3 points" in html and "test_moving_average_hidden" in html
    assert "AssertionError" in html
    assert "includes hidden tests" in html


@requires_numpy
def test_hidden_tests_are_never_shown_as_code(pages: dict[str, str], corpus: Path) -> None:
    html = pages["s37"]
    for hidden_line in ("moving_average(np.array([5.0, 1.0]), 1)", "moving_average(np.arange(6.0), 6)"):
        assert hidden_line not in html
        assert hidden_line.replace("(", '<span class="p">(') not in html
    assert "hidden tests ran here" in html


def test_page_is_self_contained(pages: dict[str, str]) -> None:
    for html in pages.values():
        assert "<script" not in html.lower()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.IGNORECASE)
        assert "cdn" not in html.lower()


def test_unreadable_notebook_gets_a_page_with_the_reason(pages: dict[str, str]) -> None:
    html = pages["s26"]
    assert "Score: 0 / 10" in html and "not a readable notebook" in html
