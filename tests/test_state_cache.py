"""The folded-state cache: a cached fold always equals a full fold.

A hypothesis property runs random command sequences (single- and multi-stream, discovery,
rule violations, outside writers, conflicts and an unavailable store from FaultyStore)
with and without the cache and compares every outcome and the logs; then the key
analysis, in-place mutation, verify mode, eviction, hooks, the warm-append-first path,
and thread and asyncio storms.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings

from eventcore import (
    BusinessRuleViolation,
    Command,
    CommandError,
    ConcurrencyConflict,
    EventCoreError,
    MemoryStore,
    RetryPolicy,
    StreamId,
    _core,
    event,
    execute,
    execute_sync,
    stream,
)
from eventcore.examples import bank
from eventcore.observe import Hook, add_hook, remove_hook
from eventcore.state_cache import StateCache, StateCacheMismatch, command_key, state_key_fields
from eventcore.testing import FaultyStore, Scenario, verifying_store

from .bank_domain import (
    Account,
    Deposit,
    Deposited,
    OpenAccount,
    Transfer,
    Withdraw,
    balance,
    fold_account,
    new,
    open_with,
)
from .cache_domain import (
    ACCOUNTS,
    AsyncFaulty,
    Scaled,
    log_of,
    ops_st,
    run_ops,
    run_ops_async,
)


def cached_store() -> MemoryStore:
    return MemoryStore(state_cache=StateCache(min_events=0, verify=True))


@settings(max_examples=150, deadline=None)
@given(ops=ops_st)
def test_random_commands_give_the_same_results_and_log_with_and_without_the_cache(
    ops: list[Any],
) -> None:
    with_cache = FaultyStore(cached_store())
    without = FaultyStore(MemoryStore(state_cache=0))
    assert run_ops(with_cache, ops) == run_ops(without, ops)
    assert log_of(with_cache.store.read_all()) == log_of(without.store.read_all())


def test_the_property_run_does_use_the_cache() -> None:
    # Guard against a vacuous property: the same kind of run hits the cache.
    faulty = FaultyStore(cached_store())
    ops: list[Any] = [("command", OpenAccount(account="acc-0", owner="o"), [])]
    ops += [("command", Deposit(account="acc-0", amount=5), [None])] * 3
    ops += [("outside", ("acc-0", Deposited(7)), [])]
    ops += [("command", Withdraw(account="acc-0", amount=20), ["interleave"])]
    run_ops(faulty, ops)
    cache = faulty.store.state_cache
    assert cache is not None
    assert cache.hits >= 2  # the Deposits after the first (Withdraw has a key of its own)
    # the interleaved writer withdrew 20 first; the retry then finds too little: rejected
    assert balance(faulty.store, "acc-0") == 5 * 3 + 7 - 20


# -- keys ----------------------------------------------------------------------------------


def test_bank_commands_are_keyed_by_class_and_streams_only() -> None:
    for cls in (bank.OpenAccount, bank.Deposit, bank.Withdraw, bank.Transfer):
        assert state_key_fields(cls) == ()
    one = bank.Deposit(account="a", amount=1)
    other = bank.Deposit(account="a", amount=99)
    assert command_key(one, one.streams()) == command_key(other, other.streams())
    assert command_key(one, one.streams()) == (bank.Deposit, ("a",))
    t = bank.Transfer(source="a", target="b", amount=3)
    assert command_key(t, t.streams()) == (bank.Transfer, ("a", "b"))


def test_a_command_whose_apply_reads_a_field_gets_its_own_entry() -> None:
    assert state_key_fields(Scaled) == ("factor",)
    one, two = Scaled(account="acc-0", factor=1), Scaled(account="acc-0", factor=2)
    assert command_key(one, one.streams()) != command_key(two, two.streams())
    store = cached_store()
    open_with(store, "acc-0", 2)
    execute_sync(store, two)  # weighted 4: even, deposits 1; cached as 6
    # Balance 3: odd for factor 1 (a shared entry would have said 6, even).
    with pytest.raises(BusinessRuleViolation, match="odd weighted balance 3"):
        execute_sync(store, one)
    execute_sync(store, two)  # from its own entry: 6, even
    assert store.state_cache is not None and store.state_cache.hits == 1


class ReadsViaGetattr(Command[int, Any]):
    account: StreamId = stream()
    unit: int = 1

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state + getattr(self, "unit")  # noqa: B009 - what the analysis cannot follow

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return []


class ReadsViaHelper(Command[int, Any]):
    account: StreamId = stream()
    unit: int = 1
    label: str = ""

    def initial_state(self) -> int:
        return self._start()

    def _start(self) -> int:
        return self.unit

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return [(self.account, Deposited(len(self.label) + 1))]


class Explicit(ReadsViaGetattr):
    state_key = ("unit",)


class Uncached(Deposit):
    state_cache = False


def test_the_key_analysis_follows_own_methods_and_falls_back_to_every_field() -> None:
    assert state_key_fields(ReadsViaHelper) == ("unit",)  # label is read by handle only
    assert state_key_fields(ReadsViaGetattr) is None
    c = ReadsViaGetattr(account="a", unit=2)
    assert command_key(c, c.streams()) == (ReadsViaGetattr, ("a",), ("a", 2))
    assert state_key_fields(Explicit) == ("unit",)
    u = Uncached(account="a", amount=1)
    assert command_key(u, u.streams()) is None


def test_an_unhashable_keyed_field_is_not_cached() -> None:
    class Listy(ReadsViaGetattr):
        tags: list[str]

    c = Listy(account="a", tags=["x"])
    assert command_key(c, c.streams()) is None


# -- mutation, verify mode -------------------------------------------------------------------


def test_a_state_mutated_in_place_by_apply_stays_correct() -> None:
    # Transfer's apply mutates its dict state in place.
    store = cached_store()
    open_with(store, "a", 100)
    open_with(store, "b", 0)
    for i in range(20):
        src, dst = ("a", "b") if i % 3 else ("b", "a")
        with contextlib.suppress(BusinessRuleViolation):
            execute_sync(store, Transfer(source=src, target=dst, amount=7))
        store.append([new("a", Deposited(1))])  # an outside write: a tail to fold
    assert balance(store, "a") + balance(store, "b") == 120
    assert store.state_cache is not None and store.state_cache.hits >= 10


class MutatingHandle(Deposit):
    def initial_state(self) -> Any:
        return {"balance": 0}

    def apply(self, state: Any, event: Any, stream_id: str) -> Any:
        if isinstance(event, Deposited):
            state["balance"] += event.amount
        return state

    def handle(self, state: Any) -> list[tuple[str, Any]]:
        state["balance"] += 1000  # a bug: the cached state changes
        return [(self.account, Deposited(1))]


def test_verify_mode_catches_a_handle_that_mutates_its_state() -> None:
    scenario = Scenario().given(("acc-0", Deposited(5)))
    scenario.when(MutatingHandle(account="acc-0", amount=1))
    assert scenario.error is None
    scenario.when(MutatingHandle(account="acc-0", amount=1))
    assert isinstance(scenario.error, StateCacheMismatch)
    assert "mutate the state" in str(scenario.error)


def test_the_pytest_plugin_store_verifies(memory_store: MemoryStore) -> None:
    cache = memory_store.state_cache
    assert cache is not None and cache.verify and cache.min_events == 0


def test_a_failed_command_leaves_nothing_cached() -> None:
    store = cached_store()
    open_with(store, "acc-0", 5)
    execute_sync(store, Deposit(account="acc-0", amount=1))
    key = (Withdraw, ("acc-0",))
    with pytest.raises(BusinessRuleViolation):
        execute_sync(store, Withdraw(account="acc-0", amount=100))
    assert store.state_cache is not None and key not in store.state_cache
    faulty = FaultyStore(store, faults=["unavailable"] * 50)
    execute_sync(store, Withdraw(account="acc-0", amount=1))
    assert key in store.state_cache
    with pytest.raises(EventCoreError):
        execute_sync(faulty, Withdraw(account="acc-0", amount=1), retry=RetryPolicy.never())
    assert key not in store.state_cache
    assert balance(store, "acc-0") == 5


# -- bound, hooks -----------------------------------------------------------------------------


class Events(Hook):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_state_cache(self, event: str, command_type: str) -> None:
        self.seen.append((event, command_type))


def test_eviction_under_a_small_bound_and_the_hooks() -> None:
    store = MemoryStore(state_cache=StateCache(2, min_events=0))
    for a in ACCOUNTS:
        open_with(store, a, 10)
    hook = Events()
    add_hook(hook)
    try:
        for a in ACCOUNTS:  # three keys, room for two
            execute_sync(store, Deposit(account=a, amount=1))
        execute_sync(store, Deposit(account=ACCOUNTS[2], amount=1))  # still there: hit
        execute_sync(store, Deposit(account=ACCOUNTS[0], amount=1))  # evicted: miss
    finally:
        remove_hook(hook)
    cache = store.state_cache
    assert cache is not None and len(cache) == 2
    assert (cache.hits, cache.misses, cache.evictions) == (1, 4, 2)
    assert hook.seen.count(("hit", "Deposit")) == 1
    assert hook.seen.count(("miss", "Deposit")) == 4
    assert hook.seen.count(("evict", "Deposit")) == 2
    assert all(balance(store, a) == 10 + 1 + (a != ACCOUNTS[1]) for a in ACCOUNTS)


def test_the_store_option_sizes_or_disables_the_cache() -> None:
    assert MemoryStore(state_cache=0).state_cache is None
    assert MemoryStore(state_cache=None).state_cache is None
    sized = MemoryStore(state_cache=5).state_cache
    assert sized is not None and sized.max_entries == 5
    with pytest.raises(ValueError):
        MemoryStore(state_cache=-1)
    store = MemoryStore(state_cache=0)
    open_with(store, "acc-0", 100)
    for _ in range(3):
        execute_sync(store, Deposit(account="acc-0", amount=1))
    assert balance(store, "acc-0") == 103


def test_a_short_stream_is_not_kept_until_it_reaches_min_events() -> None:
    store = MemoryStore(state_cache=StateCache(min_events=4))
    execute_sync(store, OpenAccount(account="acc-0", owner="o"))
    cache = store.state_cache
    assert cache is not None
    for _ in range(3):
        execute_sync(store, Deposit(account="acc-0", amount=1))
    assert len(cache) == 0  # at most 3 events folded: not worth keeping
    execute_sync(store, Deposit(account="acc-0", amount=1))  # folds 4: kept
    assert len(cache) == 1 and cache.hits == 0
    execute_sync(store, Deposit(account="acc-0", amount=1))
    assert cache.hits == 1
    assert balance(store, "acc-0") == 5


# -- the store's tail fold -------------------------------------------------------------------


def test_read_tail_refuses_what_it_cannot_extend() -> None:
    store = MemoryStore()
    store.append([new("a", Deposited(1)), new("b", Deposited(2)), new("a", Deposited(3))])
    decoders = store.registry.decoders

    def apply(state: list[Any], event: Any, stream_id: str) -> list[Any]:
        return [*state, (stream_id, event.amount)]

    def tail(versions: list[int], fold_from: int) -> Any:
        """The tail read, folded as the command machine folds it."""
        read = store.read_tail(["a", "b"], versions, fold_from)
        return None if read is None else (_core.fold([], apply, decoders, read[0]), read[1])

    assert tail([1, 1], 0) == ([("a", 3)], [2, 1])
    assert tail([2, 0], 1) == ([("b", 2)], [2, 1])
    # a stream of an earlier round moved, or has fewer events than folded: None
    assert tail([1, 0], 1) is None
    assert tail([3, 1], 0) is None
    with pytest.raises(ValueError):
        store.read_tail(["a", "b"], [1], 0)


# -- warm append first (the path a store with costly reads takes) ----------------------------


class WarmFirst:
    """An async view whose executor decides on cached states without reading first."""

    warm_append_first = True

    def __init__(self, store: MemoryStore) -> None:
        self.inner = store.aio
        self.tails: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_tail(self, *args: Any) -> Any:
        self.tails.append(args[-1])  # the hint
        return await self.inner.read_tail(*args)


async def test_warm_append_first_rechecks_a_rejection_and_folds_a_conflicts_tail() -> None:
    store = cached_store()
    open_with(store, "acc-0", 10)
    warm = WarmFirst(store)
    await execute(warm, Deposit(account="acc-0", amount=1))  # cold: cached at 11
    await execute(warm, Withdraw(account="acc-0", amount=1))  # cold for Withdraw: cached at 10
    store.append([new("acc-0", Deposited(50))])  # the cache is now behind
    # On the cached state (10) a withdrawal of 30 breaks the rule: the tail says 60.
    result = await execute(warm, Withdraw(account="acc-0", amount=30))
    assert result.attempts == 1
    assert warm.tails == [None]
    assert balance(store, "acc-0") == 30
    # Behind again; the append on the cached versions conflicts, the tail is folded, and
    # the rule (checked on the real balance) now rejects.
    store.append([new("acc-0", bank.Withdrawn(25))])
    warm.tails.clear()
    with pytest.raises(BusinessRuleViolation):
        await execute(warm, Withdraw(account="acc-0", amount=10))
    assert len(warm.tails) == 1 and isinstance(warm.tails[0], ConcurrencyConflict)
    assert balance(store, "acc-0") == 5


# -- storms ----------------------------------------------------------------------------------


def check_cached_states(store: MemoryStore) -> None:
    """Every state left in the cache equals a full fold at its versions."""
    cache = store.state_cache
    assert cache is not None
    for key, entry in list(cache._entries.items()):
        cls = key[0]
        assert cls in (Deposit, Withdraw, Transfer)
        for s, v in zip(entry.streams, entry.versions, strict=True):
            full = Account()
            for e in store.read_stream(s)[:v]:
                full = fold_account(full, e.data)
            mine = entry.state if cls is not Transfer else entry.state[s]
            assert mine == full


def test_a_thread_storm_conserves_money_and_keeps_no_stale_state() -> None:
    store = cached_store()
    for a in ACCOUNTS:
        open_with(store, a, 100)
    policy = RetryPolicy(max_attempts=50, initial_delay=0.0)
    errors: list[BaseException] = []
    deltas: list[int] = []  # what each successful command added to the total

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(150):
            a, b = rng.sample(ACCOUNTS, 2)
            command: Any = rng.choice(
                [
                    Transfer(source=a, target=b, amount=rng.randint(1, 60)),
                    Withdraw(account=a, amount=rng.randint(1, 30)),
                    Deposit(account=a, amount=rng.randint(1, 30)),
                ]
            )
            try:
                execute_sync(store, command, retry=policy)
            except BusinessRuleViolation:
                continue
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                continue
            if isinstance(command, Deposit):
                deltas.append(command.amount)
            elif isinstance(command, Withdraw):
                deltas.append(-command.amount)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(balance(store, a) for a in ACCOUNTS) == 300 + sum(deltas)
    assert all(balance(store, a) >= 0 for a in ACCOUNTS)
    assert store.state_cache is not None and store.state_cache.hits > 100
    check_cached_states(store)


class Yielding:
    """An async view that lets other tasks run between a command's read and its append."""

    def __init__(self, store: MemoryStore) -> None:
        self.inner = store.aio
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_fold(self, *args: Any) -> Any:
        result = await self.inner.read_fold(*args)
        await asyncio.sleep(0)
        return result

    async def read_tail(self, *args: Any) -> Any:
        result = await self.inner.read_tail(*args)
        await asyncio.sleep(0)
        return result

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.inner.append(*args, **kwargs)
        except ConcurrencyConflict:
            self.conflicts += 1
            raise


