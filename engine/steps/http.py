"""``http``: call an outside API, like Studio's Make HTTP Request widget.

```yaml
lookup:
  http:
    method: POST
    url: "https://api.example.org/v1/orders/{{ vars.order_id }}"
    headers:
      Authorization: "Bearer {{ env.SHOP_API_TOKEN }}"   # env: only names in HTTP_ENV_ALLOWLIST
    json:                          # or `form:`; each value a template, types kept
      phone: "{{ contact.phone }}"
      count: "{{ vars.count }}"
    timeout: 5                     # seconds, at most 10
  save_as: order                   # vars.order = the parsed JSON answer
  success: show_order              # a 2xx answer
  fail: sorry                      # any other status, a timeout, no connection
```

The body is built from data: each value is rendered on its own and keeps its
type (``"{{ vars.count }}"`` stays a number), so nothing a contact typed is ever
pasted into JSON text. ``query:`` adds parameters to the URL's query string (as
Studio sends a GET request's parameters). ``json_text:`` is a JSON body written
as text (Studio's *Request Body*, from imported flows): it is rendered, then
parsed; text that is not JSON fails the step. The answer is at
``steps.<id>.status``, ``steps.<id>.response`` (the parsed JSON, or None) and,
when the answer is not JSON, ``steps.<id>.body`` (the raw text). Secrets reach a request only
as ``{{ env.NAME }}``, and only for the names the operator lists in
``HTTP_ENV_ALLOWLIST``; ``env`` exists in no other step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.ports import HTTPError
from engine.steps.base import Continue, StepBase, StepContext, StepError, StepResult, TemplateUse

log = logging.getLogger("parley.engine")

#: The longest an ``http`` step may wait for an answer: a turn must stay within
#: Twilio's 15-second webhook timeout.
MAX_TIMEOUT = 10.0

#: The name ``http`` step templates see besides the usual ones.
ENV_NAMES = frozenset({"env"})


class HTTPRequestSpec(BaseModel):
    """The request of an ``http`` step."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    """The HTTP method."""
    url: str
    """The URL, a template; ``http://`` or ``https://``."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Request headers, each a template; secrets only as ``{{ env.NAME }}``."""
    json_body: dict[str, Any] | None = Field(default=None, alias="json")
    """A JSON body: each value a template (its type kept) or a plain value."""
    form: dict[str, str] | None = None
    """A form body (``application/x-www-form-urlencoded``): each value a template."""
    json_text: str | None = None
    """A JSON body written as text (a template), parsed after it is rendered:
    Studio's *Request Body* of an imported *Make HTTP Request*."""
    query: dict[str, str] = Field(default_factory=dict)
    """Query string parameters added to the URL, each value a template."""
    timeout: float = Field(default=5.0, gt=0, le=MAX_TIMEOUT)
    """Seconds to wait for the answer (at most 10)."""

    @model_validator(mode="after")
    def _one_body(self) -> HTTPRequestSpec:
        bodies = [self.json_body, self.form, self.json_text]
        if sum(body is not None for body in bodies) > 1:
            raise ValueError("send either `json` or `form` (or `json_text`), not several")
        if any(body is not None for body in bodies) and self.method == "GET":
            raise ValueError("a GET request has no body: use POST, PUT or PATCH")
        return self


