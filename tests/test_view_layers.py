"""The API's views parse, call and answer: their SQL lives in the feature packages' queries.

(Issue 12, item 5: "Admin and API reads go through query modules, not ad-hoc SQL in
views.") A view may still commit or roll back the request's transaction.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VIEWS = [
    "web/api/public.py",
    "web/api/internal.py",
    "web/agent_api.py",
    "web/simulator/__init__.py",
    "web/home.py",
]
#: Session methods that run SQL; commit and rollback end the request's transaction.
SQL_CALLS = {"execute", "scalar", "scalars", "get", "query", "add", "delete", "merge", "flush"}


@pytest.mark.parametrize("path", VIEWS)
def test_views_hold_no_sql(path):
    tree = ast.parse((ROOT / path).read_text(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            modules += [alias.name for alias in getattr(node, "names", [])]
            found += [f"imports {name}" for name in modules if name.startswith("sqlalchemy")]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_CALLS
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "session"
        ):
            found.append(f"line {node.lineno}: session.{node.func.attr}(...)")
    assert not found, found