async def test_an_asyncio_storm_conserves_money_and_keeps_no_stale_state() -> None:
    store = cached_store()
    for a in ACCOUNTS:
        open_with(store, a, 100)
    policy = RetryPolicy(max_attempts=50, initial_delay=0.0)
    view = Yielding(store)

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(100):
            a, b = rng.sample(ACCOUNTS, 2)
            with contextlib.suppress(BusinessRuleViolation):
                await execute(
                    view, Transfer(source=a, target=b, amount=rng.randint(1, 60)), retry=policy
                )

    await asyncio.gather(*(worker(i) for i in range(8)))
    assert view.conflicts > 10  # the tasks did interleave
    assert store.state_cache is not None and store.state_cache.hits > 100
    assert sum(balance(store, a) for a in ACCOUNTS) == 300
    assert all(balance(store, a) >= 0 for a in ACCOUNTS)
    check_cached_states(store)


# -- the same property through the async executor (a store wrapper injecting faults) --------


@settings(max_examples=60, deadline=None)
@given(ops=ops_st)
def test_random_commands_agree_through_the_async_executor(ops: list[Any]) -> None:
    async def both() -> None:
        a = AsyncFaulty(cached_store().aio)
        b = AsyncFaulty(MemoryStore(state_cache=0).aio)
        assert await run_ops_async(a, ops, "") == await run_ops_async(b, ops, "")
        assert log_of(await a.store.read_all()) == log_of(await b.store.read_all())

    asyncio.run(both())


