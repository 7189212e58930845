"""No command ends with an unknown outcome, on a real server: a TCP proxy that loses the
reply of a committed append, then the caller's retry with the same idempotency key."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from tests.postgres.pg_bank import BANK, Deposit, Transfer, balance_of, open_accounts

from eventcore import (
    IdempotencyKeyReused,
    OutcomeUnknown,
    RetryPolicy,
    StoreUnavailable,
    UsageError,
    execute,
    execute_sync,
)
from eventcore.observe import Hook, add_hook, remove_hook
from eventcore.postgres import PostgresStore

pytestmark = pytest.mark.postgres

GIVE_UP = RetryPolicy(retry_unavailable=False)  # the caller's request timed out, say


class LosingProxy:
    """A TCP proxy on 127.0.0.1 in front of the test server.

    Once armed with a byte pattern, it forwards the first client message that contains
    every pattern to the server, swallows the server's whole reply (up to ReadyForQuery,
    i.e. after the commit) and then cuts the client's link: a committed append whose reply
    was lost. ``refuse`` makes it refuse new connections (nothing can be sent).
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.patterns: list[bytes] | None = None
        self.cut = asyncio.Event()
        self.refuse = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> LosingProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def arm(self, *patterns: bytes) -> None:
        self.patterns = list(patterns)
        self.cut.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        losing = asyncio.Event()

        async def to_server() -> None:
            while data := await reader.read(65536):
                patterns = self.patterns
                if patterns and all(p in data for p in patterns):
                    self.patterns = None
                    losing.set()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if losing.is_set():
                    # Drop the reply; once ReadyForQuery ('Z') went by, the transaction
                    # has committed: cut the client off.
                    if b"Z\x00\x00\x00\x05" in data:
                        writer.transport.abort()
                        up_writer.transport.abort()
                        self.cut.set()
                        return
                    continue
                writer.write(data)
                await writer.drain()
            writer.close()

        pumps = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
        self.tasks.update(pumps)
        with contextlib.suppress(Exception):
            await asyncio.gather(*pumps, return_exceptions=True)
        self.tasks.difference_update(pumps)
        writer.transport.abort()
        up_writer.transport.abort()


@pytest.fixture
async def proxied(postgres_dsn, postgres_store_factory):
    """``(direct store, proxy, make)``: ``make()`` opens a store on the same schema through
    the proxy (a fresh pool, like another process)."""
    direct = await postgres_store_factory(registry=BANK)
    url = urlsplit(postgres_dsn)
    proxy = await LosingProxy(url.hostname or "127.0.0.1", url.port or 5432).start()
    netloc = url.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    dsn = urlunsplit(url._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))
    made: list[PostgresStore] = []

    async def make() -> PostgresStore:
        store = PostgresStore(dsn, schema=direct.schema, registry=BANK, max_size=2)
        made.append(store)
        return await store.open()

    try:
        yield direct, proxy, make
    finally:
        for store in made:
            await store.close()
        await proxy.close()


def key_id(key: str) -> bytes:
    """The bytes of the first event id an idempotency key derives (as sent in a Bind)."""
    from eventcore._pipeline import key_event_id

    return key_event_id(key).bytes


async def test_reply_lost_after_commit_then_caller_retries_with_the_key(proxied):
    direct, proxy, make = proxied
    await open_accounts(direct, ["a", "b"], 100)
    store = await make()
    command = Transfer(source="a", target="b", amount=100)  # a second run would be refused
    # The append's request is the message carrying the key's first id AND the streams
    # (the key's lookup carries the id only).
    proxy.arm(key_id("pay-1"), b"demo.bank.Withdrawn")
    with pytest.raises(OutcomeUnknown) as info:
        await execute(store, command, idempotency_key="pay-1", retry=GIVE_UP)
    assert proxy.cut.is_set()
    # It was committed: the ids the error carries are stored, once.
    stored = await direct.read_events_by_id(info.value.event_ids)
    assert [e.event_id for e in stored] == info.value.event_ids
    assert [(e.stream_id, e.event_type) for e in stored] == [
        ("a", "demo.bank.Withdrawn"),
        ("b", "demo.bank.Deposited"),
    ]
    # The caller retries, from another process (another pool): the first outcome, and
    # nothing new written, although the command would now fail its rules.
    again = await execute(await make(), command, idempotency_key="pay-1")
    assert again.replayed
    assert [e.event_id for e in again.events] == info.value.event_ids
    assert list(again.positions) == [e.position for e in stored]
    assert again.stream_versions == {"a": 3, "b": 3}
    assert await balance_of(direct, "a") == 0
    assert await balance_of(direct, "b") == 200
    assert len(await direct.read_stream("a")) == 3


