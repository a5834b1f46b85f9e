"""docs/flow-language.md: every example parses as steps, and every kind and operator is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from engine.operators import OPERATORS
from engine.steps import KIND_NAMES, Step

DOC = Path(__file__).resolve().parent.parent / "docs" / "flow-language.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", TEXT, flags=re.DOTALL)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example-{i}" for i in range(len(BLOCKS))])
def test_every_example_is_a_valid_step(block):
    steps = yaml.safe_load(block)
    adapter = TypeAdapter(Step)
    for step_id, raw in steps.items():
        assert adapter.validate_python(raw).kind, step_id


def test_every_step_kind_and_operator_has_a_section_and_an_example():
    for kind in KIND_NAMES:
        assert f"### {kind}\n" in TEXT, kind
        assert any(re.search(rf"^  {kind}:", block, flags=re.MULTILINE) for block in BLOCKS), kind
    for name in OPERATORS:
        assert f"| `{name}` | `" in TEXT, name