def test_verifying_store_is_what_scenarios_use() -> None:
    cache = Scenario().store.state_cache
    assert cache is not None and cache.verify
    assert verifying_store().state_cache is not cache  # one cache per store


class Plain:
    """A state without __eq__: verify mode cannot compare it, and must not fail on it."""

    def __init__(self) -> None:
        self.total = 0


class PlainDeposit(Deposit):
    def initial_state(self) -> Any:
        return Plain()

    def apply(self, state: Any, event: Any, stream_id: str) -> Any:
        if isinstance(event, Deposited):
            state.total += event.amount
        return state

    def handle(self, state: Any) -> list[tuple[str, Any]]:
        return [(self.account, Deposited(state.total + 1))]


def test_verify_mode_leaves_a_state_without_eq_unchecked() -> None:
    store = verifying_store()
    for _ in range(4):
        execute_sync(store, PlainDeposit(account="acc-0", amount=1))
    assert store.state_cache is not None and store.state_cache.hits == 3
    assert [e.data.amount for e in store.read_stream("acc-0")] == [1, 2, 4, 8]


@event("tcache.Link")
@dataclass(frozen=True)
class Link:
    to: str


class Chain(Command[list[str], Any]):
    """Follows links from stream to stream (discovery), at most two rounds."""

    start: StreamId = stream()
    max_discovery_rounds = 2

    def initial_state(self) -> list[str]:
        return []

    def apply(self, state: list[str], event: Any, stream_id: str) -> list[str]:
        if isinstance(event, Link):
            state.append(event.to)
        return state

    def discover(self, state: list[str]) -> list[str]:
        return list(state)

    def handle(self, state: list[str]) -> list[tuple[str, Any]]:
        return [(state[-1], Deposited(1))] if state else []


