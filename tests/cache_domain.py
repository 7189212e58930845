"""Commands and helpers shared by the state cache tests (memory and PostgreSQL).

``Scaled`` folds with a non-stream field (``factor``): two commands on the same stream
with different factors must never share a cached state. ``run_ops`` plays one random
sequence of commands, outside writes and injected faults against a store, returning
every outcome and the log, so a run with the cache and one without can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from eventcore import (
    Command,
    ConcurrencyConflict,
    EventCoreError,
    NewEvent,
    RetryPolicy,
    StoreUnavailable,
    StreamId,
    default_registry,
    execute,
    execute_sync,
    require,
    stream,
)
from eventcore.testing import FaultyStore

from .bank_domain import (
    AccountOpened,
    Catalogued,
    Deposit,
    Deposited,
    OpenAccount,
    PlaceOrder,
    Stocked,
    Transfer,
    Withdraw,
    Withdrawn,
)

FAST = RetryPolicy(
    max_attempts=4, initial_delay=0.0, unavailable_initial_delay=0.0001, unavailable_timeout=5.0
)
ACCOUNTS = ["acc-0", "acc-1", "acc-2"]
PRODUCTS = ["p-0", "p-1"]
ORDERS = ["order-0", "order-1"]


class Scaled(Command[int, Any]):
    """Deposits 1 when its factor-weighted balance is even: ``apply`` reads ``factor``."""

    account: StreamId = stream()
    factor: int

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        if isinstance(event, Deposited):
            return state + event.amount * self.factor
        if isinstance(event, Withdrawn):
            return state - event.amount * self.factor
        return state

    def handle(self, state: int) -> list[tuple[str, Any]]:
        require(state % 2 == 0, f"odd weighted balance {state}")
        return [(self.account, Deposited(1))]


def encoded(stream_id: str, event: Any) -> NewEvent:
    return NewEvent(stream_id, *default_registry.encode(event))


accounts = st.sampled_from(ACCOUNTS)
amounts = st.integers(1, 40)
append_faults = st.lists(
    st.sampled_from([None, "conflict", "unavailable", "interleave"]), max_size=2
)

command_st = st.one_of(
    st.builds(lambda a: OpenAccount(account=a, owner="o"), accounts),
    st.builds(lambda a, n: Deposit(account=a, amount=n), accounts, amounts),
    st.builds(lambda a, n: Withdraw(account=a, amount=n), accounts, amounts),
    st.builds(lambda a, b, n: Transfer(source=a, target=b, amount=n), accounts, accounts, amounts),
    st.builds(lambda a, f: Scaled(account=a, factor=f), accounts, st.integers(1, 3)),
    st.builds(lambda o: PlaceOrder(order=o), st.sampled_from(ORDERS)),
)
outside_st = st.one_of(  # another writer, between commands
    st.tuples(accounts, st.builds(Deposited, amounts)),
    st.tuples(accounts, st.just(AccountOpened("x"))),
    st.tuples(st.sampled_from(PRODUCTS), st.builds(Stocked, st.integers(1, 3))),
    st.tuples(
        st.sampled_from(ORDERS),
        st.builds(Catalogued, st.lists(st.sampled_from(PRODUCTS), unique=True).map(tuple)),
    ),
)
op_st = st.one_of(
    st.tuples(st.just("command"), command_st, append_faults),
    st.tuples(st.just("outside"), outside_st, st.just([])),
)
ops_st = st.lists(op_st, max_size=25)


def outcome(result: Any = None, error: BaseException | None = None) -> Any:
    """What a caller sees of one command, without the random event ids."""
    if error is not None:
        return (type(error).__name__, str(error))
    return (
        result.attempts,
        [(w.stream_id, w.version) for w in result.events],
        dict(result.stream_versions),
    )


def same_but_fewer_attempts(warm: list[Any], plain: list[Any]) -> None:
    """Assert two runs' outcomes are equal, except that ``warm`` may need fewer attempts.

    A store that appends a cached state's events without reading first (PostgreSQL's
    ``warm_append_first``) counts a conflict there (an injected one included) as the read
    it skipped, not as an attempt; a store that reads first counts it.
    """

    def split(outcomes: list[Any]) -> tuple[list[Any], list[int]]:
        kept, attempts = [], []
        for o in outcomes:
            if isinstance(o[0], int):  # a success: (attempts, events, versions)
                attempts.append(o[0])
                o = o[1:]
            kept.append(o)
        return kept, attempts

    (warm_kept, warm_attempts), (plain_kept, plain_attempts) = split(warm), split(plain)
    assert warm_kept == plain_kept
    assert all(w <= p for w, p in zip(warm_attempts, plain_attempts, strict=True))


def log_of(events: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The log without event ids and positions (those differ between two stores)."""
    return [(e.stream_id, e.version, e.event_type, e.payload) for e in events]


