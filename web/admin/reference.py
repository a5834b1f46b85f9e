"""The project's Markdown guides, rendered for the console from the same files.

``docs/flow-language.md`` (and the Studio guide it links to) are read from the
repository and rendered with markdown-it-py (CommonMark, plus tables), so the
console shows exactly what the repository says. Raw HTML in the Markdown is
not passed through (it is shown as text), headings get GitHub-style ``id``\\ s so
the guides' own ``#anchor`` links work, and links between the guides go to
their console pages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from markdown_it import MarkdownIt
from markupsafe import Markup

from config import ROOT

#: The guides the console serves: URL name → file under docs/.
GUIDES = {"flow-language": "flow-language.md", "coming-from-studio": "coming-from-studio.md"}


@dataclass(frozen=True)
class Heading:
    """A section of a guide, for its table of contents.

    Attributes:
        level: 2 or 3.
        text: The heading's text.
        anchor: Its ``id``.
    """

    level: int
    text: str
    anchor: str


@dataclass(frozen=True)
class Guide:
    """A rendered guide.

    Attributes:
        name: Its URL name (a key of `GUIDES`).
        title: Its first heading.
        html: The body as HTML, safe to insert in a template.
        headings: Its sections (levels 2 and 3), in order.
        source: The Markdown file it was rendered from, relative to the repository.
    """

    name: str
    title: str
    html: Markup
    headings: list[Heading]
    source: str


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to ``-``."""
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render(name: str, text: str, link: dict[str, str]) -> Guide:
    """Render one guide's Markdown.

    Args:
        name: The guide's URL name.
        text: Its Markdown.
        link: Each guide's file name (``flow-language.md``) and the URL to link it to.
    """
    parser = _parser()
    tokens = parser.parse(text)
    headings: list[Heading] = []
    title = name
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            content = tokens[index + 1].content
            anchor = slug(content)
            if anchor in seen:  # GitHub numbers repeated headings
                seen[anchor] += 1
                anchor = f"{anchor}-{seen[anchor]}"
            else:
                seen[anchor] = 0
            token.attrSet("id", anchor)
            level = int(token.tag[1])
            if level == 1 and title == name:
                title = content
            elif level in (2, 3):
                headings.append(Heading(level, content, anchor))
        if token.type == "inline":
            for child in token.children or []:
                href = child.attrGet("href") if child.type == "link_open" else None
                if isinstance(href, str):
                    target, _, fragment = href.partition("#")
                    file_name = target.rsplit("/", 1)[-1]
                    if file_name in link:
                        anchor = f"#{fragment}" if fragment else ""
                        child.attrSet("href", link[file_name] + anchor)
    html = parser.renderer.render(tokens, parser.options, {})
    return Guide(name, title, Markup(html), headings, f"docs/{GUIDES[name]}")


@lru_cache(maxsize=8)
def _cached(name: str, mtime: float, links: tuple[tuple[str, str], ...]) -> Guide:
    text = (ROOT / "docs" / GUIDES[name]).read_text(encoding="utf-8")
    return render(name, text, dict(links))


def guide(name: str, link: dict[str, str]) -> Guide:
    """The guide `name`, rendered once per version of its file.

    Raises:
        KeyError: there is no such guide.
    """
    path: Path = ROOT / "docs" / GUIDES[name]
    return _cached(name, path.stat().st_mtime, tuple(sorted(link.items())))
