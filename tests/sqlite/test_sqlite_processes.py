"""Several processes on one SQLite file: concurrent writers, a reader that waits, a crash.

Each child is a fresh interpreter (``python -c``) that opens the same file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventcore import RetryPolicy, execute_sync
from eventcore.examples import bank
from eventcore.sqlite import SqliteStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and locks")

WRITER = """
import sys
from eventcore import NewEvent, RetryPolicy, execute_sync
from eventcore.examples import bank
from eventcore.sqlite import SqliteStore

path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SqliteStore(path, registry=bank.registry)
policy = RetryPolicy(max_attempts=1000, max_delay=0.01)
print("ready", flush=True)
sys.stdin.readline()  # both writers start together
for i in range(n):
    # A command on the account both processes write (conflicts, retried) ...
    execute_sync(store, bank.Deposit(account="shared", amount=1), retry=policy)
    # ... and an append with an exact expected version to this process's own stream.
    own = f"own-{name}"
    store.append([NewEvent(own, "demo.bank.Deposited", b"%d" % i)], expected={own: i})
store.close()
print("done", flush=True)
"""


def _spawn(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _expect(child: subprocess.Popen[str], line: str) -> None:
    assert child.stdout is not None
    got = child.stdout.readline().strip()
    assert got == line, f"child said {got!r}, expected {line!r}"


def test_two_writer_processes_lose_duplicate_and_reorder_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteStore(path, registry=bank.registry)
    execute_sync(store, bank.OpenAccount(account="shared", owner="both"))
    n = 150
    children = [_spawn(WRITER, path, name, n) for name in ("a", "b")]
    try:
        for child in children:
            _expect(child, "ready")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            _expect(child, "done")
            assert child.wait(60) == 0
    finally:
        for child in children:
            child.kill()
    log = store.read_all()
    # Dense positions: every event, 1..N, no gap, no duplicate.
    assert [e.position for e in log] == list(range(1, 1 + 1 + 4 * n))
    assert len({e.event_id for e in log}) == len(log)
    # Each stream's versions are 1..k in log order; each writer's own events in its order.
    for name in ("a", "b"):
        own = [e for e in log if e.stream_id == f"own-{name}"]
        assert [e.version for e in own] == list(range(1, n + 1))
        assert [e.payload for e in own] == [b"%d" % i for i in range(n)]
    shared = [e for e in log if e.stream_id == "shared"]
    assert [e.version for e in shared] == list(range(1, 2 * n + 2))
    balance = execute_sync(store, bank.Deposit(account="shared", amount=1))
    assert balance.stream_versions["shared"] == 2 * n + 2
    assert sum(e.data.amount for e in shared[1:]) == 2 * n
    store.close()


READER = """
import sys, time
from eventcore.sqlite import SqliteStore

store = SqliteStore(sys.argv[1])
after = store.head()
print("ready", after, flush=True)
head = store.wait_for_append(after, 30.0)
print("woke", head, time.time(), flush=True)
store.close()
"""


def test_a_reader_in_another_process_wakes_on_an_append(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteStore(path)
    store.append([bank_event("x")])
    child = _spawn(READER, path)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["ready", "1"]
        time.sleep(0.3)  # the reader backs off to its longest pause meanwhile
        appended = time.time()
        store.append([bank_event("y")])
        word, head, woke = child.stdout.readline().split()
        assert (word, int(head)) == ("woke", 2)
        # Polled with backoff up to poll_interval (0.02 s): well under a second.
        assert float(woke) - appended < 1.0
        assert child.wait(10) == 0
    finally:
        child.kill()
        store.close()


def bank_event(stream: str) -> tuple[str, str, bytes, None]:
    return (stream, "demo.bank.Deposited", b'{"amount":1}', None)


CRASHER = """
import sys, time
from eventcore.sqlite import SqliteStore

store = SqliteStore(sys.argv[1])  # synchronous=FULL: durable once acknowledged
result = store.append([("acked", "demo.bank.Deposited", b"1", None)])
print("acked", result.events[0].event_id, flush=True)
time.sleep(60)  # killed here, the store never closed
"""


def test_an_acknowledged_append_survives_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SqliteStore(path).close()
    child = _spawn(CRASHER, path)
    try:
        assert child.stdout is not None
        word, event_id = child.stdout.readline().split()
        assert word == "acked"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
    reopened = SqliteStore(path)
    [event] = reopened.read_all()
    assert (str(event.event_id), event.stream_id, event.payload) == (event_id, "acked", b"1")
    # The file is writable again at once (the dead writer's lock went with it).
    reopened.append([("after", "demo.bank.Deposited", b"2", None)])
    assert reopened.head() == 2
    reopened.close()


LEADER = """
import asyncio, sys
from eventcore.sqlite import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    lease = store.aio.checkpoint_store().lease("report")
    print("took" if await lease.acquire() else "busy", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_lease_excludes_other_processes_until_its_holder_dies(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteStore(path)
    checkpoints = store.aio.checkpoint_store()
    assert checkpoints.exclusive and checkpoints.transactional
    child = _spawn(LEADER, path)
    try:
        _expect(child, "took")
        lease = checkpoints.lease("report")
        assert not await lease.acquire()  # held by the child
        assert await checkpoints.lease("other").acquire()  # another projection: free
        child.kill()
        child.wait(10)
        assert await lease.acquire()  # the OS released the dead holder's lock
        await lease.check()
        await lease.release()
        with pytest.raises(Exception, match="not held"):
            await lease.check()
    finally:
        child.kill()
        store.close()


def test_a_busy_write_lock_is_store_unavailable_and_retried(tmp_path: Path) -> None:
    """Another connection holds the write lock past busy_timeout: StoreUnavailable,
    nothing written; execute_sync rides it out once the lock is free."""
    import sqlite3
    import threading

    from eventcore import StoreUnavailable

    path = tmp_path / "events.db"
    store = SqliteStore(path, registry=bank.registry, busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable):
        store.append([bank_event("x")])
    assert store.head() == 0  # readers are never blocked
    threading.Timer(0.3, blocker.execute, ("COMMIT",)).start()
    result = execute_sync(
        store,
        bank.OpenAccount(account="acc", owner="ann"),
        retry=RetryPolicy(unavailable_initial_delay=0.05),
    )
    assert result.stream_versions == {"acc": 1}
    blocker.close()
    store.close()