class HTTPStep(StepBase):
    """Send one HTTP request and route on the answer."""

    kind: ClassVar[str] = "http"

    http: HTTPRequestSpec
    """The request."""
    save_as: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The variable that keeps the parsed JSON answer (on success)."""
    success: str | None = None
    """The step after a 2xx answer; ``next`` when absent."""
    fail: str | None = None
    """The step after any other answer, a timeout or no connection; without it
    the step fails and the contact gets the flow's fallback."""

    def enter(self, context: StepContext) -> StepResult:
        """Build and send the request, store the answer, pick the transition."""
        values = context.template_context(env=dict(context.env))
        spec = self.http
        url = context.templates.render(spec.url, values).strip()
        headers = {
            name: context.templates.render(source, values) for name, source in spec.headers.items()
        }
        body_json = _build(spec.json_body, context, values) if spec.json_body is not None else None
        form = (
            {name: context.templates.render(source, values) for name, source in spec.form.items()}
            if spec.form is not None
            else None
        )
        host = urlsplit(url).hostname or "?"  # the host only: a URL may carry a secret
        if spec.query:
            query = {
                name: context.templates.render(source, values)
                for name, source in spec.query.items()
            }
            url += ("&" if urlsplit(url).query else "?") + urlencode(query)
        if spec.json_text is not None:
            text = context.templates.render(spec.json_text, values)
            try:
                body_json = json.loads(text)
            except ValueError as error:
                context.execution.step_results[context.step_id] = {
                    "status": None,
                    "response": None,
                    "error": f"the JSON body does not parse: {error}",
                }
                return self._failed(context, f"{spec.method} {host}: the JSON body does not parse")
        left = context.time_left()
        timeout = spec.timeout if left is None else min(spec.timeout, left)
        try:
            response = context.http.request(
                spec.method, url, headers=headers, json=body_json, form=form, timeout=timeout
            )
        except HTTPError as error:
            log.warning(
                "flow.http.failed step=%s method=%s host=%s reason=%s",
                context.step_id,
                spec.method,
                host,
                type(error).__name__,
            )
            context.execution.step_results[context.step_id] = {
                "status": None,
                "response": None,
                "error": str(error),
            }
            return self._failed(context, f"{spec.method} {host}: no answer ({error})")
        answer: dict[str, Any] = {"status": response.status, "response": response.json}
        if response.json is None and response.text:
            answer["body"] = response.text  # not JSON: the raw text, as Studio keeps it
        context.execution.step_results[context.step_id] = answer
        log.info(
            "flow.http.answered step=%s method=%s host=%s status=%d",
            context.step_id,
            spec.method,
            host,
            response.status,
        )
        if not 200 <= response.status < 300:
            return self._failed(context, f"{spec.method} {host} answered {response.status}")
        if self.save_as:
            context.execution.variables[self.save_as] = response.json
        return Continue(self.success)

    def _failed(self, context: StepContext, reason: str) -> StepResult:
        if self.fail is None:
            raise StepError(context.step_id, reason)
        return Continue(self.fail)

    def targets(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """``next``, ``success`` and ``fail``."""
        yield from super().targets()
        if self.success:
            yield ("success",), self.success
        if self.fail:
            yield ("fail",), self.fail

    def template_uses(self) -> Iterator[TemplateUse]:
        """URL, headers and body values (which also see ``env``), and the transitions."""
        yield TemplateUse(("http", "url"), self.http.url, extra_names=ENV_NAMES)
        for name, source in self.http.headers.items():
            yield TemplateUse(("http", "headers", name), source, extra_names=ENV_NAMES)
        if self.http.json_body is not None:
            yield from _uses(self.http.json_body, ("http", "json"))
        for name, source in (self.http.form or {}).items():
            yield TemplateUse(("http", "form", name), source, extra_names=ENV_NAMES)
        for name, source in self.http.query.items():
            yield TemplateUse(("http", "query", name), source, extra_names=ENV_NAMES)
        if self.http.json_text is not None:
            yield TemplateUse(("http", "json_text"), self.http.json_text, extra_names=ENV_NAMES)
        yield from super().template_uses()

    def variables_set(self) -> set[str]:
        """``save_as``, if any."""
        return {self.save_as} if self.save_as else set()


def _build(value: Any, context: StepContext, values: dict[str, Any]) -> Any:
    """A JSON body value: strings evaluated (types kept), mappings and lists walked."""
    if isinstance(value, dict):
        return {key: _build(item, context, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_build(item, context, values) for item in value]
    return context.templates.evaluate(value, values)


def _uses(value: Any, path: tuple[str | int, ...]) -> Iterator[TemplateUse]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _uses(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _uses(item, (*path, index))
    elif isinstance(value, str):
        yield TemplateUse(path, value, extra_names=ENV_NAMES)
