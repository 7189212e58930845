"""The one benchmark harness's shared part: how a figure is timed, and the bank workloads.

``benches/headline.py`` (with its area modules), the pytest-benchmark suite in ``benches/``
and ``eventcore bench`` all use it, so a figure means the same wherever it is printed:

- **Timing.** :class:`Timer` times a block with the cyclic GC collected before and
  disabled during it (the ``timeit`` convention); :func:`timed` is a repetition's rate.
  :func:`measure` is the one repeat loop: warm-ups thrown away, then repetitions with the
  sides alternating (the side that goes first rotates), so a figure and its baseline see
  the same machine noise. A :class:`Figure` keeps every repetition; its value is the median.
- **The domain.** The shipped bank example (:mod:`eventcore.examples.bank`) is
  :data:`DC`; :data:`MS` is the same domain with ``msgspec.Struct`` events.
- **The workloads.** :class:`BankWorkloads` prepares a workload's data untimed and
  returns its timed body; on an in-memory store the body is a plain loop of
  ``execute_sync``, on an async store (PostgreSQL, SQLite's async view) a loop of
  ``await execute``.

Importing it loads nothing beyond eventcore's own command path (no CLI, no PostgreSQL).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from eventcore import Command, EventRegistry, StreamId, event, require, stream
from eventcore.examples import bank
from eventcore.examples.bank import Account, Money
from eventcore.executor import execute, execute_sync
from eventcore.memory import MemoryStore
from eventcore.recorded import NewEvent

_perf = time.perf_counter
T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Timing


class Timer:
    """Times a block: the cyclic GC is collected before and disabled during it."""

    seconds: float = 0.0
    """Wall time of the block, once it has ended."""

    def __enter__(self) -> Timer:
        gc.collect()
        gc.disable()
        self._started = _perf()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = _perf() - self._started
        gc.enable()


def timed(body: Callable[[], float]) -> float:
    """Run ``body`` (which returns the units of work it did) under a :class:`Timer`;
    units per second."""
    with Timer() as t:
        units = body()
    return units / t.seconds


def timed_parts(body: Callable[[], tuple[float, float]]) -> float:
    """Like :func:`timed` for a body that times its own parts: ``body() -> (units,
    seconds)``; the GC is off as in :class:`Timer`."""
    with Timer():
        units, seconds = body()
    return units / seconds


@dataclass
class Target:
    """A target: ``value`` (the figure), ``ratio`` (vs its baseline) or ``peer`` (vs peer)."""

    on: str
    op: str  # ">=" or "<="
    threshold: float
    vs: str = "raw"  # what a ratio target is against (for the label)

    def check(self, fig: Figure, figs: dict[str, Figure]) -> bool | None:
        """Whether ``fig`` meets the target (None: its baseline or peer is missing)."""
        x = {"value": fig.value, "ratio": fig.ratio(figs), "peer": fig.peer_ratio(figs)}[self.on]
        if x is None:
            return None
        return x >= self.threshold if self.op == ">=" else x <= self.threshold

    def label(self) -> str:
        """The target as a table cell, e.g. ``>= 5x peer``."""
        t = self.threshold
        if self.on == "value":
            return f"{self.op} {fmt(t)}"
        what = self.vs if self.on == "ratio" else "peer"
        return (
            f"{self.op} {t:g}x {what}"
            if t >= 1 or self.on == "peer"
            else f"{self.op} {t:.0%} {what}"
        )


@dataclass
class Figure:
    """One workload's repetitions (rates, or ms for latency figures); the value is the
    median. ``baseline`` and ``peer`` name other figures of the same run."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    baseline: str | None = None
    peer: str | None = None  # e.g. the matching peer.eventsourcing.* figure
    targets: list[Target] = field(default_factory=list)
    note: str = ""

    @property
    def value(self) -> float:
        """The median of the samples."""
        return statistics.median(self.samples)

    def _other(self, name: str | None, figs: dict[str, Figure]) -> float | None:
        other = figs.get(name) if name else None
        return other.value if other is not None and other.samples else None

    def ratio(self, figs: dict[str, Figure]) -> float | None:
        """The value over the baseline's (None without one)."""
        b = self._other(self.baseline, figs)
        return self.value / b if b else None

    def peer_ratio(self, figs: dict[str, Figure]) -> float | None:
        """The value over the peer's (None without one)."""
        p = self._other(self.peer, figs)
        return self.value / p if p else None

    def as_json(self, figs: dict[str, Figure]) -> dict[str, Any]:
        """The figure with its ratios, every sample, min and max, as a JSON object."""
        out: dict[str, Any] = {
            "value": self.value,
            "unit": self.unit,
            "baseline": self._other(self.baseline, figs),
            "ratio": self.ratio(figs),
            "baseline_name": self.baseline,
            "min": min(self.samples),
            "max": max(self.samples),
            "reps": len(self.samples),
            "samples": self.samples,
        }
        if self.peer:
            out["peer"] = self._other(self.peer, figs)
            out["peer_name"] = self.peer
            out["peer_ratio"] = self.peer_ratio(figs)
        if self.targets:
            out["targets"] = [
                {"target": t.label(), "met": t.check(self, figs)} for t in self.targets
            ]
        if self.note:
            out["note"] = self.note
        return out


