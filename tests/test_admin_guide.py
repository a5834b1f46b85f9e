"""The flow-language reference in the console, rendered from docs/flow-language.md."""

from __future__ import annotations

from tests.admin_support import add_user, login
from web.admin.reference import render, slug


def test_the_guide_is_rendered_from_the_repository_markdown(app, client):
    add_user(app, "sam@example.com", "agent")
    login(client, "sam@example.com")
    page = client.get("/admin/docs/flow-language").get_data(as_text=True)
    assert '<h1 id="the-flow-language">The flow language</h1>' in page
    assert '<h3 id="ask">ask</h3>' in page and 'href="#ask"' in page  # contents and anchors
    assert "<table>" in page  # tables are rendered
    assert "docs/flow-language.md" in page
    assert client.get("/admin/docs/coming-from-studio").status_code == 200
    assert client.get("/admin/docs/").headers["Location"] == "/admin/docs/flow-language"
    assert client.get("/admin/docs/nope").status_code == 404


def test_raw_html_in_the_markdown_is_shown_as_text():
    text = "# T\n\n<script>alert(1)</script>\n\n## A b!\n\nSee [ask](flow-language.md#ask).\n"
    guide = render("flow-language", text, {"flow-language.md": "/admin/docs/flow-language"})
    assert "<script>" not in guide.html and "&lt;script&gt;" in guide.html
    assert 'href="/admin/docs/flow-language#ask"' in guide.html  # guides link in the console
    assert [heading.anchor for heading in guide.headings] == ["a-b"]
    assert slug("Condition operators") == "condition-operators"
