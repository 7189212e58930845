"""Concurrent transfers (threads and asyncio tasks) on one in-memory store.

Money is conserved, no account is ever overdrawn (a lost update would allow it), no event
is lost or duplicated, stream versions are contiguous, global positions are contiguous.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from eventcore import (
    BusinessRuleViolation,
    ConcurrencyConflict,
    ExecutionResult,
    MemoryStore,
    RetryPolicy,
    execute,
    execute_sync,
)

from .bank_domain import Deposited, Transfer, Withdrawn, new, open_with

ACCOUNTS = [f"acc-{i}" for i in range(6)]
INITIAL = 100
RETRY = RetryPolicy(max_attempts=200, initial_delay=0.00005, max_delay=0.001, jitter=1.0)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads often, so commands really interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def funded_store() -> MemoryStore:
    store = MemoryStore()
    for account in ACCOUNTS:
        open_with(store, account, INITIAL)
    return store


class Outcomes:
    """What the workers saw: successful results (with their commands), rejections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: list[tuple[Transfer, ExecutionResult]] = []
        self.rejected = 0
        self.gave_up = 0

    def record(self, command: Transfer, result: ExecutionResult | None, error: Any) -> None:
        with self.lock:
            if result is not None:
                self.done.append((command, result))
            elif isinstance(error, BusinessRuleViolation):
                self.rejected += 1
            else:
                assert isinstance(error, ConcurrencyConflict), error
                self.gave_up += 1


def random_transfer(rng: random.Random) -> Transfer:
    source, target = rng.sample(ACCOUNTS, 2)
    return Transfer(source=source, target=target, amount=rng.randint(1, 60))


def verify(store: MemoryStore, outcomes: Outcomes, commands: int) -> None:
    assert len(outcomes.done) + outcomes.rejected + outcomes.gave_up == commands
    setup = 2 * len(ACCOUNTS)
    log = store.read_all()

    # Global positions: 1..n, strictly increasing and contiguous; nothing extra or missing.
    assert [e.position for e in log] == list(range(1, len(log) + 1))
    assert store.head() == len(log) == len(store)
    assert len(log) == setup + 2 * len(outcomes.done)

    # No event lost or duplicated: every successful result's ids appear exactly once, where
    # the result says they are.
    ids = Counter(e.event_id for e in log)
    assert all(n == 1 for n in ids.values())
    by_id = {e.event_id: e for e in log}
    for command, result in outcomes.done:
        assert len(result.events) == 2
        for written, (stream_id, data) in zip(
            result.events,
            [
                (command.source, Withdrawn(command.amount)),
                (command.target, Deposited(command.amount)),
            ],
            strict=True,
        ):
            stored = by_id[written.event_id]
            assert (stored.stream_id, stored.version, stored.position) == (
                written.stream_id,
                written.version,
                written.position,
            )
            assert (stored.stream_id, stored.data) == (stream_id, data)
    written_ids = [w.event_id for _, r in outcomes.done for w in r.events]
    assert len(written_ids) == len(set(written_ids)) == len(log) - setup

    # Stream versions are contiguous 1..v, in log order.
    versions: dict[str, list[int]] = {}
    for e in log:
        versions.setdefault(e.stream_id, []).append(e.version)
    for account in ACCOUNTS:
        v = versions[account]
        assert v == list(range(1, len(v) + 1))
        assert store.stream_version(account) == len(v)
        assert [e.version for e in store.read_stream(account)] == v

    # Money: conserved, never overdrawn at any point of the log, and equal to the sum of
    # the successful transfers.
    running = dict.fromkeys(ACCOUNTS, 0)
    for e in log:
        data = e.data
        if isinstance(data, Deposited):
            running[e.stream_id] += data.amount
        elif isinstance(data, Withdrawn):
            running[e.stream_id] -= data.amount
            assert running[e.stream_id] >= 0, f"{e.stream_id} overdrawn at position {e.position}"
    assert sum(running.values()) == INITIAL * len(ACCOUNTS)
    expected = dict.fromkeys(ACCOUNTS, INITIAL)
    for command, _ in outcomes.done:
        expected[command.source] -= command.amount
        expected[command.target] += command.amount
    assert running == expected