def test_discovery_rounds_count_the_same_from_a_cached_state() -> None:
    outcomes = []
    for store in (cached_store(), MemoryStore(state_cache=0)):
        store.append([new("s0", Link("s1")), new("s1", Link("s2"))])
        execute_sync(store, Chain(start="s0"))  # two rounds: s1, then s2
        execute_sync(store, Chain(start="s0"))
        store.append([new("s2", Link("s3"))])  # a third round now: one too many
        with pytest.raises(CommandError, match="kept discovering") as info:
            execute_sync(store, Chain(start="s0"))
        outcomes.append((str(info.value), log_of(store.read_all())))
        if store.state_cache is not None:
            assert store.state_cache.hits == 2  # the last two ran from the cached state
    assert outcomes[0] == outcomes[1]


class Phases(Hook):
    def __init__(self) -> None:
        self.phases: list[list[str]] = []

    def after_execute(self, report: Any) -> None:
        self.phases.append([p.name for p in report.phases])


def test_a_cache_hit_is_reported_as_a_read() -> None:
    store = cached_store()
    open_with(store, "acc-0", 5)
    hook = Phases()
    add_hook(hook)
    try:
        execute_sync(store, Deposit(account="acc-0", amount=1))
        execute_sync(store, Deposit(account="acc-0", amount=1))
    finally:
        remove_hook(hook)
    # the hit's tail fold (and verify mode's full fold) are read time, then handle, write
    assert hook.phases[1][0] == "read_streams"
    assert hook.phases[1][-2:] == ["handle_command", "write_events"]