Side = tuple[Figure, Callable[[], float]]
"""A figure and one timed repetition of its workload (which returns the sample)."""


def measure(
    sides: Sequence[Side],
    reps: int,
    warmup: int,
    *,
    seconds: float | None = None,
    on_sample: Callable[[Figure, float | None], None] | None = None,
) -> None:
    """Warm every side up, then alternate their repetitions (rotating which goes first).

    ``seconds``: stop early, after at least 3 rounds, once that many seconds per side have
    passed. ``on_sample(figure, sample)`` is told of every repetition (``None`` for a
    warm-up), e.g. to draw progress.
    """
    for _ in range(warmup):
        for fig, once in sides:
            once()
            if on_sample is not None:
                on_sample(fig, None)
    deadline = None if seconds is None else _perf() + seconds * len(sides)
    for r in range(reps):
        k = r % len(sides)
        for fig, once in [*sides[k:], *sides[:k]]:
            sample = once()
            fig.samples.append(sample)
            if on_sample is not None:
                on_sample(fig, sample)
        if deadline is not None and r >= 2 and _perf() > deadline:
            break


def fmt(v: float | None) -> str:
    """A figure for a table: thousands separated, fewer decimals as it grows."""
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:,.1f}"
    return f"{v:,.2f}"


# ---------------------------------------------------------------------------------------------
# The bank domain: the shipped example, and the same with msgspec.Struct events


@dataclass
class Domain:
    """One variant of the bank domain (its registry, event classes and commands)."""

    name: str
    registry: EventRegistry
    AccountOpened: Any
    Deposited: Any
    Withdrawn: Any
    OpenAccount: Any
    Deposit: Any
    Transfer: Any


DC = Domain(
    "dataclass",
    bank.registry,
    bank.AccountOpened,
    bank.Deposited,
    bank.Withdrawn,
    bank.OpenAccount,
    bank.Deposit,
    bank.Transfer,
)
"""The shipped example itself (:mod:`eventcore.examples.bank`: frozen dataclass events)."""


def _msgspec_domain() -> Domain:
    """The example's commands over ``msgspec.Struct`` events (registry ``bench.ms.*``)."""
    registry = EventRegistry()

    @event("bench.ms.AccountOpened", registry=registry)
    class AccountOpened(msgspec.Struct, frozen=True):
        owner: str

    @event("bench.ms.Deposited", registry=registry)
    class Deposited(msgspec.Struct, frozen=True):
        amount: int

    @event("bench.ms.Withdrawn", registry=registry)
    class Withdrawn(msgspec.Struct, frozen=True):
        amount: int

    def fold_account(state: Account, ev: Any) -> Account:
        match ev:
            case AccountOpened():
                return Account(opened=True, balance=state.balance)
            case Deposited(amount=amount):
                return Account(opened=state.opened, balance=state.balance + amount)
            case Withdrawn(amount=amount):
                return Account(opened=state.opened, balance=state.balance - amount)
        return state

    # The example's commands with these events: the same checks and messages.
    class SingleAccount(Command[Account, Any]):
        account: StreamId = stream()

        def initial_state(self) -> Account:
            return Account()

        def apply(self, state: Account, ev: Any, stream_id: str) -> Account:
            return fold_account(state, ev)

    class OpenAccount(SingleAccount):
        owner: str

        def handle(self, state: Account) -> list[tuple[str, Any]]:
            require(not state.opened, f"account {self.account} is already open")
            return [(self.account, AccountOpened(self.owner))]

    class Deposit(SingleAccount):
        amount: Money

        def handle(self, state: Account) -> list[tuple[str, Any]]:
            require(state.opened, f"account {self.account} is not open")
            return [(self.account, Deposited(self.amount))]

    class Transfer(Command[dict[str, Account], Any]):
        source: StreamId = stream()
        target: StreamId = stream()
        amount: Money

        def initial_state(self) -> dict[str, Account]:
            return {self.source: Account(), self.target: Account()}

        def apply(self, state: dict[str, Account], ev: Any, stream_id: str) -> dict[str, Account]:
            state[stream_id] = fold_account(state[stream_id], ev)
            return state

        def handle(self, state: dict[str, Account]) -> list[tuple[str, Any]]:
            require(self.source != self.target, "cannot transfer to the same account")
            require(state[self.source].opened and state[self.target].opened, "both must be open")
            require(
                state[self.source].balance >= self.amount, f"insufficient funds in {self.source}"
            )
            return [(self.source, Withdrawn(self.amount)), (self.target, Deposited(self.amount))]

    return Domain(
        "msgspec", registry, AccountOpened, Deposited, Withdrawn, OpenAccount, Deposit, Transfer
    )


