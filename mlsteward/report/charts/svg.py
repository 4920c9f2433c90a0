"""One matplotlib figure to one self-contained SVG string, the same bytes every time.

Every chart module draws into a :class:`~matplotlib.figure.Figure` handed out by
:func:`draw`, which renders it with the project's style and cleans the SVG so it can be
inlined in an HTML page, put in an ``<img>`` as a data URL, or parsed as XML:

- text stays text (``svg.fonttype: none``): searchable, selectable, small;
- the same input gives the same bytes (fixed ``svg.hashsalt``, no date or creator metadata);
- no XML prolog, DOCTYPE or ``<metadata>``; no ``<style>`` element (inlined, its ``*`` rule
  would restyle the whole page): its stroke defaults become inherited attributes instead;
- no ``url(...)`` references: clipping to the axes is done by nested viewports (see
  :func:`clean`); ids nothing refers to are dropped and the rest made unique per picture (a
  page may hold many charts);
- coordinates keep two decimals (a hundredth of a point);
- a ``<title>`` and ``<desc>``, ``role="img"`` and an ``aria-label`` for screen readers.

matplotlib is imported when a chart is drawn, never at import: the API and the command line
import :mod:`mlsteward.report` without drawing anything. Figures are built without pyplot (no
global figure registry, nothing to leak), and one lock serialises drawing, because matplotlib's
rcParams are process-wide and the API may draw from several threads.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteward.governance.gates import as_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe & Ito's palette: told apart with every common colour-vision deficiency.
BLUE = "#0072B2"
ORANGE = "#E69F00"
GREEN = "#009E73"
SKY = "#56B4E9"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
YELLOW = "#F0E442"
BLACK = "#000000"
GREY = "#8C8C8C"
PALETTE = (BLUE, ORANGE, GREEN, VERMILLION, SKY, PURPLE, YELLOW, BLACK)
LIMIT = VERMILLION
"""Limit and threshold lines: one colour, always dashed and labelled."""
SEQUENTIAL = "viridis"
"""Low-to-high colour scale (perceptually uniform, readable without colour vision)."""

WIDTH = 5.8
"""Inches: 417.6 pt, about 557 CSS pixels: shown at about its own size in the card's two
columns and in Prefect's UI."""

_LOCK = threading.Lock()
_STYLE: Any = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 10,
    "axes.titlesize": 11.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#E5E7EB",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "savefig.dpi": 90,  # for the few layers drawn as pixels (dense scatters)
    "path.simplify": True,
    "text.parse_math": False,  # a group or feature named "$x$" is text, not a formula
}


@dataclass(frozen=True)
class Picture:
    """One chart: what it shows and the SVG that shows it.

    Attributes:
        key: Stable name within its page, e.g. ``roc`` or ``fairness-sex``.
        title: The chart's title (also the SVG's ``<title>``).
        svg: A complete ``<svg>`` element, safe to inline in HTML.
        alt: One or two sentences saying what the picture shows, for those who cannot see it.
    """

    key: str
    title: str
    svg: str
    alt: str

    def data_uri(self) -> str:
        """``data:image/svg+xml;base64,...``: the picture as an ``<img src>``."""
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg.encode()).decode()

    def markdown(self) -> str:
        """A markdown image with the picture as a data URL (what Prefect's UI renders)."""
        alt = re.sub(r"[\[\]\n]", " ", self.alt)
        return f"![{alt}]({self.data_uri()})"

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "title": self.title, "svg": self.svg, "alt": self.alt}


def draw(
    key: str,
    title: str,
    alt: str,
    paint: Callable[[Figure], None],
    *,
    height: float = 4.0,
    width: float = WIDTH,
    salt: str = "",
) -> Picture:
    """Draw with ``paint`` on a fresh figure and render it as a :class:`Picture`.

    Args:
        key: The picture's key (and, with ``salt``, what its SVG ids derive from).
        title: Title of the picture; ``paint`` draws it on the figure itself.
        alt: Text alternative.
        paint: Draws on the figure (axes, titles, labels, legend).
        height, width: Inches.
        salt: Makes ids unique among pictures of the same key on one page (e.g. the version).
    """
    # start-up time: matplotlib takes ~0.5 s to import, and only drawing needs it
    import matplotlib
    from matplotlib.figure import Figure

    ident = f"{salt}-{key}" if salt else key
    style = dict(_STYLE, **{"svg.hashsalt": f"mlsteward-{ident}"})
    with _LOCK, matplotlib.rc_context(style):
        fig = Figure(figsize=(width, height), layout="constrained")
        try:
            paint(fig)
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        finally:
            fig.clear()
    return Picture(key, title, clean(buffer.getvalue(), title, alt, ident), alt)