async def test_reply_lost_after_commit_is_resent_by_the_executor(proxied):
    direct, proxy, make = proxied
    await open_accounts(direct, ["a"], 0)
    store = await make()
    proxy.arm(key_id("dep-1"), b"demo.bank.Deposited")
    retry = RetryPolicy(unavailable_initial_delay=0.01)
    result = await execute(
        store, Deposit(account="a", amount=5), idempotency_key="dep-1", retry=retry
    )
    assert proxy.cut.is_set()
    assert result.attempts == 2  # the resend found its own events: written once
    assert [e.event_type for e in await direct.read_stream("a")] == [
        "demo.bank.AccountOpened",
        "demo.bank.Deposited",
        "demo.bank.Deposited",
    ]
    assert await balance_of(direct, "a") == 5


async def test_refused_connection_is_known_not_written(proxied):
    direct, proxy, make = proxied
    await open_accounts(direct, ["a"], 0)
    store = await make()
    await store.close()  # no pooled connection left: the next one is refused
    proxy.refuse = True
    with pytest.raises(StoreUnavailable) as info:
        await execute(store, Deposit(account="a", amount=5), retry=GIVE_UP)
    assert not isinstance(info.value, OutcomeUnknown)
    assert await balance_of(direct, "a") == 0


async def test_same_key_at_once_writes_once(postgres_store_factory):
    store = await postgres_store_factory(registry=BANK, max_size=8)
    await open_accounts(store, ["a", "b"], 100)
    retry = RetryPolicy(max_attempts=20, initial_delay=0.001)
    command = Transfer(source="a", target="b", amount=60)  # only one can succeed for real
    results = await asyncio.gather(
        *(execute(store, command, idempotency_key="t-9", retry=retry) for _ in range(6))
    )
    assert len({tuple(e.event_id for e in r.events) for r in results}) == 1
    assert await balance_of(store, "a") == 40
    assert len(await store.read_all()) == 6


async def test_key_reused_for_another_command_on_postgres(postgres_store_factory):
    store = await postgres_store_factory(registry=BANK)
    await open_accounts(store, ["a"], 0)
    await execute(store, Deposit(account="a", amount=5), idempotency_key="k")
    with pytest.raises(IdempotencyKeyReused):
        await execute(store, Deposit(account="a", amount=6), idempotency_key="k")
    assert await balance_of(store, "a") == 5


async def test_read_events_by_id_on_postgres(postgres_store_factory):
    store = await postgres_store_factory(registry=BANK)
    await open_accounts(store, ["a", "b"], 1)
    events = await store.read_all()
    ids = [e.event_id for e in events]
    assert await store.read_events_by_id([ids[3], uuid.uuid4(), ids[0]]) == [events[0], events[3]]
    assert await store.read_events_by_id([i.int for i in ids]) == events
    assert await store.read_events_by_id([]) == []


async def test_execute_sync_on_postgres_says_to_await_execute():
    store = PostgresStore("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(UsageError, match=r"await execute\(store, command\)"):
        execute_sync(store, Deposit(account="a", amount=1))  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        execute_sync(store, Deposit(account="a", amount=1), idempotency_key="k")  # type: ignore[arg-type]


async def test_default_policy_rides_out_a_server_restart(postgres_server, postgres_store_factory):
    if not postgres_server.can_restart:
        pytest.skip("the server comes from EVENTCORE_TEST_DSN")
    store = await postgres_store_factory(registry=BANK, max_size=4)
    accounts = [f"acct-{i}" for i in range(4)]
    await open_accounts(store, accounts, 0)
    done: list[int] = []
    stop = asyncio.Event()

    class Retries(Hook):
        unavailable = 0

        def after_execute(self, report: Any) -> None:
            self.unavailable += sum(r.reason == "unavailable" for r in report.retries)

    retries = Retries()

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():  # the default policy: no error may surface
            i += 1
            await execute(
                store, Deposit(account=accounts[n], amount=1), idempotency_key=f"w{n}-{i}"
            )
            done.append(n)

    add_hook(retries)
    try:
        workers = [asyncio.create_task(worker(n)) for n in range(4)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(postgres_server.restart)
        before = len(done)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 60)
    finally:
        remove_hook(retries)
    assert retries.unavailable > 0  # the restart was seen, and ridden out
    assert len(done) > before
    for n, account in enumerate(accounts):
        assert await balance_of(store, account) == done.count(n)  # each exactly once
