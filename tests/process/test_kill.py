"""A process manager killed (SIGKILL) between its commands and its checkpoint.

The child process reacts to a page of events, executes their commands, and is killed by
its checkpoint store the moment it would save: the restart gets the page again and
writes nothing new. Runs on every store another process can open (``shared_store``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventcore.process import ProcessRunner
from tests.process.domain import PingPong, ping, pongs
from tests.projection.conftest import all_events

ROOT = Path(__file__).resolve().parents[2]

# Opens the test's store in the child: ``async def open_store()`` per store kind.
OPENERS = {
    "postgres": """
        from eventcore.postgres import PostgresStore

        async def open_store():
            return PostgresStore({dsn!r}, schema={schema!r})
    """,
    "sqlite": """
        from eventcore.sqlite import SqliteStore

        async def open_store():
            return SqliteStore({path!r}).aio
    """,
}

CHILD = """
import asyncio, os, signal, sys
sys.path.insert(0, {root!r})
from eventcore.process import ProcessRunner
from tests.process.domain import PingPong
{opener}

class KillOnSave:
    '''The store's checkpoints, except that saving one kills this process.'''

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def save(self, name, position):
        os.kill(os.getpid(), signal.SIGKILL)

async def main():
    store = await open_store()
    checkpoints = KillOnSave(store.checkpoint_store())
    runner = ProcessRunner(store, PingPong(), checkpoints=checkpoints, page_size=5)
    await runner.run_until_caught_up()
    sys.exit("the checkpoint was never saved")

asyncio.run(main())
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, str]:
    """A store and the code that opens the same store in another process."""
    if request.param == "sqlite":
        sqlite = pytest.importorskip("eventcore.sqlite")  # until the SQLite store lands
        path = str(tmp_path / "events.db")
        store = sqlite.SqliteStore(path)
        request.addfinalizer(store.close)
        return store.aio, textwrap.dedent(OPENERS["sqlite"].format(path=path))
    store = request.getfixturevalue("postgres_store")
    dsn = request.getfixturevalue("postgres_dsn")
    opener = OPENERS["postgres"].format(dsn=dsn, schema=store.schema)
    return store, textwrap.dedent(opener)


async def test_sigkill_between_commands_and_checkpoint(shared_store: tuple[Any, str]) -> None:
    store, opener = shared_store
    await store.append([ping(n) for n in range(10)])
    code = CHILD.format(root=str(ROOT), opener=opener)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == -9, err.decode()
    # The child executed the first page's commands, then died before its checkpoint.
    assert await pongs(store) == [0, 1, 2, 3, 4]
    assert await pongs(store, "evens") == [0, 2, 4]
    checkpoints = store.checkpoint_store()
    assert await checkpoints.load("pingpong") == 0
    written = len(await all_events(store))

    runner = ProcessRunner(store, PingPong(), checkpoints=checkpoints, takeover_interval=0.05)
    await asyncio.wait_for(runner.run_until_caught_up(), 60)
    assert await pongs(store) == list(range(10))
    assert await pongs(store, "evens") == [0, 2, 4, 6, 8]
    assert len(await all_events(store)) == written + 5 + 2  # the second page's commands
    assert await checkpoints.load("pingpong") == await store.head()


class HangOnFired:
    """A store that never finishes appending a DeadlineFired record."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reached = asyncio.Event()

    @property
    def aio(self) -> HangOnFired:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, events: list[Any], **kw: Any) -> Any:
        if any(e[1] == "eventcore.process.DeadlineFired" for e in events):  # (type)
            self.reached.set()
            await asyncio.Event().wait()
        return await self.inner.append(events, **kw)


async def test_crash_between_deadline_command_and_its_record(store: Any) -> None:
    await store.append([ping(6, later=True)])
    later = datetime.now(UTC) + timedelta(hours=1)
    hanging = HangOnFired(store)
    first = ProcessRunner(hanging, PingPong(), clock=lambda: later)
    await first.run_until_caught_up()
    task = asyncio.create_task(first.fire_due())
    await asyncio.wait_for(hanging.reached.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await pongs(store, "later") == [6]  # the command ran; its deadline is still open
    restarted = ProcessRunner(store, PingPong(), clock=lambda: later)
    assert len(await restarted.deadlines("pingpong")) == 1
    assert await restarted.fire_due() == 1
    assert await pongs(store, "later") == [6]  # replayed under its key: written once
    assert await restarted.deadlines("pingpong") == []
