"""MkDocs hook: fills the reference pages from the code (churn.reference), so the params
and CLI references cannot drift from what `churn` accepts."""

from __future__ import annotations

from churn import reference

MARKERS = {
    "<!-- churn:params-reference -->": reference.params_reference,
    "<!-- churn:cli-reference -->": reference.cli_reference,
}


def on_page_markdown(markdown: str, **_: object) -> str:
    for marker, render in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