def test_in_memory_a_kept_state_holds_its_own_events_and_any_tail_is_still_read() -> None:
    # execute_sync on a MemoryStore keeps the state with the command's own events folded
    # in (keep_own_events): its versions are the stream's, and the next command reads no
    # rows. A state kept before its own events (a run without it) is caught up by the tail.
    store = MemoryStore(state_cache=StateCache(min_events=0))
    open_with(store, "a", 10)
    execute_sync(store, Deposit(account="a", amount=1))
    cache = store.state_cache
    assert cache is not None
    (entry,) = cache._entries.values()
    assert entry.versions == [3] == [store.stream_version("a")]
    assert entry.state == Account(opened=True, balance=11)
    store.append([new("a", Deposited(5))])  # written past the cache
    execute_sync(store, Deposit(account="a", amount=2))  # folds the tail: 11 + 5, then 2
    (entry,) = cache._entries.values()
    assert entry.versions == [5] and entry.state == Account(opened=True, balance=18)
    assert (cache.hits, cache.misses) == (1, 1)
    check_cached_states(store)


def test_an_entry_someone_holds_is_never_changed_by_a_later_command() -> None:
    # The machine refills the entry object it took when only it refers to it; one held
    # elsewhere (here by the test, as a snapshot store or a caller might) stays as it was.
    store = MemoryStore(state_cache=StateCache(min_events=0))
    open_with(store, "a", 10)
    execute_sync(store, Deposit(account="a", amount=1))
    cache = store.state_cache
    assert cache is not None
    (held,) = cache._entries.values()
    execute_sync(store, Deposit(account="a", amount=2))
    (now,) = cache._entries.values()
    assert now is not held
    assert (held.versions, held.state) == ([3], Account(opened=True, balance=11))
    assert (now.versions, now.state) == ([4], Account(opened=True, balance=13))
    del held, now
    execute_sync(store, Deposit(account="a", amount=3))
    (last,) = cache._entries.values()
    assert (last.versions, last.state) == ([5], Account(opened=True, balance=16))