MS = _msgspec_domain()
"""The bank with ``msgspec.Struct(frozen=True)`` events, for the dataclass/msgspec comparison."""
DOMAINS = {"dataclass": DC, "msgspec": MS}

# ---------------------------------------------------------------------------------------------
# Data (untimed) and the workloads

OPENED_OWNER = "owner"
DEPOSIT = 100


def history(domain: Domain, n: int) -> list[tuple[str, bytes]]:
    """The encoded events of an account holding ``n`` events: opened, then deposits."""
    enc = domain.registry.encode
    return [enc(domain.AccountOpened(OPENED_OWNER))] + [
        enc(domain.Deposited(DEPOSIT)) for _ in range(n - 1)
    ]


async def append(store: Any, batch: list[NewEvent]) -> None:
    """Append ``batch`` to an in-memory (sync) or async store."""
    if isinstance(store, MemoryStore):
        store.append(batch)
    else:
        await store.append(batch)


async def fill(store: Any, domain: Domain, streams: Sequence[str], per_stream: int) -> None:
    """Give every stream ``per_stream`` events (:func:`history`), in ~1000-event appends."""
    events = history(domain, per_stream)
    batch: list[NewEvent] = []
    for s in streams:
        batch.extend(NewEvent(s, name, payload) for name, payload in events)
        if len(batch) >= 1000:
            await append(store, batch)
            batch = []
    if batch:
        await append(store, batch)


def filled_store(domain: Domain, streams: Sequence[str], per_stream: int) -> MemoryStore:
    """A fresh in-memory store where every stream holds ``per_stream`` events."""
    store = MemoryStore(registry=domain.registry)
    run_now(fill(store, domain, streams, per_stream))
    return store


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (a workload's preparation or body on an
    in-memory store) without an event loop; a RuntimeError if it does suspend."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the coroutine suspended: it needs an event loop")


Body = Callable[[], float] | Callable[[], Awaitable[float]]
"""A workload's timed part: does the work, returns its units (commands or events)."""


async def rate(body: Body) -> float:
    """Units per second of one call of ``body`` (sync or async) under a :class:`Timer`."""
    with Timer() as t:
        units = body()
        if not isinstance(units, int | float):
            units = await units
    return units / t.seconds


