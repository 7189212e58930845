"""Apps for ``eventcore --app`` in the CLI tests.

``app``: an in-memory store with a few accounts, a counting projection and in-memory
checkpoints (module globals, so they persist across CLI invocations in one process).
``pg_app``: the same projection, with the store given by ``--dsn``.
"""

from __future__ import annotations

from typing import Any

from eventcore import MemoryStore, execute_sync
from eventcore.projection import FailureStrategy, MemoryCheckpointStore

from .domain import Deposit, Open


class Counts:
    """Counts events per type; fails on deposits of 13 (dead letters with ``skip``)."""

    def __init__(self, name: str = "counts", *, on_error: FailureStrategy | None = None) -> None:
        self.name = name
        self.seen: dict[str, int] = {}
        self.on_error = on_error or FailureStrategy.skip()

    def apply(self, event: Any) -> None:
        if event.event_type == "obs.Deposited" and event.data.amount == 13:
            raise ValueError("unlucky deposit")
        self.seen[event.event_type] = self.seen.get(event.event_type, 0) + 1

    def reset(self) -> None:
        self.seen.clear()


def seeded_store() -> MemoryStore:
    store = MemoryStore()
    for i in range(1, 4):
        execute_sync(store, Open(account=f"acc-{i}", owner=f"owner {i}"))
        execute_sync(store, Deposit(account=f"acc-{i}", amount=10 * i))
    return store


class App:
    def __init__(self) -> None:
        self.store = seeded_store()
        self.counts = Counts()
        self.audit = Counts("audit")
        self.projections = [self.counts, self.audit]
        self.checkpoints = MemoryCheckpointStore()


app = App()


class PgApp:
    """Projections only: the store comes from --dsn, checkpoints go next to it."""

    def __init__(self) -> None:
        self.counts = Counts()

    def projections(self, store: Any) -> list[Any]:
        return [self.counts]


pg_app = PgApp()