def test_threads_running_transfers_with_retries(fast_switching: None) -> None:
    store = funded_store()
    outcomes = Outcomes()
    n_threads, per_thread = 8, 150
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(per_thread):
                command = random_transfer(rng)
                try:
                    result = execute_sync(store, command, retry=RETRY)
                except (BusinessRuleViolation, ConcurrencyConflict) as exc:
                    outcomes.record(command, None, exc)
                else:
                    outcomes.record(command, result, None)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    verify(store, outcomes, n_threads * per_thread)
    assert len(outcomes.done) > 0
    # The commands really raced: some needed more than one attempt.
    assert sum(r.attempts for _, r in outcomes.done) > len(outcomes.done)


class YieldingStore:
    """The in-memory store's async view, yielding to other tasks between read and append."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.registry = store.registry

    async def read_fold(self, *args: Any) -> Any:
        result = await self.store.aio.read_fold(*args)
        await asyncio.sleep(0)
        return result

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return await self.store.aio.append(*args, **kwargs)


async def run_tasks(store: Any, outcomes: Outcomes, n_tasks: int, per_task: int, seed: int) -> None:
    async def worker(task_seed: int) -> None:
        rng = random.Random(task_seed)
        for _ in range(per_task):
            command = random_transfer(rng)
            try:
                result = await execute(store, command, retry=RETRY)
            except (BusinessRuleViolation, ConcurrencyConflict) as exc:
                outcomes.record(command, None, exc)
            else:
                outcomes.record(command, result, None)

    await asyncio.gather(*(worker(seed * 1000 + i) for i in range(n_tasks)))


async def test_asyncio_tasks_running_transfers_with_retries() -> None:
    store = funded_store()
    outcomes = Outcomes()
    n_tasks, per_task = 40, 25
    await run_tasks(YieldingStore(store), outcomes, n_tasks, per_task, seed=1)
    verify(store, outcomes, n_tasks * per_task)
    assert sum(r.attempts for _, r in outcomes.done) > len(outcomes.done)


async def test_asyncio_tasks_on_the_plain_async_view() -> None:
    store = funded_store()
    outcomes = Outcomes()
    await run_tasks(store, outcomes, n_tasks=20, per_task=20, seed=2)
    verify(store, outcomes, 400)


def test_event_loops_in_many_threads_share_one_store(fast_switching: None) -> None:
    store = funded_store()
    outcomes = Outcomes()
    n_threads, n_tasks, per_task = 4, 8, 15
    errors: list[BaseException] = []

    def thread_main(seed: int) -> None:
        try:
            target: Any = YieldingStore(store) if seed % 2 else store
            asyncio.run(run_tasks(target, outcomes, n_tasks, per_task, seed))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    verify(store, outcomes, n_threads * n_tasks * per_task)


def test_verify_catches_a_duplicated_or_lost_event() -> None:
    """The checker itself: a duplicated write or a dropped one must be detected."""
    store = funded_store()
    outcomes = Outcomes()
    command = Transfer(source="acc-0", target="acc-1", amount=5)
    result = execute_sync(store, command)
    outcomes.record(command, result, None)
    verify(store, outcomes, 1)

    # A duplicate: the same transfer's events written a second time (new ids).
    store.append([new("acc-0", Withdrawn(5)), new("acc-1", Deposited(5))])
    with pytest.raises(AssertionError):
        verify(store, outcomes, 1)

    # A lost event: a result the log does not contain.
    store = funded_store()
    outcomes = Outcomes()
    outcomes.record(command, result, None)
    with pytest.raises((AssertionError, KeyError)):
        verify(store, outcomes, 1)


def test_head_never_goes_backwards_and_is_always_readable(fast_switching: None) -> None:
    """Regression: ``head`` was published after the write lock was released, so a slower
    writer could overwrite a newer head with its older one (one run saw 109 regressions)."""
    store = MemoryStore()
    stop = threading.Event()
    payload = b"x" * 64
    observed: list[tuple[int, int]] = []  # (regressions, unreadable heads)

    def writer(n: int) -> None:
        batch = [(f"w-{n}", "T", payload, None)] * 300  # contended: the lock is released
        while not stop.is_set():
            store.append(batch)
            store.append([(f"w-{n}", "T", payload, None)])

    def watcher() -> None:
        last = regressions = unreadable = 0
        while not stop.is_set():
            head = store.head()
            if head < last:
                regressions += 1
            elif head > 0 and not store.read_all(after_position=head - 1, limit=1):
                unreadable += 1
            last = max(last, head)
        observed.append((regressions, unreadable))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=watcher))
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert observed == [(0, 0)]
    assert store.head() == len(store.read_all())
