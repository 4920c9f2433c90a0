"""Pictures in a Prefect markdown artifact.

Prefect's UI (3.8) renders a markdown artifact with its own renderer: a markdown image becomes
an ``<img>`` whose ``src`` is the link as written, so a ``data:image/svg+xml;base64,...`` URL
shows the picture; raw HTML passes through DOMPurify with ``style`` attributes and ``<style>``
elements forbidden, which would strip every colour and line style from an inline SVG. So each
picture goes in as a markdown image with a data URL (:meth:`Picture.markdown`). A picture whose
URL is larger than :data:`MAX_PICTURE_BYTES` is named instead of embedded (the artifact is
stored in Prefect's database with every run).
"""

from __future__ import annotations

from collections.abc import Sequence

from mlsteward.report.charts.svg import Picture

MAX_PICTURE_BYTES = 80_000
"""Largest data URL embedded in an artifact (the biggest chart is a beeswarm of ~70 KB)."""


def pictures_markdown(
    pictures: Sequence[Picture], heading: str = "## Pictures", elsewhere: str = "the model card"
) -> str:
    """A markdown section with the pictures as images, ending in a blank line (empty without
    pictures)."""
    if not pictures:
        return ""
    out = [heading, ""]
    skipped = []
    for p in pictures:
        image = p.markdown()
        if len(image) > MAX_PICTURE_BYTES:
            skipped.append(p.title)
            continue
        out += [image, ""]
    if skipped:
        out += [f"_Too large for an artifact, drawn in {elsewhere}: {'; '.join(skipped)}._", ""]
    return "\n".join(out) + "\n"


def insert_before(markdown: str, section: str, marker: str) -> str:
    """``section`` placed before the first line ``marker`` (appended when there is none)."""
    if not section:
        return markdown
    at = markdown.find("\n" + marker)
    if at < 0:
        return markdown.rstrip() + "\n\n" + section
    return markdown[: at + 1] + section + "\n" + markdown[at + 1 :]
