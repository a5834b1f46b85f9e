"""Flask stays at the edges, and settings are read from the typed `config.Settings` only.

These tests read the source tree, so that a change that breaks the layering
fails CI, whoever makes it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from config import Settings

ROOT = Path(__file__).resolve().parent.parent

#: Where Flask may be used: the HTTP edges, the commands, the Celery entry point,
#: the factory and the ``init_app``-style wiring.
EDGES = ("web/", "cli/", "tasks/", "app.py")
WIRING = (
    "models/__init__.py",  # init_db: Flask-SQLAlchemy's `db` and Flask-Migrate
)
#: Not part of the app: Alembic's environment (run by ``flask db``), benchmarks
#: (a bare Flask app to compare with), the tests themselves.
OUTSIDE = frozenset({"migrations", "bench", "tests"})

#: Flask's globals: what only the edges and the wiring may use.
FLASK_NAMES = frozenset({"current_app", "has_app_context", "has_request_context"})


def _sources(root: Path) -> Iterator[tuple[str, ast.Module]]:
    """The app's Python files under `root` (hidden folders such as .venv left out)."""
    for top in sorted(root.iterdir()):
        if top.name.startswith(".") or top.name in OUTSIDE:
            continue
        paths = [top] if top.suffix == ".py" else sorted(top.rglob("*.py")) if top.is_dir() else []
        for path in paths:
            relative = path.relative_to(root).as_posix()
            yield relative, ast.parse(path.read_text(encoding="utf-8"), filename=relative)


def _is_flask(module: str) -> bool:
    top = module.split(".")[0]
    return top == "flask" or top.startswith("flask_")


def flask_uses(root: Path) -> list[str]:
    """Every use of Flask outside the edges and the wiring, as ``path:line: what``."""
    found = []
    for relative, tree in _sources(root):
        if relative.startswith(EDGES) or relative in WIRING:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [
                    f"{relative}:{node.lineno}: import {alias.name}"
                    for alias in node.names
                    if _is_flask(alias.name)
                ]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if _is_flask(node.module):
                    found.append(f"{relative}:{node.lineno}: from {node.module} import ...")
                elif node.module == "models" and any(a.name == "db" for a in node.names):
                    # Flask-SQLAlchemy's session of the current app context.
                    found.append(f"{relative}:{node.lineno}: from models import db")
            elif isinstance(node, ast.Name) and node.id in FLASK_NAMES:
                found.append(f"{relative}:{node.lineno}: {node.id}")
    return sorted(set(found))


def settings_lookups(root: Path) -> list[str]:
    """Every look-up of a setting by its variable name (``config.get("REDIS_URL")``,
    ``app.config["FLOWS_DIR"]``, ``os.environ["OPENAI_API_KEY"]``) outside config.py."""
    names = Settings.variable_names()
    found = []
    for relative, tree in _sources(root):
        if relative == "config.py":
            continue
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                # (Storing is how app.py gives Flask its own SECRET_KEY.)
                key = node.slice
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"get", "setdefault", "pop"}
                and node.args
            ):
                key = node.args[0]
            if isinstance(key, ast.Constant) and key.value in names:
                found.append(f"{relative}:{node.lineno}: {ast.unparse(node)}")
    # Templates see Flask's `config` too: {{ config.HANDOVER_QUEUE }}.
    in_template = re.compile(r"""\bconfig(?:\.(\w+)|\[["'](\w+)["']\])""")
    for path in sorted((root / "web").rglob("*.html")) if (root / "web").is_dir() else []:
        relative = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in in_template.finditer(line):
                if (match.group(1) or match.group(2)) in names:
                    found.append(f"{relative}:{number}: {match.group(0)}")
    return sorted(found)


def test_nothing_below_the_edges_uses_flask():
    assert flask_uses(ROOT) == [], (
        "Services get their collaborators and settings from the container that "
        "create_app builds (app.Parley), never from Flask: pass what they need in."
    )


def test_settings_are_read_from_the_typed_settings_only():
    assert settings_lookups(ROOT) == [], (
        "Read settings from the container's typed settings "
        '(current_app.extensions["parley"].settings.turn_lease_seconds), not by name: '
        "Flask's app.config no longer holds them."
    )


def test_the_checks_find_what_they_look_for(tmp_path: Path):
    (tmp_path / "handover").mkdir()
    (tmp_path / "handover" / "hooks.py").write_text(
        "from flask import current_app, has_app_context\n"
        "import flask_login\n"
        "from models import db\n"
        "def f():\n"
        "    if has_app_context():\n"
        '        return current_app.config.get("AGENT_WEBHOOK_URL")\n'
    )
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "home.py").write_text(
        "from flask import current_app\n"
        'token = current_app.config["TWILIO_AUTH_TOKEN"]\n'
        'current_app.config["SECRET_KEY"] = "s"\n'
        'os.environ.get("REDIS_URL")\n'
    )
    (tmp_path / "web" / "templates").mkdir()
    (tmp_path / "web" / "templates" / "page.html").write_text(
        "<p>{{ config.HANDOVER_QUEUE }} {{ config['OPENAI_MODEL'] }} {{ config.DEBUG }}</p>\n"
    )

    assert flask_uses(tmp_path) == [
        "handover/hooks.py:1: from flask import ...",
        "handover/hooks.py:2: import flask_login",
        "handover/hooks.py:3: from models import db",
        "handover/hooks.py:5: has_app_context",
        "handover/hooks.py:6: current_app",
    ]
    assert settings_lookups(tmp_path) == [
        "handover/hooks.py:6: current_app.config.get('AGENT_WEBHOOK_URL')",
        "web/home.py:2: current_app.config['TWILIO_AUTH_TOKEN']",
        "web/home.py:4: os.environ.get('REDIS_URL')",
        "web/templates/page.html:1: config.HANDOVER_QUEUE",
        "web/templates/page.html:1: config['OPENAI_MODEL']",
    ]