def heading(fig: Figure, title: str) -> None:
    """The picture's title, at the figure's left edge (an axes title would start after the
    longest tick label and run off the right)."""
    fig.suptitle(title, x=0.01, ha="left", fontsize=11.5, fontweight="bold")


number = as_number
"""A finite float from stored JSON, or None (missing, text, NaN, a boolean)."""


def numbers(values: Any) -> list[float]:
    """A stored list as floats (a missing entry is NaN, which matplotlib leaves out); [] for
    anything that is not a list."""
    if not isinstance(values, list):
        return []
    out = []
    for v in values:
        x = number(v)
        out.append(math.nan if x is None else x)
    return out


SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
_HREF = f"{{{XLINK_NS}}}href"
_NUMBER = re.compile(r"-?\d+\.\d+")


def short(x: float, digits: int = 3) -> str:
    """A number for a label: ``digits`` significant digits, never more than 4 decimals (the
    card's rule, so 0.00446 reads 0.0045), whole numbers with separators from 10**digits."""
    if x == 0:
        return "0"
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    text = f"{x:.{digits}g}"
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    if "e" in text or decimals > 4:
        return f"{x:.4f}" if abs(x) >= 1e-4 else f"{x:.1e}"
    return text


def _round(text: str) -> str:
    """Coordinates to 2 decimals (a hundredth of a point): smaller, and nothing in the page
    reads like a number with spurious precision."""

    def one(m: re.Match[str]) -> str:
        out = f"{float(m.group(0)):.2f}".rstrip("0").rstrip(".")
        return "0" if out in ("-0", "") else out

    return _NUMBER.sub(one, text)


def clean(svg: str, title: str, alt: str, ident: str) -> str:
    """matplotlib's SVG made fit to inline (see the module docstring).

    Clipping to the axes is redone without ``clip-path="url(#...)"`` references: each clipped
    element is wrapped in a nested ``<svg>`` viewport of the clip rectangle (whose viewBox is
    the same rectangle, so coordinates are unchanged), which clips by itself. The page then
    holds no ``url(...)`` at all, and nothing that depends on an id being unique.
    """
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(svg[svg.index("<svg") :])
    tag = f"{{{SVG_NS}}}"
    parents = {child: parent for parent in root.iter() for child in parent}
    clips: dict[str, ET.Element | None] = {}
    for clip in root.iter(f"{tag}clipPath"):
        shapes = list(clip)
        rect = shapes[0] if len(shapes) == 1 and shapes[0].tag == f"{tag}rect" else None
        clips[clip.get("id", "")] = rect
    for element in list(root.iter()):
        ref = element.get("clip-path")
        if ref is None:
            continue
        del element.attrib["clip-path"]
        rect = clips.get(ref.removeprefix("url(#").removesuffix(")"))
        if rect is None:  # not an axes rectangle: drawn unclipped
            continue
        x, y, w, h = (rect.get(k, "0") for k in ("x", "y", "width", "height"))
        parent = parents[element]
        viewport = ET.Element(
            f"{tag}svg",
            {
                "x": x,
                "y": y,
                "width": w,
                "height": h,
                "viewBox": f"{x} {y} {w} {h}",
                "overflow": "hidden",
            },
        )
        parent.insert(list(parent).index(element), viewport)
        parent.remove(element)
        viewport.append(element)
        parents[element], parents[viewport] = viewport, parent
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in (f"{tag}metadata", f"{tag}style", f"{tag}clipPath"):
                parent.remove(child)
    prefix = "c" + hashlib.sha256(ident.encode()).hexdigest()[:8] + "-"
    used = {e.get(_HREF, "")[1:] for e in root.iter() if e.get(_HREF, "").startswith("#")}
    for element in root.iter():
        ident_ = element.get("id")
        if ident_ is not None:
            if ident_ in used:
                element.set("id", prefix + ident_)
            else:
                del element.attrib["id"]
        href = element.get(_HREF, "")
        if href.startswith("#"):
            element.set(_HREF, "#" + prefix + href[1:])
        for key, value in element.attrib.items():
            if key != _HREF:
                element.set(key, _round(value.replace("\n", " ")))
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == f"{tag}defs" and not len(child):
                parent.remove(child)
    root.set("role", "img")
    root.set("aria-label", title)
    root.set("stroke-linejoin", "round")  # what matplotlib's dropped <style> said
    root.set("stroke-linecap", "butt")
    heading = ET.Element(f"{tag}title")
    heading.text = title
    description = ET.Element(f"{tag}desc")
    description.text = alt
    root.insert(0, description)
    root.insert(0, heading)
    return ET.tostring(root, encoding="unicode") + "\n"
