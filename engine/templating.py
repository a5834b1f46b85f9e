"""The sandboxed Jinja environment used for every template of a flow.

Every string a designer writes is a template rendered in Jinja's
`ImmutableSandboxedEnvironment` with `StrictUndefined`: an undefined name is an
error, never an empty string, so a typo cannot silently send a contact down the
wrong branch. What a contact types reaches templates only as data (`input.text`,
`vars.*`); it is never itself compiled as a template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.operators import OPERATORS

#: The names every template may use (DESIGN.md, "Flow YAML").
CONTEXT_NAMES = frozenset({"contact", "vars", "input", "steps", "flow", "now"})

#: Compiled flow strings kept per Templates (flow files hold a bounded set).
_CACHE_LIMIT = 4096

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class TemplateFailure(Exception):
    """A template failed to compile or render.

    Attributes:
        source: The template text (or prompt file name).
        reason: What Jinja said.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{reason} (in template {source!r})")
        self.source = source
        self.reason = reason


class Templates:
    """Compiles and renders flow strings and prompt files.

    Args:
        prompts_dir: The folder holding ``*.j2`` prompt files, or None.
        env_names: The environment variables ``http`` steps may read as
            ``{{ env.NAME }}`` (the operator's ``HTTP_ENV_ALLOWLIST``), for validation.
    """

    def __init__(
        self, prompts_dir: Path | None = None, env_names: frozenset[str] = frozenset()
    ) -> None:
        self.prompts_dir = prompts_dir
        self._cache: dict[str, Template] = {}
        self._expressions: dict[str, Any] = {}
        self.env_names = env_names
        #: Checks of filters whose input is a template in another language, by
        #: filter name: ``check(text)`` lists what is wrong with `text` (the
        #: ``liquid`` filter's Liquid source: integrations/liquid.py).
        self.literal_checks: dict[str, Callable[[str], list[str]]] = {}
        self.env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            loader=FileSystemLoader(str(prompts_dir)) if prompts_dir else None,
        )
        # Studio's Split Based On operators: `vars.area is matches_any_of(['sleep'])`.
        self.env.tests.update(OPERATORS)

    def _compiled(self, source: str) -> Template:
        """The compiled template of a flow string, compiled once per process.

        Flow strings come from flow files (a bounded set), so the cache does
        not grow with traffic; compiling on every render cost a turn more CPU
        than the rest of the engine together.
        """
        template = self._cache.get(source)
        if template is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            template = self._cache[source] = self.env.from_string(source)
        return template

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        """Render a template string.

        Raises:
            TemplateFailure: a syntax error or an undefined name.
        """
        try:
            return self._compiled(source).render(context)
        except Exception as error:  # a template may raise anything: `{{ 1 / 0 }}`
            raise TemplateFailure(source, _reason(error)) from error

    def render_prompt(self, name: str, context: Mapping[str, Any]) -> str:
        """Render the prompt file `name` (relative to the prompts folder).

        Raises:
            TemplateFailure: the file is missing, or fails to compile or render.
        """
        try:
            return self.env.get_template(name).render(context).strip()
        except Exception as error:  # a template may raise anything: `{{ 1 / 0 }}`
            raise TemplateFailure(name, f"{type(error).__name__}: {error}") from error

    def evaluate(self, source: Any, context: Mapping[str, Any], *, bare: bool = False) -> Any:
        """The value of a value string, native type kept.

        ``"{{ vars.count + 1 }}"`` gives an int; ``"Hi {{ name }}"`` renders to a
        string; a plain string is itself (with `bare`, an expression: the
        form of conditions). Non-string values (numbers, lists from YAML) are
        returned as they are.

        Raises:
            TemplateFailure: a syntax error or an undefined name.
        """
        if not isinstance(source, str):
            return source
        expression = expression_of(source, bare=bare)
        if expression is None and "{" not in source:
            return source
        if expression is None:
            return self.render(source, context)
        try:
            compiled = self._expressions.get(expression)
            if compiled is None:
                if len(self._expressions) >= _CACHE_LIMIT:
                    self._expressions.clear()
                compiled = self.env.compile_expression(expression, undefined_to_none=False)
                self._expressions[expression] = compiled
            value = compiled(**context)
        except Exception as error:  # a template may raise anything: `{{ 1 / 0 }}`
            raise TemplateFailure(source, _reason(error)) from error
        if isinstance(value, StrictUndefined):
            raise TemplateFailure(source, f"{expression.strip()!r} is undefined")
        return value

    def condition(self, source: str, context: Mapping[str, Any]) -> bool:
        """Whether a condition holds; rendered text ``"true"``/``"false"`` count too.

        Raises:
            TemplateFailure: as `evaluate`.
        """
        value = self.evaluate(source, context, bare=True)
        if isinstance(value, str):
            return value.strip().lower() not in {"", "false", "no", "0", "none"}
        return bool(value)

    def parse(self, source: str, *, bare: bool = False) -> nodes.Template:
        """The Jinja syntax tree of a flow string (or of its expression).

        Raises:
            TemplateFailure: a syntax error.
        """
        expression = expression_of(source, bare=bare)
        text = source if expression is None else "{{ " + expression + " }}"
        try:
            tree = self.env.parse(text)
        except TemplateError as error:
            raise TemplateFailure(source, str(error)) from error
        unknown = self.unknown_filters_and_tests(tree)
        if unknown:
            raise TemplateFailure(source, unknown)
        return tree

    def unknown_filters_and_tests(self, tree: nodes.Template) -> str | None:
        """What a syntax tree uses that the environment lacks (Jinja says so only
        when it compiles), e.g. ``no filter named 'shout'``; None when nothing."""
        for node in tree.find_all((nodes.Filter, nodes.Test)):
            known = self.env.filters if isinstance(node, nodes.Filter) else self.env.tests
            if node.name not in known:
                kind = "filter" if isinstance(node, nodes.Filter) else "test"
                return f"no {kind} named {node.name!r}"
        return None

    def parse_prompt(self, name: str) -> nodes.Template:
        """The syntax tree of a prompt file.

        Raises:
            TemplateFailure: the file is missing or has a syntax error.
        """
        try:
            source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            tree = self.env.parse(source)
        except (TemplateError, AttributeError) as error:
            raise TemplateFailure(name, f"{type(error).__name__}: {error}") from error
        unknown = self.unknown_filters_and_tests(tree)
        if unknown:
            raise TemplateFailure(name, unknown)
        return tree


def _reason(error: Exception) -> str:
    """What went wrong, for a template error: Jinja's words, or the exception's type too."""
    return str(error) if isinstance(error, TemplateError) else f"{type(error).__name__}: {error}"


def expression_of(source: str, *, bare: bool = False) -> str | None:
    """The expression of a condition or value string, or None for a text template.

    ``"{{ x > 1 }}"`` → ``"x > 1"``; ``"x > 1"`` (no braces) → ``"x > 1"`` when
    `bare`, else None; ``"Hi {{ name }}"`` → None.
    """
    if "{%" in source or "{#" in source:
        return None
    match = _SINGLE_EXPRESSION.match(source)
    if match:
        inner = match.group("expr")
        return None if "{{" in inner or "}}" in inner else inner
    return source if bare and "{{" not in source else None
