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
@click.option("--verbose", is_flag=True, help="Show the engine's log lines.")
def test_command(path: Path | None, flows_dir: Path | None, verbose: bool) -> None:
    """Run conversation tests (YAML) through the real runner; exit 1 on any failure.

    PATH is a test file or a folder of them (default: FLOWS_DIR/tests). Each
    test runs on its own throwaway SQLite database, with its scripted LLM
    outputs: nothing is sent and the app's database is not touched.
    """
    from conversation.flow_tests import FlowTestError, run_test_files
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
    target = path or Path(flows_dir or parley.settings.flows_dir) / "tests"
    if not target.exists():
        raise click.ClickException(f"no conversation tests at {target}")
    logger = logging.getLogger("parley")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL)
    try:
        results = run_test_files(target, runner)
    except FlowTestError as error:
        raise click.ClickException(str(error)) from error
    finally:
        logger.setLevel(level)
    failed = [result for result in results if not result.passed]
    for result in results:
        click.echo(f"{'ok  ' if result.passed else 'FAIL'} {result.name}")
    for result in failed:
        click.echo(f"\n{result.name}\n{result.report}")
    click.echo(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed or not results:
        if not results:
            click.echo(f"no conversation tests found in {target}", err=True)
        sys.exit(1)
