"""`selflengthen gc`: delete the model servers and TrainJobs of runs that are over (the janitor)."""

from __future__ import annotations

import typer

from selflengthen.cli.common import handle_errors


@handle_errors
def gc_command(
    namespace: str = typer.Option(
        ..., "--namespace", "-n", envvar="SELFLENGTHEN_NAMESPACE", help="namespace of the runs' objects (pipeline.namespace)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be deleted, delete nothing"),
) -> None:
    """Delete servers and TrainJobs whose run ended, was deleted or terminated, or whose lease expired;
    one line per object. Needs no running pipeline: the chart runs it as a CronJob."""
    from selflengthen.cluster.janitor import collect_garbage

    decisions = collect_garbage(namespace, dry_run=dry_run)
    for decision in decisions:
        typer.echo(decision.line(dry_run))
    deleted = sum(decision.delete for decision in decisions)
    typer.echo(f"{deleted} of {len(decisions)} object(s) {'to delete' if dry_run else 'deleted'} in namespace {namespace}")


def register(app: typer.Typer) -> None:
    app.command("gc")(gc_command)
