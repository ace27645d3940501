"""Every relative link in README.md and docs/*.md resolves: the file or folder exists, and an
anchor (`#section`) names a heading of the Markdown file it points to, slugged as GitHub does.
Pure: reads files only, no network."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and _ in any script
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    return LINK.findall(text)


def broken(page: Path) -> list[str]:
    out = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked here
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    return out


def test_slugs_follow_github():
    assert slug("Projection: 10M pairs") == "projection-10m-pairs"
    assert slug("From data to a tuned model") == "from-data-to-a-tuned-model"
    assert slug("Questions (GLAN §2.4)") == "questions-glan-24"
    assert slug("What a setting changes: the level's version") == "what-a-setting-changes-the-levels-version"
    assert slug("`glan build` and DuckLake_writers") == "glan-build-and-ducklake_writers"


def test_links_are_found_outside_code():
    page = "see [a](x.md#b) and [`c`](d/) but not `[e](f)` nor\n```\n[g](h)\n```\n"
    assert LINK.findall(INLINE_CODE.sub("", FENCE.sub("", page))) == ["x.md#b", "d/"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert links(page), f"{page.name} has no links: is the pattern right?"
    assert broken(page) == []
