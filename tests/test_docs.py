"""The documentation a reader follows: every relative link and anchor resolves, the README is a front page
(the first screenful says how to install, run the demo, run on the real data and predict), and no page
points where a reader cannot follow (the team's tracker, folders outside the repository)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def slugs(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-', repeats
    numbered; headings inside code blocks are not headings."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_anchors_resolve(page):
    problems = []
    for target in links(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in slugs(file.read_text()):
            problems.append(f"{target}: no heading '#{anchor}' in {file.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_a_reader_cannot_follow(page):
    text = page.read_text()
    found = re.findall(r"\.\./shared\b|\bissues? \d+|/work/", text, flags=re.I)
    assert not found, f"{page.relative_to(ROOT)} points where a reader cannot follow: {found}"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; details belong in docs/"
    first = "\n".join(lines[:80])
    for what, needle in [
        ("the install", "pip install -r requirements.txt"),
        ("the demo", "--demo"),
        ("the real data", "--data-root"),
        ("predicting new images", "python -m common.predict"),
        ("the tests", "pytest"),
    ]:
        assert needle in first, f"the README's first 80 lines do not show {what} ({needle!r})"


def test_every_docs_page_is_linked_from_the_readme():
    readme = links((ROOT / "README.md").read_text())
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in readme if not re.match(r"[a-z]+:", t)}
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_slugs_follow_github():
    md = "# A b\n## `python -m common.predict`: new images\n```\n# not a heading\n```\n## A b\n"
    assert slugs(md) == {"a-b", "python--m-commonpredict-new-images", "a-b-1"}