def test_a_kept_entry_and_its_key_share_one_object_per_stream() -> None:
    # Every command makes its own StreamId objects. An entry's key holds those of the
    # command that put it, and so does the entry, which later hits update in place: one
    # object per stream and entry, however many commands hit it.
    store = MemoryStore(state_cache=StateCache(min_events=0))
    open_with(store, "a", 10)
    for amount in (1, 2, 3):
        execute_sync(store, Deposit(account="a", amount=amount))
    cache = store.state_cache
    assert cache is not None and cache.hits == 2
    ((key, entry),) = cache._entries.items()
    assert key == (Deposit, ("a",))
    assert key[1][0] is entry.streams[0]
    assert (entry.versions, entry.state) == ([5], Account(opened=True, balance=16))


def test_an_entry_only_the_cache_holds_is_refilled_and_a_failure_after_a_hit_drops_it() -> None:
    # Found in the cache and held by nobody else, the entry object is emptied into the
    # command and refilled in place: the same object comes back with the new state.
    # A command that fails after finding it drops it; the next folds in full.
    store = MemoryStore(state_cache=StateCache(min_events=0))
    open_with(store, "a", 10)
    execute_sync(store, Withdraw(account="a", amount=1))
    cache = store.state_cache
    assert cache is not None
    (entry,) = cache._entries.values()
    first = id(entry)
    del entry
    execute_sync(store, Withdraw(account="a", amount=2))
    (entry,) = cache._entries.values()
    assert id(entry) == first
    assert (entry.versions, entry.state) == ([4], Account(opened=True, balance=7))
    del entry
    with pytest.raises(BusinessRuleViolation):
        execute_sync(store, Withdraw(account="a", amount=100))
    assert len(cache) == 0
    execute_sync(store, Withdraw(account="a", amount=3))
    (entry,) = cache._entries.values()
    assert (entry.versions, entry.state) == ([5], Account(opened=True, balance=4))
    assert (cache.hits, cache.misses) == (2, 2)


# -- the map ---------------------------------------------------------------------------------


class _Eq:
    """A key value whose ``==`` runs Python: here it uses the cache it is compared in."""

    def __init__(self, cache: StateCache, n: int) -> None:
        self.cache, self.n = cache, n

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        self.cache.put(("side", id(self)), _core.CacheEntry(0, [], []), "X")  # re-enters
        len(self.cache)
        return isinstance(other, _Eq) and other.n == self.n


