"""``eventcore projections status|rebuild|dead-letters``: drive your projections.

The projections come from ``--app module:attr`` (see :func:`runner_for`).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from eventcore.cli._store import Failure, Options, open_store, run, store_options
from eventcore.memory import MemoryStore
from eventcore.store import ProjectionStore


async def _resolve(value: Any, *args: Any) -> Any:
    """``value``, or what calling it (sync or async) returns."""
    if callable(value) and not hasattr(value, "name") and not hasattr(value, "status"):
        value = value(*args) if _takes_args(value, args) else value()
        if inspect.isawaitable(value):
            value = await value
    return value


def _takes_args(fn: Any, args: tuple[Any, ...]) -> bool:
    if not args:
        return False
    try:
        inspect.signature(fn).bind(*args)
    except (TypeError, ValueError):
        return False
    return True


@asynccontextmanager
async def runner_for(opts: Options) -> AsyncIterator[Any]:
    """A :class:`~eventcore.projection.ProjectionRunner` for the ``--app`` object.

    The app object (``module:attr``; a zero-argument callable is called first) is one of:

    - a ``ProjectionRunner`` (used as it is; ``--dsn`` is then ignored);
    - a list of projections;
    - an object with ``projections`` (a list, or a callable taking the store) and
      optionally ``store`` (a store or a factory, used when no ``--dsn`` is given) and
      ``checkpoints`` (a CheckpointStore, or a callable taking the store; the default is
      PostgreSQL tables next to a PostgreSQL store, else memory).
    """
    from eventcore.projection import ProjectionRunner

    if not opts.app:
        raise click.UsageError(
            "projections come from your app: pass --app module:attr (or set EVENTCORE_APP)"
        )
    app = opts.app_object()
    if isinstance(app, ProjectionRunner):
        yield app
        return
    projections = app if isinstance(app, list | tuple) else getattr(app, "projections", None)
    if projections is None:
        raise click.BadParameter(
            f"{opts.app} has no `projections` (a list of projections)", param_hint="--app"
        )
    async with open_store(opts) as opened:
        store = opened.memory if opened.memory is not None else opened.store
        if not isinstance(store, MemoryStore | ProjectionStore):
            raise Failure(f"projections cannot follow {opened.label} (no wait_for_append)")
        projections = await _resolve(projections, store)
        checkpoints = await _resolve(getattr(app, "checkpoints", None), store)
        options = getattr(app, "runner_options", None) or {}
        yield ProjectionRunner(store, list(projections), checkpoints=checkpoints, **options)


@click.group()
def projections() -> None:
    """Inspect and rebuild the projections of your app (--app module:attr).

    \b
    The --app object is one of:
      - an object with `projections` (a list, or a callable taking the store) and
        optionally `store` (used without --dsn) and `checkpoints`;
      - a list of projections;
      - a ProjectionRunner.
    A zero-argument callable is called first.

    \b
    Examples:
      eventcore projections status --app myapp.ops:app --dsn postgresql://app@db/app
      eventcore projections rebuild balances --app myapp.ops:app --yes
    """


@projections.command()
@store_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per projection.")
def status(dsn: str | None, schema: str, app: str | None, as_json: bool) -> None:
    """Show every projection: state, position, head, lag (events and seconds).

    \b
    Examples:
      eventcore projections status --app myapp.ops:app
      eventcore projections status --app myapp.ops:app --json | jq .lag_events
    """

    async def go() -> None:
        async with runner_for(Options(dsn, schema, app)) as runner:
            statuses = await runner.status()
            letters = {name: len(await runner.dead_letters(name)) for name in statuses}
        if as_json:
            for s in statuses.values():
                click.echo(
                    json.dumps(
                        {
                            "name": s.name,
                            "state": s.state,
                            "position": s.position,
                            "head": s.head,
                            "lag_events": s.lag_events,
                            "lag_seconds": s.lag_seconds,
                            "dead_letters": letters[s.name],
                            "error": s.error,
                        }
                    )
                )
            return
        table = Table(title="projections")
        table.add_column("projection")
        table.add_column("state")
        for column in ("position", "head", "lag (events)", "lag (s)", "dead letters"):
            table.add_column(column, justify="right")
        for s in statuses.values():
            table.add_row(
                s.name,
                s.state,
                str(s.position),
                str(s.head),
                str(s.lag_events),
                f"{s.lag_seconds:.1f}",
                str(letters[s.name]),
            )
        Console().print(table)

    run(go())


@projections.command()
@click.argument("name")
@store_options
@click.option(
    "--from-position",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Replay the events after this position.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rebuild(
    name: str, dsn: str | None, schema: str, app: str | None, from_position: int, yes: bool
) -> None:
    """Reset projection NAME (its read model and checkpoint) and replay the log into it.

    Shows a progress bar with events/s and the ETA. Writers may keep appending: the
    replay follows the head and ends once it reaches it. Stop the projection's runners
    first unless its checkpoints are in PostgreSQL (the rebuild then takes its lock).

    \b
    Examples:
      eventcore projections rebuild balances --app myapp.ops:app --dsn postgresql://app@db/app
      eventcore projections rebuild audit --app myapp.ops:app --from-position 1000 --yes
    """

    async def go() -> None:
        err = Console(stderr=True)
        async with runner_for(Options(dsn, schema, app)) as runner:
            statuses = await runner.status()
            if name not in statuses:
                known = ", ".join(sorted(statuses)) or "none"
                raise Failure(f"no projection named {name!r} (known: {known})")
            if not yes and not click.confirm(
                f"Reset projection {name!r} and replay it from position {from_position}?",
                err=True,
            ):
                raise click.Abort()
            bar = Progress(
                TextColumn(f"[bold]rebuilding {name}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[detail]}"),
                console=err,
                transient=True,
            )
            task = bar.add_task(name, total=None, detail="")
            last: list[Any] = []

            def on_progress(p: Any) -> None:
                last[:] = [p]
                eta = "-" if p.eta_seconds is None else f"{p.eta_seconds:,.0f} s"
                bar.update(
                    task,
                    completed=p.events_done,
                    total=p.events_done + p.events_remaining,
                    detail=f"{p.events_per_second:,.0f} events/s, ETA {eta}, position {p.position}",
                )

            started = time.perf_counter()
            with bar:
                await runner.rebuild(name, from_position=from_position, progress=on_progress)
            elapsed = time.perf_counter() - started
            final = (await runner.status())[name]
        done = last[0].events_done if last else 0
        rate = done / elapsed if elapsed > 0 else 0.0
        click.echo(
            f"rebuilt {name}: {done} events in {elapsed:.2f} s ({rate:,.0f} events/s); "
            f"position {final.position}, head {final.head}"
        )

    run(go())


@projections.command("dead-letters")
@click.argument("name")
@store_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def dead_letters(name: str, dsn: str | None, schema: str, app: str | None, as_json: bool) -> None:
    """List the events projection NAME skipped after failing on them.

    \b
    Examples:
      eventcore projections dead-letters balances --app myapp.ops:app
    """

    async def go() -> None:
        async with runner_for(Options(dsn, schema, app)) as runner:
            if name not in await runner.status():
                raise Failure(f"no projection named {name!r}")
            letters = await runner.dead_letters(name)
        if as_json:
            for d in letters:
                click.echo(
                    json.dumps(
                        {
                            "projection": d.projection,
                            "position": d.position,
                            "event_id": str(d.event_id) if d.event_id else None,
                            "stream_id": d.stream_id,
                            "event_type": d.event_type,
                            "error": d.error,
                            "failed_at": d.failed_at.isoformat(),
                        }
                    )
                )
            return
        table = Table(title=f"dead letters of {name}")
        for column in ("position", "stream", "type", "error", "failed at"):
            table.add_column(column, overflow="fold")
        for d in letters:
            table.add_row(
                str(d.position),
                d.stream_id,
                d.event_type,
                d.error,
                d.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        Console().print(table)
        click.echo(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")

    run(go())
