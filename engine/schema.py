"""The JSON Schema of flow files, generated from the `Flow` model and the step-kind union.

Editors with the YAML language server (VS Code's YAML extension, and others)
read it through the first line of each flow file::

    # yaml-language-server: $schema=./flow.schema.json

and then complete keys, show each field's docstring and underline mistakes as
the designer types. The schema is never written by hand: ``flask flows schema``
writes ``flows/flow.schema.json`` from `engine.flow.Flow`, whose ``steps`` are
the `engine.steps.STEP_KINDS` union, so a new step kind appears in it by itself.

What the generator adds to pydantic's schema:

- the docstring under each field as its ``description`` (with or without the
  model's ``use_attribute_docstrings``), so hovering a key explains it;
- each step kind's own key is required in its branch of the ``oneOf``, so a
  step that names no kind, or two, matches no branch;
- a transition is ``{if, then}`` or ``{else}``, not a mix.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from engine.flow import Flow, FlowProblem
from engine.steps import STEP_KINDS
from engine.steps.base import Transition

#: The JSON Schema dialect of the generated schema (pydantic's own target).
DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: The comment that points the YAML language server at the schema; flow files
#: in ``flows/`` start with it.
MODELINE = "# yaml-language-server: $schema=./flow.schema.json"

#: The schema's file name beside the flows.
SCHEMA_FILE = "flow.schema.json"

_KINDS = {kind: kind.kind for kind in STEP_KINDS}


@cache
def field_docstrings(cls: type) -> dict[str, str]:
    """The string literal under each annotated field of a class body, by field name.

    Only the class's own body is read (base classes are read when their own
    schema is built); a class whose source cannot be read gives ``{}``.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for statement, following in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _plain(text: str) -> str:
    """reStructuredText's ````code```` as Markdown's `` `code` ``, wrapped lines joined."""
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return re.sub(r"(?<!\n)\n(?!\n)", " ", text)


#: A duration as `engine.steps.base.parse_duration` reads it (ECMA-262 syntax, as
#: JSON Schema's ``pattern`` is): ``30s``, ``30m``, ``24h``, ``2d``, ``1h30m``.
DURATION_PATTERN = r"^(?=\s*\d)\s*(\d+[dD])?(\d+[hH])?(\d+[mM])?(\d+[sS])?\s*$"


class FlowSchemaGenerator(GenerateJsonSchema):
    """pydantic's JSON Schema generator, with the additions the module docstring lists."""

    def timedelta_schema(self, schema: Any) -> dict[str, Any]:
        """Durations as designers write them (``30m``, ``24h``) or seconds, not ISO 8601."""
        return {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "integer", "minimum": 1},
            ]
        }

    def model_schema(self, schema: Any) -> dict[str, Any]:
        """The object schema of one model, with descriptions and the flow-language rules."""
        json_schema = super().model_schema(schema)
        cls = schema.get("cls")
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return json_schema
        target = json_schema
        properties = target.get("properties", {})
        for klass in reversed(cls.__mro__):
            if not (isinstance(klass, type) and issubclass(klass, BaseModel)):
                continue
            for name, doc in field_docstrings(klass).items():
                field = cls.model_fields.get(name)
                key = (field.alias or name) if field else name
                prop = properties.get(key)
                if prop is None:
                    continue
                if "$ref" in prop:
                    # Before draft 2019-09 the keywords beside a $ref are ignored: wrap it.
                    prop["allOf"] = [{"$ref": prop.pop("$ref")}]
                prop.setdefault("description", doc)
        for prop in properties.values():
            if "description" in prop:
                prop["description"] = _plain(prop["description"])
                prop.setdefault("markdownDescription", prop["description"])
        if "description" in target:
            target["description"] = _plain(target["description"])
            target.setdefault("markdownDescription", target["description"])
        if cls in _KINDS:
            required = target.setdefault("required", [])
            if _KINDS[cls] not in required:
                required.insert(0, _KINDS[cls])
        if cls is Transition:
            target["oneOf"] = [{"required": ["if", "then"]}, {"required": ["else"]}]
        return json_schema


def has_modeline(text: str) -> bool:
    """Whether a flow file's leading comments point the YAML language server at a schema."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            return False
        if re.match(r"#\s*yaml-language-server:\s*\$schema=\S+", stripped):
            return True
    return False


def modeline_problem(flow: Flow, text: str) -> FlowProblem | None:
    """A warning for a flow file that does not name the schema in its first comments."""
    if has_modeline(text):
        return None
    return FlowProblem(
        flow.source,
        1,
        "no `# yaml-language-server: $schema=...` line: editors cannot check this file",
        f"add `{MODELINE}` as the first line (the path is relative to the file)",
        flow_id=flow.id,
        warning=True,
    )


def flow_schema() -> dict[str, Any]:
    """The JSON Schema of a flow file (a dict, ready for `json.dumps`)."""
    schema = Flow.model_json_schema(schema_generator=FlowSchemaGenerator)
    return {
        "$schema": DIALECT,
        "title": "Parley flow",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def schema_text() -> str:
    """The schema as the committed file holds it: two-space indent, final newline."""
    return json.dumps(flow_schema(), indent=2, ensure_ascii=False) + "\n"
