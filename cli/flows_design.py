"""``flask flows schema | graph | test``: the designer's tools beside ``flows validate``.

- ``schema`` writes the JSON Schema editors use (`engine.schema`).
- ``graph`` draws a flow as Mermaid and SVG (`engine.graph`).
- ``test`` runs the YAML conversation tests (`conversation.flow_tests`).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from engine.flow import Flow, FlowProblem, load_flow_files, parse_flow
from engine.graph import dot_nodes, edges, mermaid
from engine.schema import SCHEMA_FILE, modeline_problem, schema_text
from engine.templating import Templates
from engine.validate import file_problems, partial_problems, validate_flows


def validate_path(target: Path, templates: Templates) -> tuple[list[Flow], list[FlowProblem]]:
    """Every problem of a flow file or a folder of them, the schema line included.

    Returns:
        The flows that parsed, and every problem (errors and warnings) in file order.
    """
    paths = [target]
    if target.is_dir():
        flows, problems = load_flow_files(target)
        parsed = {flow.source for flow in flows}
        paths = [
            path
            for path in sorted([*target.glob("*.yaml"), *target.glob("*.yml")])
            if not path.name.startswith("_") and str(path) not in parsed
        ]
        for path in paths:  # shape errors: the graph checks of the steps that parsed
            problems = problems + partial_problems(
                path.read_text(encoding="utf-8"), str(path), templates
            )
    else:
        flow, problems = file_problems(target, templates)
        flows = [flow] if flow else []
    problems = problems + validate_flows(flows, templates, warnings=True)
    for flow in flows:
        path = Path(flow.source)
        missing = modeline_problem(flow, path.read_text(encoding="utf-8"))
        if missing is not None:
            problems.append(missing)
    problems.sort(key=lambda problem: (problem.source, problem.line))
    return flows, problems


def report_problems(flows: list[Flow], problems: list[FlowProblem]) -> None:
    """Print every problem; exit 1 when any is an error, else say the flows are valid."""
    for problem in problems:
        click.echo(str(problem))
    errors = sum(1 for problem in problems if not problem.warning)
    warnings = len(problems) - errors
    if problems:
        click.echo(
            f"{len(problems)} problem(s) found ({errors} error(s), {warnings} warning(s)).",
            err=True,
        )
    if errors:
        sys.exit(1)
    names = ", ".join(flow.id for flow in flows)
    click.echo(f"OK: {len(flows)} flow(s) valid ({names}).")


def render_svg(flow: Flow) -> str:
    """The flow drawn by Graphviz's ``dot`` as SVG text (the shapes of `engine.graph`).

    Raises:
        RuntimeError: Graphviz's ``dot`` program is not installed.
    """
    import graphviz

    graph = graphviz.Digraph(flow.id, graph_attr={"rankdir": "TB", "fontname": "Helvetica"})
    graph.attr("node", fontname="Helvetica", fontsize="11")
    graph.attr("edge", fontname="Helvetica", fontsize="10")
    graph.node(
        "__start__",
        "start",
        shape="circle",
        style="filled",
        fillcolor="#111827",
        fontcolor="white",
        width="0.5",
    )
    for node in dot_nodes(flow):
        graph.node(node.id, **node.attributes)
    graph.edge("__start__", flow.start)
    for edge in edges(flow):
        attributes = {"label": edge.label} if edge.label else {}
        if edge.failure:
            attributes["style"] = "dashed"
        graph.edge(edge.source, edge.target, **attributes)
    try:
        return graph.pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound as error:
        raise RuntimeError(
            "Graphviz's `dot` is not installed (Debian: apt-get install graphviz; "
            "macOS: brew install graphviz); use --no-svg for the Mermaid file only"
        ) from error


@click.command("schema")
@with_appcontext
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Where to write it (default: FLOWS_DIR/{SCHEMA_FILE}); '-' prints it.",
)
def schema_command(output: Path | None) -> None:
    """Write the JSON Schema of flow files, generated from the step kinds.

    Editors with the YAML language server use it through the first line of
    each flow file: ``# yaml-language-server: $schema=./flow.schema.json``.
    """
    text = schema_text()
    if output is not None and str(output) == "-":
        click.echo(text, nl=False)
        return
    target = output or Path(current_app.extensions["parley"].settings.flows_dir) / SCHEMA_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    click.echo(f"Wrote {target}.")


@click.command("graph")
@with_appcontext
@click.argument("flow_ref", metavar="FLOW")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The folder to write FLOW_ID.mmd and FLOW_ID.svg into.",
)
@click.option("--no-svg", is_flag=True, help="Write only the Mermaid file.")
def graph_command(flow_ref: str, out_dir: Path, no_svg: bool) -> None:
    """Draw FLOW (a flow id in FLOWS_DIR, or a flow file) as Mermaid and SVG.

    Steps are shaped by kind; transitions are labelled with their conditions.
    The SVG needs Graphviz's ``dot`` (Debian: ``apt-get install graphviz``).
    """
    path = Path(flow_ref)
    if not path.is_file():
        flows_dir = Path(current_app.extensions["parley"].settings.flows_dir)
        candidates = [flows_dir / f"{flow_ref}.yaml", flows_dir / f"{flow_ref}.yml"]
        path = next((candidate for candidate in candidates if candidate.is_file()), path)
    if not path.is_file():
        raise click.ClickException(f"no flow file {flow_ref!r} (a path, or an id in FLOWS_DIR)")
    flow, problems = parse_flow(path.read_text(encoding="utf-8"), str(path))
    if flow is None:
        for problem in problems:
            click.echo(str(problem), err=True)
        raise click.ClickException(f"{path} does not parse; run `flask flows validate {path}`")
    out_dir.mkdir(parents=True, exist_ok=True)
    mmd = out_dir / f"{flow.id}.mmd"
    mmd.write_text(mermaid(flow), encoding="utf-8")
    click.echo(f"Wrote {mmd}.")
    if no_svg:
        return
    svg = out_dir / f"{flow.id}.svg"
    try:
        svg.write_text(render_svg(flow), encoding="utf-8")
    except RuntimeError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Wrote {svg}.")


@click.command("test")
@with_appcontext
@click.argument(
    "path", required=False, type=click.Path(exists=True, path_type=Path), metavar="[PATH]"
)
@click.option(
    "--flows",
    "flows_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The folder of flows the tests run against (default: FLOWS_DIR).",
)
@click.option(
    "--against-version",
    "against",
    default=None,
    metavar="N",
    help="Run on an older version of each test's flow: N counts its stored versions, "
    "oldest first (1 = the first loaded), or give the version's hash (`flask flows status`).",
)
@click.option("--live", is_flag=True, help="Ask the configured model instead of the scripts.")
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Live: runs per test.",
)
@click.option(
    "--min-pass-rate",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Live: exit 1 when a test passes in fewer of its runs than this.",
)
@click.option(
    "--judge-model", default=None, help="Live: the model that judges (default: OPENAI_MODEL)."
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Live: write the runs as JUnit XML here (for CI).",
)
@click.option("--verbose", is_flag=True, help="Show the engine's log lines.")
def test_command(
    path: Path | None,
    flows_dir: Path | None,
    against: str | None,
    live: bool,
    repeat: int,
    min_pass_rate: float,
    judge_model: str | None,
    junit: Path | None,
    verbose: bool,
) -> None:
    """Run conversation tests (YAML) through the real runner; exit 1 on any failure.

    PATH is a test file or a folder of them (default: FLOWS_DIR/tests). Each
    test runs on its own throwaway SQLite database, with its scripted LLM
    outputs: nothing is sent and the app's database is not touched (only the
    results are kept there, for the console). With --live the contact's
    messages go to the configured model and the test's criteria (``live``,
    ``judge``) are checked instead of exact replies.
    """
    from conversation.flow_tests import FlowTestError, read_plan
    from engine.flow import FlowError
    from engine.validate import load_flows

    parley = current_app.extensions["parley"]
    runner = parley.runner
    try:
        if flows_dir is not None:
            flows = load_flows(flows_dir, runner.templates)  # with the app's filters
            runner = dataclasses.replace(runner, flows=flows)
        elif parley.flow_error is not None:
            raise parley.flow_error
    except FlowError as error:
        raise click.ClickException(f"the flows do not load:\n{error}") from error
    tests_dir = Path(flows_dir or parley.settings.flows_dir) / "tests"
    target = path or tests_dir
    if not target.exists():
        raise click.ClickException(f"no conversation tests at {target}")
    try:
        plan = read_plan(target)
    except FlowTestError as error:
        raise click.ClickException(str(error)) from error
    if not plan:
        click.echo(f"no conversation tests found in {target}", err=True)
        sys.exit(1)
    if against is not None:
        runner = _runner_at_version(runner, against, {spec.flow for _, spec in plan if spec.flow})
    logger = logging.getLogger("parley")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL)
    try:
        if live:
            model = judge_model or parley.settings.openai_model
            ok = _live(plan, runner, tests_dir, repeat, min_pass_rate, model, junit)
        else:
            ok = _scripted(plan, runner, tests_dir)
    finally:
        logger.setLevel(level)
    if not ok:
        sys.exit(1)


def _scripted(plan: list, runner, tests_dir: Path) -> bool:
    """Run the plan with the scripted answers, print and store the results."""
    from conversation import test_results
    from conversation.flow_tests import run_conversation
    from models import db

    results = [
        run_conversation(conversation, runner, f"{path}: {conversation.name}")
        for path, conversation in plan
    ]
    failed = [result for result in results if not result.passed]
    for result in results:
        click.echo(f"{'ok  ' if result.passed else 'FAIL'} {result.name}")
    for result in failed:
        click.echo(f"\n{result.name}\n{result.report}")
    click.echo(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    test_results.record(
        db.session,
        tests_dir,
        "scripted",
        [
            test_results.Outcome.scripted(path, spec, result)
            for (path, spec), result in zip(plan, results, strict=True)
        ],
    )
    return not failed


def _live(
    plan: list,
    runner,
    tests_dir: Path,
    repeat: int,
    min_pass_rate: float,
    judge_model: str,
    junit: Path | None,
) -> bool:
    """Run the plan against the configured model, print and store the results."""
    from conversation import live_tests, test_results
    from models import db

    live = live_tests.LiveRunner(runner, runner.llm, judge_model)
    results = []
    for path, spec in plan:
        result = live.run(f"{path}: {spec.name}", spec, repeat)
        results.append(result)
        low = result.pass_rate < min_pass_rate
        passed = sum(run.passed for run in result.runs)
        click.echo(
            f"{'FAIL' if low else 'ok  '} {result.name}: passed {passed} of {len(result.runs)} "
            f"run(s) ({result.pass_rate:.0%})"
        )
        for run in result.runs:
            for check in run.checks:
                if check.outcome != "pass" or check.criterion.startswith("judge:"):
                    click.echo(f"       run {run.number}: {live_tests.describe(check)}")
    rates = live_tests.step_rates(results)
    if rates:
        click.echo("\nPass rate per step:")
        for step, (passed, total) in rates.items():
            click.echo(f"  {step:<32} {passed}/{total} ({passed / total:.0%})")
    flow_usage, judge_usage = live_tests.usage_of(results)
    click.echo(f"\nTokens: flow {_tokens(flow_usage)}; judge {_tokens(judge_usage)}")
    costs = [flow_usage.cost(), judge_usage.cost()]
    if None in costs:
        click.echo("Cost: unknown (a model without a price in conversation/live_tests.py)")
    else:
        click.echo(f"Cost: ${sum(c for c in costs if c is not None):.4f}")
    errors = sum(len(run.errors) for result in results for run in result.runs)
    low = [result for result in results if result.pass_rate < min_pass_rate]
    click.echo(
        f"\n{len(results) - len(low)} of {len(results)} test(s) at or above the minimum pass "
        f"rate {min_pass_rate:.0%}; {errors} model error(s)"
    )
    if junit is not None:
        live_tests.write_junit(results, junit)
        click.echo(f"Wrote {junit}.")
    test_results.record(
        db.session,
        tests_dir,
        "live",
        [
            test_results.Outcome(
                path,
                spec.name,
                spec.flow,
                result.pass_rate >= min_pass_rate,
                result.pass_rate,
                len(result.runs),
                result.flow_version,
                "\n".join(
                    f"run {run.number}: {live_tests.describe(check)}"
                    for run in result.runs
                    for check in run.checks
                    if check.outcome != "pass"
                ),
            )
            for (path, spec), result in zip(plan, results, strict=True)
        ],
    )
    return not low


def _tokens(usage) -> str:
    prompt, completion = usage.total
    models = ", ".join(sorted(usage.tokens)) or "no calls"
    return f"{prompt} in + {completion} out ({models})"


def _runner_at_version(runner, version: str, flow_ids: set[str]):
    """`runner` with each flow in `flow_ids` at the stored `version` (a number or a hash)."""
    from conversation.flow_tests import with_flow_version
    from conversation.versions import stored_versions
    from models import db

    try:
        stored = stored_versions(db.session)
    finally:
        db.session.rollback()
    for flow_id in sorted(flow_ids):
        versions = [row for row in stored if row.flow_id == flow_id]
        if version.isdigit() and len(version) < 6:
            number = int(version)
            row = versions[number - 1] if 1 <= number <= len(versions) else None
        else:
            row = next((row for row in versions if row.version.startswith(version)), None)
        if row is None:
            listed = ", ".join(f"{i} ({row.version})" for i, row in enumerate(versions, 1))
            raise click.ClickException(
                f"flow {flow_id} has no stored version {version}; stored: {listed or 'none'}"
            )
        flow, problems = parse_flow(row.text, f"{flow_id}@{row.version}")
        if flow is None:
            raise click.ClickException(
                f"version {row.version} of {flow_id} does not parse any more:\n"
                + "\n".join(map(str, problems))
            )
        click.echo(
            f"Flow {flow_id}: version {row.version} (loaded {row.loaded_at:%Y-%m-%d %H:%M})."
        )
        runner = with_flow_version(runner, flow)
    return runner