class AsyncFaulty:
    """An async store wrapper injecting append faults (like FaultyStore, for any store)."""

    def __init__(self, store: Any, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix
        self.faults: list[str | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(self, events: Any, *, expected: Any = (), metadata: Any = None) -> Any:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "conflict":
            raise ConcurrencyConflict([(s, v, -1) for s, v in expected] or [("x", 0, 1)])
        if fault == "unavailable":
            raise StoreUnavailable("injected")
        if fault == "interleave":
            for stream_id, _ in expected:
                template = next((e for e in events if e[0] == stream_id), None)
                if template is not None:
                    await self.store.append([NewEvent(stream_id, template[1], template[2])])
        return await self.store.append(events, expected=expected, metadata=metadata)


def _restarting(store: Any, ops: list[Any], restarts: Sequence[bool] | None) -> Any:
    """``ops`` paired with whether to empty ``store``'s state cache before each one."""
    cache = getattr(store, "state_cache", None)
    marks = restarts if restarts is not None else [False] * len(ops)
    for op, restart in zip(ops, marks, strict=False):  # restarts may be the longer
        if restart and cache is not None:
            cache.clear()  # what a restarted process sees: the events (and snapshots) only
        yield op


def run_ops(
    faulty: FaultyStore, ops: list[Any], restarts: Sequence[bool] | None = None
) -> list[Any]:
    """Play ``ops`` through ``execute_sync``; every outcome in order.

    ``restarts``: empty the store's state cache before the ops it marks.
    """
    seen: list[Any] = []
    for kind, item, faults in _restarting(faulty.store, ops, restarts):
        if kind == "outside":
            stream_id, ev = item
            faulty.store.append([encoded(stream_id, renamed(ev, ""))])
            continue
        faulty.faults = list(faults)
        faulty.read_faults = ["unavailable"] if "unavailable" in faults else []
        try:
            seen.append(outcome(execute_sync(faulty, item, retry=FAST)))
        except EventCoreError as exc:
            seen.append(outcome(error=exc))
    return seen


async def run_ops_async(
    store: AsyncFaulty, ops: list[Any], prefix: str, restarts: Sequence[bool] | None = None
) -> list[Any]:
    """Play ``ops`` on ``store`` (streams renamed with ``prefix``); every outcome in order.

    ``restarts``: empty the store's state cache before the ops it marks.
    """
    seen: list[Any] = []
    for kind, item, faults in _restarting(store.store, ops, restarts):
        if kind == "outside":
            stream_id, ev = item
            await store.store.append([encoded(prefix + stream_id, renamed(ev, prefix))])
            continue
        store.faults = list(faults)
        try:
            seen.append(outcome(await execute(store, renamed_command(item, prefix), retry=FAST)))
        except EventCoreError as exc:
            seen.append(outcome(error=exc))
    return seen


def renamed(ev: Any, prefix: str) -> Any:
    if isinstance(ev, Catalogued):
        return Catalogued(tuple(prefix + p for p in ev.products))
    return ev


def renamed_command(command: Any, prefix: str) -> Any:
    if not prefix:
        return command
    changes = {}
    for name in ("account", "source", "target", "order"):
        if hasattr(command, name):
            changes[name] = prefix + getattr(command, name)
    fields = {f: getattr(command, f) for f in command.__dataclass_fields__}
    fields.update(changes)
    return type(command)(**fields)