def test_the_map_compares_keys_like_a_dict_and_keeps_the_order_of_last_use() -> None:
    # The machine's keys are held as their parts (class, stream texts, values): a key
    # tuple from Python finds the same entry, a plain str and a StreamId are one stream,
    # values and keys of any other shape compare with Python's ==, and a put or take
    # makes an entry the most recently used, so the oldest is evicted first.
    cache = StateCache(3, min_events=0)
    e1, e2, e3, e4 = (_core.CacheEntry(i, [], []) for i in range(4))
    cache.put((Deposit, (StreamId("a"),)), e1, "Deposit")
    cache.put((Deposit, ("b",), (1, "x")), e2, "Deposit")
    cache.put(frozenset({"other", "shape"}), e3, "Q")
    assert (Deposit, ("a",)) in cache and (Withdraw, ("a",)) not in cache
    assert (Deposit, ("b",), (1, "x")) in cache and (Deposit, ("b",), (2, "x")) not in cache
    assert cache.take((Deposit, ("a",)), "Deposit") is e1  # a str finds a StreamId's entry
    assert cache.take((Deposit, ("a",)), "Deposit") is None  # taken: one caller gets it
    cache.put((Deposit, ("a",)), e1, "Deposit")  # now the newest
    assert list(cache._entries) == [
        (Deposit, ("b",), (1, "x")),
        frozenset({"other", "shape"}),
        (Deposit, ("a",)),
    ]
    cache.put((Deposit, ("b",), (1, "x")), e4, "Deposit")  # an equal key: replaced, newest
    assert len(cache) == 3 and cache._entries[(Deposit, ("b",), (1, "x"))] is e4
    cache.put((Deposit, ("c",)), e2, "Deposit")  # past the bound: the oldest goes
    assert frozenset({"other", "shape"}) not in cache and cache.evictions == 1
    assert list(cache._entries) == [
        (Deposit, ("a",)),
        (Deposit, ("b",), (1, "x")),
        (Deposit, ("c",)),
    ]
    cache.discard((Deposit, ("a",)))
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache._entries == {}


def test_a_key_value_whose_eq_uses_the_cache_runs_outside_its_lock() -> None:
    # Python's == on a key's values runs after the map's lock is released: here it puts
    # into the same cache, which would deadlock under the lock.
    cache = StateCache(100, min_events=0)
    entry = _core.CacheEntry(0, [], [])
    cache.put((Deposit, ("a",), (_Eq(cache, 1),)), entry, "Deposit")
    found: list[Any] = []
    worker = threading.Thread(
        target=lambda: found.append(cache.take((Deposit, ("a",), (_Eq(cache, 1),)), "Deposit"))
    )
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and found == [entry]
    assert (Deposit, ("a",), (_Eq(cache, 2),)) not in cache


# -- an entry in use -------------------------------------------------------------------------


class _Gate:
    """Holds a ``GatedDeposit``'s first ``handle`` until ``go``; ``fail`` makes it refuse."""

    def __init__(self, fail: bool = False) -> None:
        self.entered, self.go, self.fail = threading.Event(), threading.Event(), fail


_gates: dict[int, _Gate] = {}


class GatedDeposit(bank.SingleAccount):
    """A deposit whose first ``handle`` waits at the gate registered under its amount."""

    amount: int

    def handle(self, state: Account) -> list[tuple[str, Deposited]]:
        gate = _gates.get(self.amount)
        if gate is not None and not gate.entered.is_set():
            gate.entered.set()
            assert gate.go.wait(10)
            if gate.fail:
                raise BusinessRuleViolation("refused at the gate")
        return [(self.account, Deposited(self.amount))]


def _held_at_gate(store: MemoryStore, amount: int, fail: bool = False) -> Any:
    """Start ``GatedDeposit(a, amount)`` in a thread; return once it holds its entry."""
    gate = _gates[amount] = _Gate(fail)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(execute_sync(store, GatedDeposit(account="a", amount=amount)))
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert gate.entered.wait(10)

    def finish() -> Any:
        gate.go.set()
        worker.join(10)
        assert not worker.is_alive()
        return outcome[0]

    return finish


def _cached_account() -> tuple[MemoryStore, StateCache, Any]:
    """A store whose cache holds the entry of ``GatedDeposit`` on account ``a``, and its key."""
    store = MemoryStore(state_cache=StateCache(min_events=0))
    open_with(store, "a", 10)
    execute_sync(store, GatedDeposit(account="a", amount=1))
    cache = store.state_cache
    assert cache is not None
    return store, cache, (GatedDeposit, ("a",))


def _entry_is_a_full_fold(store: MemoryStore, entry: Any) -> None:
    (stream_id,), (version,) = entry.streams, entry.versions
    full = Account()
    for recorded in store.read_stream(stream_id)[:version]:
        full = fold_account(full, recorded.data)
    assert entry.state == full


