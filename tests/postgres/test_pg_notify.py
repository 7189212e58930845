"""Post-commit notifications are sent only while someone listens (issue 11).

A NOTIFY costs the appending process a round trip and the server a transaction; with no
listener it wakes nobody. Listeners mark themselves with a shared session lock keyed by
the channel, which a notifier looks for every so often.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from eventcore import NewEvent
from eventcore.postgres import PostgresStore, _notify
from eventcore.postgres._sql import channel

pytestmark = pytest.mark.postgres


async def appended_and_announced(store, stream: str) -> int:
    """Append one event and wait until its notification (if any) went out."""
    written = await store.append([NewEvent(stream, "t", b"")])
    task = store._notifier.task
    if task is not None:
        await task
    return written.last_position


async def test_nothing_is_sent_while_nobody_listens_and_listeners_are_woken(
    postgres_store_factory, postgres_dsn, monkeypatch
):
    monkeypatch.setattr(_notify, "NOBODY_RECHECK", 0.05)
    monkeypatch.setattr(_notify, "LISTENERS_RECHECK", 0.2)
    writer = await postgres_store_factory()
    # Another process's store on the same schema; its polls alone would be far too slow.
    reader = await PostgresStore.connect(postgres_dsn, schema=writer.schema, poll_interval=30)
    # A plain LISTEN (no marker lock) on the channel hears what is sent.
    heard: list[str] = []
    spy = await asyncpg.connect(postgres_dsn)
    await spy.add_listener(channel(writer.schema), lambda *a: heard.append(a[-1]))
    try:
        for i in range(3):
            await appended_and_announced(writer, f"quiet{i}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert heard == []  # nobody marked as listening: no NOTIFY at all
        assert writer._notifier.listened is False

        assert await reader._listener.subscribe()
        await asyncio.sleep(0.06)  # the writer looks again after NOBODY_RECHECK
        head = await writer.head()
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiter = asyncio.create_task(reader.wait_for_append(head, 10))
        await asyncio.sleep(0.05)
        last = await appended_and_announced(writer, "loud")
        assert await waiter == last
        assert loop.time() - started < 2  # a notification, not the 30 s poll
        assert writer._notifier.listened is True
        await asyncio.sleep(0.05)
        assert heard and int(heard[-1]) == last

        # The listener goes away: after LISTENERS_RECHECK the writer stops sending.
        await reader._listener.close()
        await asyncio.sleep(0.25)
        await appended_and_announced(writer, "after")
        assert writer._notifier.listened is False
        count = len(heard)
        await asyncio.sleep(0.01)
        await appended_and_announced(writer, "after2")
        await asyncio.sleep(0.05)
        assert len(heard) == count
    finally:
        await spy.close()
        await reader.close()
