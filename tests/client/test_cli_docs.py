"""docs/cli.md is what the command says about itself."""

from __future__ import annotations

import difflib

from grader_client.cli import docs

from .conftest import REPO


def test_committed_cli_doc_is_up_to_date() -> None:
    committed = (REPO / "docs" / "cli.md").read_text().splitlines()
    diff = list(
        difflib.unified_diff(committed, docs.render().splitlines(), "docs/cli.md", "generated", lineterm="")
    )
    assert not diff, "stale, run: python -m grader_client.cli.docs > docs/cli.md\n" + "\n".join(diff[:40])


def test_cli_doc_lists_every_command() -> None:
    text = docs.render()
    for command in (
        "grader login",
        "grader roster import",
        "grader submit",
        "grader regrade",
        "grader watch",
    ):
        assert f"### `{command}`" in text
