"""``flask studio import``: a Twilio Studio flow definition as a Parley flow."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
import yaml
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from studio.export import export_studio
from studio.importer import StudioImportError, import_studio

studio_cli = AppGroup(
    "studio", help="Twilio Studio interop: import and export Studio flow definitions."
)


@studio_cli.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the flow here (flows/NAME.yaml); default: standard output.",
)
@click.option("--id", "flow_id", help="The flow id (default: from the output or source name).")
@click.option("--functions-url", help="Twilio Functions base URL run-function widgets call.")
@click.option(
    "--number",
    "numbers",
    multiple=True,
    metavar="ADDRESS",
    help="Bind the flow to a number it answers on (+1…, whatsapp:+1…; repeatable): "
    "any message there starts it, as on Studio's number.",
)
@click.option(
    "--subflow",
    "subflows",
    multiple=True,
    metavar="FW_SID=FLOW_ID",
    help="Map a Studio subflow to a Parley flow (repeatable).",
)
def import_command(
    source: Path,
    output: Path | None,
    flow_id: str | None,
    functions_url: str | None,
    numbers: tuple[str, ...],
    subflows: tuple[str, ...],
) -> None:
    """Import SOURCE (a Studio flow's JSON) and report each widget not imported.

    Exits 1 when SOURCE is not a Studio flow definition; widgets left out,
    and what the import changed to keep Studio's behaviour, are reported on
    standard error, and the rest is still written.
    """
    name = flow_id or (output or source).stem.split(".")[0]
    name = re.sub(r"[^a-z0-9_-]", "_", name.lower()).strip("_-") or "studio_flow"
    mapping = {}
    for item in subflows:
        sid, _, target = item.partition("=")
        if not sid or not target:
            raise click.UsageError(f"--subflow {item!r}: write FW_SID=FLOW_ID")
        mapping[sid] = target
    try:
        definition = json.loads(source.read_text(encoding="utf-8"))
        if not isinstance(definition, dict):
            raise StudioImportError("the file is not a JSON object")
        imported = import_studio(
            definition,
            name,
            functions_url=functions_url,
            subflows=mapping,
            numbers=list(numbers) or None,
        )
    except (json.JSONDecodeError, StudioImportError) as error:
        click.echo(f"{source}: {error}", err=True)
        sys.exit(1)
    header = (
        "# yaml-language-server: $schema=./flow.schema.json\n"
        f"# Imported from Twilio Studio ({source.name}) by `flask studio import`.\n"
    )
    text = header + yaml.safe_dump(imported.flow, sort_keys=False, allow_unicode=True, width=100)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} (flow {name!r})", err=True)
    for change in imported.changes:
        click.echo(f"changed: {change}", err=True)
    for warning in imported.warnings:
        click.echo(f"warning: {warning}", err=True)
    for skipped in imported.skipped:
        click.echo(f"not imported: {skipped.widget} ({skipped.type}): {skipped.reason}", err=True)
    imported_count = len(imported.flow["steps"])
    click.echo(f"{imported_count} steps, {len(imported.skipped)} widgets not imported", err=True)


@studio_cli.command("export")
@click.argument("flow_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the definition here (FLOW.studio.json); default: standard output.",
)
@with_appcontext
def export_command(flow_id: str, output: Path | None) -> None:
    """Write the loaded flow FLOW_ID as a Twilio Studio flow definition.

    Steps Studio cannot run call Parley's step endpoints under PUBLIC_BASE_URL.
    Exits 1 for an unknown flow.
    """
    parley = current_app.extensions["parley"]
    flow = parley.flows.get(flow_id)
    if flow is None:
        click.echo(f"no flow {flow_id!r} is loaded", err=True)
        sys.exit(1)
    base_url = parley.settings.public_base_url or "https://parley.example.org"
    text = json.dumps(export_studio(flow, base_url), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