def test_an_entry_in_use_is_not_there_for_another_command_and_is_put_back_after_it() -> None:
    # A command marks its entry's slot in use instead of taking it out: while it runs, the
    # entry is not in the cache for anyone (len, in, the listing), a second command on the
    # key misses, folds in full and puts its own; the first then conflicts, folds the
    # second's event onto its state and puts that back, replacing the second's entry.
    store, cache, key = _cached_account()
    finish = _held_at_gate(store, 2)
    assert key not in cache and len(cache) == 0 and cache._entries == {}
    execute_sync(store, GatedDeposit(account="a", amount=3))
    assert (cache.hits, cache.misses) == (1, 2) and key in cache and len(cache) == 1
    result = finish()
    assert result.attempts == 2
    assert balance(store, "a") == 16 and len(cache) == 1
    (entry,) = cache._entries.values()
    assert entry.versions == [store.stream_version("a")] == [5]
    assert entry.state == Account(opened=True, balance=16)
    _entry_is_a_full_fold(store, entry)
    execute_sync(store, GatedDeposit(account="a", amount=4))
    assert (cache.hits, cache.misses) == (2, 2) and balance(store, "a") == 20


def test_a_failure_in_use_drops_only_its_own_slot() -> None:
    # A command that fails after finding its entry drops it; if another command's put has
    # replaced the slot meanwhile, that entry stays.
    store, cache, key = _cached_account()
    finish = _held_at_gate(store, 5, fail=True)
    assert isinstance(finish(), BusinessRuleViolation)
    assert key not in cache and len(cache) == 0
    execute_sync(store, GatedDeposit(account="a", amount=1))  # folds in full, kept
    finish = _held_at_gate(store, 6, fail=True)
    execute_sync(store, GatedDeposit(account="a", amount=3))  # misses, replaces the slot
    assert isinstance(finish(), BusinessRuleViolation)
    assert key in cache and len(cache) == 1
    (entry,) = cache._entries.values()
    assert entry.state == Account(opened=True, balance=15)
    _entry_is_a_full_fold(store, entry)


def test_eviction_skips_an_entry_in_use_which_comes_back_as_the_newest() -> None:
    # Bound 1: while "a"'s entry is in use it is not counted, so "b"'s put evicts nothing;
    # "a"'s put back makes it the newest, and the bound then evicts "b".
    store = MemoryStore(state_cache=StateCache(1, min_events=0))
    open_with(store, "a", 10)
    open_with(store, "b", 10)
    execute_sync(store, GatedDeposit(account="a", amount=1))
    cache = store.state_cache
    assert cache is not None
    finish = _held_at_gate(store, 7)
    execute_sync(store, GatedDeposit(account="b", amount=1))
    assert cache.evictions == 0 and list(cache._entries) == [(GatedDeposit, ("b",))]
    assert finish().attempts == 1
    assert cache.evictions == 1 and list(cache._entries) == [(GatedDeposit, ("a",))]
    (entry,) = cache._entries.values()
    assert entry.state == Account(opened=True, balance=18)


class StaticApply(Deposit):
    """A Deposit whose ``apply`` is a staticmethod, counting its calls."""

    calls: ClassVar[list[int]] = []

    @staticmethod
    def apply(state: Account, event: Any, stream_id: str) -> Account:  # type: ignore[override]
        StaticApply.calls.append(getattr(event, "amount", 0))
        return fold_account(state, event)


def test_own_events_are_folded_by_what_attribute_lookup_finds_for_apply() -> None:
    # A hit folds the command's own event into the state it keeps, calling `apply` as the
    # attribute lookup finds it (here a staticmethod: no `self`), once per own event. (Its
    # key holds `amount`: the analysis cannot see what a staticmethod reads.)
    store = MemoryStore(state_cache=StateCache(min_events=0))
    open_with(store, "a", 10)
    execute_sync(store, StaticApply(account="a", amount=1))  # a full fold, then its own
    StaticApply.calls.clear()
    execute_sync(store, StaticApply(account="a", amount=1))  # a hit: its own event only
    assert StaticApply.calls == [1]
    cache = store.state_cache
    assert cache is not None and (cache.hits, cache.misses) == (1, 1)
    (entry,) = cache._entries.values()
    assert (entry.versions, entry.state) == ([4], Account(opened=True, balance=12))
    _entry_is_a_full_fold(store, entry)
