"""``eventcore demo``: the bank example, on the in-memory store (or PostgreSQL with --dsn)."""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from eventcore.cli._store import OpenStore, Options, open_store, run, store_options
from eventcore.errors import BusinessRuleViolation
from eventcore.examples import bank
from eventcore.executor import execute, execute_sync
from eventcore.stream import StreamId

INITIAL_BALANCE = 10_000


def plan(accounts: list[StreamId], commands: int, seed: int) -> list[Any]:
    """The random deposits, withdrawals and transfers the demo runs (same seed, same plan)."""
    rng = random.Random(seed)
    out: list[Any] = []
    for _ in range(commands):
        kind = rng.random()
        account = rng.choice(accounts)
        amount = bank.Money(rng.randint(1, 500))
        if kind < 0.3:
            out.append(bank.Deposit(account=account, amount=amount))
        elif kind < 0.6:
            out.append(bank.Withdraw(account=account, amount=amount))
        else:
            out.append(bank.Transfer(source=account, target=rng.choice(accounts), amount=amount))
    return out


def progress_bar(console: Console) -> Progress:
    """A progress bar with a count, a rate and an ETA (on ``console``)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@click.command()
@store_options
@click.option("--accounts", type=click.IntRange(min=2), default=100, show_default=True)
@click.option(
    "--commands",
    type=click.IntRange(min=0),
    default=None,
    help="Random commands to run  [default: 20000 in memory, 2000 on PostgreSQL]",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--show", type=click.IntRange(min=0), default=10, show_default=True, help="Balances to print."
)
def demo(
    dsn: str | None,
    schema: str,
    app: str | None,
    accounts: int,
    commands: int | None,
    seed: int,
    show: int,
) -> None:
    """Run the bank example: open accounts, then random deposits, withdrawals, transfers.

    Each transfer is ONE command writing to both account streams atomically. Prints the
    balances, the events written, the commands per second, and checks that transfers
    created no money. Runs on a fresh in-memory store unless --dsn names PostgreSQL.

    \b
    Examples:
      eventcore demo
      eventcore demo --accounts 1000 --commands 100000
      eventcore demo --dsn postgresql://app@db/app --schema demo
    """

    async def go() -> None:
        console = Console(stderr=True)
        async with open_store(
            Options(dsn, schema, None), default_memory=True, registry=bank.registry, create=True
        ) as opened:
            if opened.postgres is not None:
                await opened.postgres.migrate()
            n = (
                commands
                if commands is not None
                else (20_000 if opened.memory is not None else 2_000)
            )
            prefix = "account" if opened.memory is not None else f"demo-{secrets.token_hex(3)}"
            ids = [StreamId(f"{prefix}-{i}") for i in range(accounts)]
            stats = await _run(opened, ids, plan(ids, n, seed), console)
            balances = {a: await _balance(opened, a) for a in ids}
            events = await opened.store.head() if opened.memory is not None else None
        _report(opened, ids, balances, stats, n, events, show)

    run(go())


async def _run(
    opened: OpenStore, ids: list[StreamId], todo: list[Any], console: Console
) -> dict[str, Any]:
    setup: list[Any] = []
    for i, account in enumerate(ids):
        setup.append(bank.OpenAccount(account=account, owner=f"owner {i}"))
        setup.append(bank.Deposit(account=account, amount=bank.Money(INITIAL_BALANCE)))
    memory = opened.memory
    cache = getattr(memory if memory is not None else opened.store, "state_cache", None)
    warm = 0  # commands that found their state in the cache, and their time
    warm_seconds = 0.0
    rejected = 0
    net = 0  # what deposits and withdrawals changed; transfers must not change the total
    with progress_bar(console) as progress:
        task = progress.add_task("opening accounts", total=len(setup), rate="")
        for command in setup:
            if memory is not None:
                execute_sync(memory, command)
            else:
                await execute(opened.store, command)
            progress.advance(task)
        task = progress.add_task("running commands", total=len(todo), rate="")
        started = time.perf_counter()
        step = max(1, len(todo) // 100)
        for i, command in enumerate(todo, 1):
            hits = cache.hits if cache is not None else 0
            began = time.perf_counter()
            try:
                if memory is not None:
                    execute_sync(memory, command)
                else:
                    await execute(opened.store, command)
            except BusinessRuleViolation:
                rejected += 1
                continue
            finally:
                if cache is not None and cache.hits > hits:
                    warm += 1
                    warm_seconds += time.perf_counter() - began
                if i % step == 0:
                    rate = i / (time.perf_counter() - started)
                    progress.update(task, completed=i, rate=f"{rate:,.0f} commands/s")
            if isinstance(command, bank.Deposit):
                net += command.amount
            elif isinstance(command, bank.Withdraw):
                net -= command.amount
        elapsed = time.perf_counter() - started
    return {
        "rejected": rejected,
        "seconds": elapsed,
        "net": net,
        "warm": warm,
        "warm_seconds": warm_seconds,
    }


async def _balance(opened: OpenStore, account: str) -> int:
    state = bank.Account()
    for recorded in await opened.store.read_stream(account):
        state = bank.fold_account(state, recorded.data)
    return state.balance


def _report(
    opened: OpenStore,
    ids: list[StreamId],
    balances: dict[StreamId, int],
    stats: dict[str, Any],
    n: int,
    events: int | None,
    show: int,
) -> None:
    console = Console()
    table = Table(title=f"bank demo on {opened.label}")
    table.add_column("account")
    table.add_column("balance", justify="right")
    for account in ids[:show]:
        table.add_row(account, f"{balances[account] / 100:,.2f}")
    if show < len(ids):
        table.add_row(f"… {len(ids) - show} more", "")
    total = sum(balances.values())
    table.add_row("[bold]total", f"[bold]{total / 100:,.2f}")
    console.print(table)
    expected = INITIAL_BALANCE * len(ids) + stats["net"]
    ok = total == expected and all(b >= 0 for b in balances.values())
    rate = n / stats["seconds"] if stats["seconds"] else 0.0
    console.print(f"commands: {n:,} ({stats['rejected']:,} rejected by business rules)")
    if events is not None:
        console.print(f"events written: {events:,}")
    console.print(f"commands/s: {rate:,.0f}")
    if stats["warm"]:
        console.print(
            f"warm commands/s: {stats['warm'] / stats['warm_seconds']:,.0f} "
            f"({stats['warm']:,} of {n:,} commands found their state in the cache)"
        )
    console.print(f"balances consistent: {'yes' if ok else 'NO'}")