class BankWorkloads:
    """The bank workloads on one kind of store.

    Each ``prepare_*`` builds a repetition's data untimed (fresh streams every time) and
    returns its :data:`Body`; ``new_store()`` gives the store a repetition runs on (a fresh
    ``MemoryStore``, or the one PostgreSQL/SQLite store). Each body checks what it did.
    """

    def __init__(
        self, domain: Domain, new_store: Callable[[], Any] | None = None, prefix: str = "b"
    ) -> None:
        self.domain = domain
        self.new_store = new_store or (lambda: MemoryStore(registry=domain.registry))
        self.prefix = prefix
        self._count = 0

    def ids(self, n: int) -> list[str]:
        """``n`` stream ids never used before by these workloads."""
        self._count += 1
        return [f"{self.prefix}-{self._count}-{i}" for i in range(n)]

    async def prepare_cold(self, n: int) -> Body:
        """``n`` OpenAccount commands on fresh streams (build the command + execute)."""
        store, ids, open_account = self.new_store(), self.ids(n), self.domain.OpenAccount
        if isinstance(store, MemoryStore):

            def body() -> float:
                for s in ids:
                    execute_sync(store, open_account(account=s, owner=OPENED_OWNER))
                return len(ids)

            return body

        async def abody() -> float:
            for s in ids:
                await execute(store, open_account(account=s, owner=OPENED_OWNER))
            return len(ids)

        return abody

    async def prepare_warm(self, n: int, events: int = 100) -> Body:
        """A Deposit on each of ``n`` streams of ``events`` events whose state is cached
        (one untimed Deposit per stream first)."""
        store, ids, deposit = self.new_store(), self.ids(n), self.domain.Deposit
        await fill(store, self.domain, ids, events)
        if isinstance(store, MemoryStore):
            for s in ids:  # warm the state cache (untimed)
                execute_sync(store, deposit(account=s, amount=DEPOSIT))

            def body() -> float:
                for s in ids:
                    execute_sync(store, deposit(account=s, amount=DEPOSIT))
                assert store.stream_version(ids[-1]) == events + 2
                return len(ids)

            return body
        for s in ids:
            await execute(store, deposit(account=s, amount=DEPOSIT))

        async def abody() -> float:
            for s in ids:
                await execute(store, deposit(account=s, amount=DEPOSIT))
            return len(ids)

        return abody

    async def prepare_transfer(self, n: int) -> Body:
        """``n`` Transfers, each between two streams of 2 events (one atomic write)."""
        store, ids, transfer = self.new_store(), self.ids(2 * n), self.domain.Transfer
        await fill(store, self.domain, ids, 2)
        pairs = list(zip(ids[0::2], ids[1::2], strict=True))
        half = DEPOSIT // 2
        if isinstance(store, MemoryStore):

            def body() -> float:
                for a, b in pairs:
                    execute_sync(store, transfer(source=a, target=b, amount=half))
                return len(pairs)

            return body

        async def abody() -> float:
            for a, b in pairs:
                await execute(store, transfer(source=a, target=b, amount=half))
            return len(pairs)

        return abody

    async def prepare_append_batch(self, batches: int, streams: int = 1) -> Body:
        """``batches`` appends of 1000 pre-encoded events (no ids) over ``streams``
        stream(s) each."""
        store, enc, deposited = self.new_store(), self.domain.registry.encode, self.domain.Deposited
        todo = []
        for j in self.ids(batches):
            todo.append(
                [NewEvent(f"{j}-{i % streams}", *enc(deposited(i + 1))) for i in range(1000)]
            )
        if isinstance(store, MemoryStore):
            add, before = store.append, len(store)

            def body() -> float:
                for batch in todo:
                    add(batch)
                assert len(store) == before + 1000 * len(todo)
                return 1000 * len(todo)

            return body

        async def abody() -> float:
            for batch in todo:
                await store.append(batch)
            return 1000 * len(todo)

        return abody

    async def prepare_read(self, streams: int, events: int = 1000) -> Body:
        """``read_stream`` of ``streams`` streams of ``events`` events, ``.data`` on each."""
        store, ids = self.new_store(), self.ids(streams)
        await fill(store, self.domain, ids, events)
        if isinstance(store, MemoryStore):
            read = store.read_stream

            def body() -> float:
                n = 0
                for s in ids:
                    for e in read(s):
                        e.data  # noqa: B018
                        n += 1
                return n

            return body

        async def abody() -> float:
            n = 0
            for s in ids:
                for e in await store.read_stream(s):
                    e.data  # noqa: B018
                    n += 1
            return n

        return abody

    async def prepare_fold(self, streams: int, events: int = 100) -> Body:
        """The in-memory store's native fold (what the command machine runs on it: read
        and fold in one call) of each of ``streams`` streams of ``events`` events into an
        Account (the command's ``apply``). Units: events."""
        ids = self.ids(streams)
        store = filled_store(self.domain, ids, events)
        apply = self.domain.Deposit(account="x", amount=1).apply
        decoders, fold = self.domain.registry.decoders, store._core.fold_streams

        def body() -> float:
            for s in ids:
                state, _ = fold([s], Account(), apply, decoders)
            assert state.balance == (events - 1) * DEPOSIT
            return events * len(ids)

        return body
