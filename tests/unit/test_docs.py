"""The docs stay true to the code: the generated references equal what the code gives now, and
every relative link in the hand-written docs points at a file (and heading) that exists."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.docs_scripts import docs_script

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024
DOCS = sorted(
    [
        README,
        ROOT / "ARCHITECTURE.md",
        ROOT / "CHANGELOG.md",
        ROOT / "benchmarks" / "README.md",
        *(ROOT / "docs").rglob("*.md"),
    ]
)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


@pytest.fixture(scope="module")
def generator() -> Iterator[ModuleType]:
    """``docs/generate_reference.py``."""
    with docs_script("generate_reference") as module:
        yield module


@pytest.mark.parametrize("name", ["config.md", "cli.md"])
def test_generated_reference_is_current(generator: ModuleType, name: str) -> None:
    path = ROOT / "docs" / "reference" / name
    fresh = generator.GENERATED[path]()
    committed = path.read_text(encoding="utf-8") if path.is_file() else ""
    if committed != fresh:
        diff = "\n".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(),
                    fresh.splitlines(),
                    f"committed {name}",
                    f"generated {name}",
                    lineterm="",
                )
            )[:40]
        )
        pytest.fail(
            f"docs/reference/{name} is stale: run `{generator.REGENERATE}` and commit it\n{diff}"
        )


def test_generated_reference_is_deterministic(generator: ModuleType) -> None:
    """Two runs give the same text, so the check above cannot flap."""
    for render in generator.GENERATED.values():
        assert render() == render()


def test_check_names_a_stale_file(
    generator: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text("an old copy\n", encoding="utf-8")
    monkeypatch.setattr(generator, "GENERATED", {stale: lambda: "what the code says now\n"})
    assert generator.main(["--check"]) == 1
    assert "reference.md is stale" in capsys.readouterr().err
    assert generator.main([]) == 0
    assert stale.read_text(encoding="utf-8") == "what the code says now\n"
    assert generator.main(["--check"]) == 0


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    anchors = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    prose = _prose(path.read_text(encoding="utf-8"))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def test_docs_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "ARCHITECTURE.md", "docs/README.md", "docs/reference/cli.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: ...
        file_part, _, fragment = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(f"{target}: no heading or anchor #{fragment}")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


# Repository paths the docs name in code spans; other spans (state under MLSTEWARD_HOME, MLflow
# artifact paths, generated data files) are not files of the checkout.
REPO_ROOTS = (
    "mlsteward/", "flows/", "tasks/", "tests/", "benchmarks/", "deploy/", "docs/",
    "feature_repo/", "config/", ".github/", ".ci/",
)  # fmt: skip
TABLE_ROOM = re.compile(r"^\|\s*`((?:mlsteward/)?[a-z_]+/)`\s*\|(.*)$", re.MULTILINE)


def _named_paths(text: str) -> list[str]:
    """Repository paths in code spans, plus the bare ``module.py`` names a table row gives
    beside its room (``| `mlsteward/platform/` | ... `gc.py` ... |``)."""
    prose = FENCE.sub("", text)
    spans = [s.strip("`") for s in CODE_SPAN.findall(prose)]
    paths = [s for s in spans if s.startswith(REPO_ROOTS) and not re.search(r"[<>…{} ]", s)]
    for room, rest in TABLE_ROOM.findall(prose):
        for module in re.findall(r"`([a-z_]+\.py)`", rest):
            paths.append(room + module)
    return paths


@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS if d.name != "CHANGELOG.md"],  # the changelog names old paths on purpose
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_named_repository_paths_exist(doc: Path) -> None:
    """A module renamed or split must take the docs that name it along."""
    missing = [
        path
        for path in _named_paths(doc.read_text(encoding="utf-8"))
        if not any(ROOT.glob(path.rstrip("/")))
    ]
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_readme_stays_short_and_names_the_test_command() -> None:
    """The README is the front door (details live in docs/), and CI runs its test command."""
    text = README.read_text(encoding="utf-8")
    size = len(text.encode("utf-8"))
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move depth into docs/"
    assert "make test" in text
