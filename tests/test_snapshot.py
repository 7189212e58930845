"""Durable snapshots: keys, the state type, encoding, the policy, and every way to fail."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from typing import Any, Generic, TypeVar

import pytest

from eventcore import Command, StreamId, stream
from eventcore.examples.bank import Account, Deposit, Transfer
from eventcore.registry import JsonCodec, MsgpackCodec
from eventcore.snapshot import (
    MemorySnapshotStore,
    Snapshot,
    Snapshotter,
    snapshot_key,
    state_type,
)

S = TypeVar("S")


class Opaque:
    """A state without __eq__: it never compares equal to its decoded copy."""

    def __init__(self, n: int = 0) -> None:
        self.n = n


class Base(Command[S, Any], Generic[S]):
    """A generic intermediate base: the state type comes from a subclass."""

    account: StreamId = stream()

    def apply(self, state: Any, event: Any, stream_id: str) -> Any:
        return state

    def handle(self, state: Any) -> list[tuple[str, Any]]:
        return []


class CountCmd(Base[Account]):
    def initial_state(self) -> Account:
        return Account()


class Untyped(Base[S]):
    def initial_state(self) -> Any:
        return Account()


class Explicit(Untyped[Any]):
    snapshot_state = Account


class OpaqueCmd(Base[Opaque]):
    def initial_state(self) -> Opaque:
        return Opaque()


class Every5(CountCmd):
    snapshot_every = 5


class Never(CountCmd):
    snapshot_every = 0


class V2(CountCmd):
    snapshot_version = 2


def snapper(every: int | None = 100, codec: Any = None) -> Snapshotter:
    return Snapshotter(MemorySnapshotStore(), codec or MsgpackCodec(), every)


def take(s: Snapshotter, cls: type, state: Any, versions: tuple[int, ...] = (3,)) -> Any:
    streams = ["a", "b"][: len(versions)]
    return s.take(cls, "k", streams, versions, 0, 0, state)


def test_state_type_comes_from_the_generic_parameter_or_the_class() -> None:
    assert state_type(Deposit) is Account  # through SingleAccount(Command[Account, ...])
    assert state_type(Transfer) == dict[str, Account]
    assert state_type(CountCmd) is Account  # through a generic intermediate base
    assert state_type(Untyped) is None  # still a TypeVar
    assert state_type(Explicit) is Account


def test_key_is_stable_across_processes_and_distinguishes_parts() -> None:
    key = snapshot_key(Deposit, ["acc-1", 5])
    assert key is not None and key.startswith("eventcore.examples.bank.Deposit:")
    assert snapshot_key(Deposit, ["acc-1", 6]) != key
    assert snapshot_key(Transfer, ["acc-1", 5]) != key
    assert snapshot_key(Deposit, [StreamId("acc-1"), 5]) == key  # value types as builtins
    assert snapshot_key(Deposit, [object()]) is None  # no repr-based keys
    code = (
        "from eventcore.snapshot import snapshot_key;"
        "from eventcore.examples.bank import Deposit;"
        "print(snapshot_key(Deposit, ['acc-1', 5]))"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == key


@pytest.mark.parametrize("codec", [MsgpackCodec(), JsonCodec()])
def test_take_then_restore_gives_an_equal_state(codec: Any) -> None:
    s = snapper(codec=codec)
    state = {"a": Account(True, 5), "b": Account(True, 7)}
    snap = take(s, Transfer, state, (2, 2))
    assert snap is not None and snap.events == 4 and snap.schema_version == 1
    assert snap.streams == ("a", "b") and snap.versions == (2, 2) and snap.fold_from == 0
    ok, restored = s.restore(Transfer, snap, ["a", "b"])
    assert ok and restored == state and restored is not state
    assert type(restored["a"]) is Account


def test_another_schema_version_is_ignored_silently(caplog: Any, snapshot_failures: Any) -> None:
    s = snapper()
    snap = take(s, CountCmd, Account(True, 1))
    assert snap is not None
    assert s.restore(V2, snap, ["a"]) == (False, None)  # V2 is at schema 2
    assert take(s, V2, Account()).schema_version == 2  # type: ignore[union-attr]
    assert snapshot_failures == [] and not caplog.records


def test_a_snapshot_of_other_declared_streams_is_refused() -> None:
    s = snapper()
    snap = take(s, CountCmd, Account(True, 1))
    assert s.restore(CountCmd, snap, ["b"]) == (False, None)  # type: ignore[arg-type]


def test_an_undecodable_state_warns_once_per_class(caplog: Any, snapshot_failures: Any) -> None:
    s = snapper()
    snap = take(s, CountCmd, Account(True, 1))
    assert snap is not None
    garbage = replace(snap, state=b"\xc1junk")  # (checksums are checked on load, not here)
    wrong_shape = replace(snap, state=b"\x93\x01")
    with caplog.at_level(logging.WARNING, logger="eventcore"):
        assert s.restore(CountCmd, garbage, ["a"]) == (False, None)
        assert s.restore(CountCmd, wrong_shape, ["a"]) == (False, None)
        assert s.restore(Every5, garbage, ["a"]) == (False, None)
    assert snapshot_failures == [("CountCmd", "decode"), ("Every5", "decode")]
    assert len(caplog.records) == 2 and "CountCmd" in caplog.records[0].getMessage()


def test_a_state_that_does_not_round_trip_turns_snapshots_off(snapshot_failures: Any) -> None:
    s = snapper()
    assert s.interval(OpaqueCmd) == 100
    assert take(s, OpaqueCmd, Opaque(3)) is None  # no __eq__: decoded copy differs
    assert snapshot_failures == [("OpaqueCmd", "encode")]
    assert s.interval(OpaqueCmd) == 0 and not s.due(OpaqueCmd, 500, 0)
    # an unencodable state: the same
    assert take(s, Transfer, {"a": object()}) is None
    assert snapshot_failures[-1] == ("Transfer", "encode")


def test_a_class_without_a_state_type_is_never_snapshotted(snapshot_failures: Any) -> None:
    s = snapper()
    assert take(s, Untyped, Account()) is None
    assert snapshot_failures == [("Untyped", "state type")]
    assert s.interval(Untyped) == 0


def test_policy_store_default_class_override_and_off() -> None:
    s = snapper(100)
    assert not s.due(CountCmd, 99, 0) and s.due(CountCmd, 100, 0)
    assert not s.due(CountCmd, 150, 60) and s.due(CountCmd, 160, 60)
    assert s.due(Every5, 5, 0) and not s.due(Every5, 4, 0)
    assert not s.due(Never, 10_000, 0)
    off = snapper(None)
    assert not off.due(CountCmd, 10_000, 0)
    assert off.due(Every5, 5, 0)  # a class that asks for snapshots still gets them


def test_memory_store_keeps_the_snapshot_of_more_events() -> None:
    s = snapper()
    store = s.store
    assert isinstance(store, MemorySnapshotStore)
    five = take(s, CountCmd, Account(True, 5), (5,))
    three = take(s, CountCmd, Account(True, 3), (3,))
    assert five is not None and three is not None
    store.save(five)
    store.save(three)
    assert store.load("k") is five and len(store) == 1
    newer_schema = take(s, V2, Account(), (1,))
    assert newer_schema is not None
    store.save(newer_schema)  # another schema version replaces it, even with fewer events
    assert store.load("k") is newer_schema


class Broken:
    """A snapshot store that fails every way it can."""

    def __init__(self, found: Any = None) -> None:
        self.found = found

    def load(self, key: str) -> Any:
        if self.found is None:
            raise OSError("snapshot storage is gone")
        return self.found

    def save(self, snapshot: Snapshot) -> None:
        raise OSError("snapshot storage is gone")


def test_a_failing_store_is_a_warning_once_and_never_an_error(snapshot_failures: Any) -> None:
    s = Snapshotter(Broken(), MsgpackCodec(), 100)
    assert s.read(CountCmd, "k") is None
    assert s.read(CountCmd, "k") is None
    snap = take(s, CountCmd, Account())
    assert snap is not None
    s.write(CountCmd, snap)
    s.write(CountCmd, snap)
    assert snapshot_failures == [("CountCmd", "read"), ("CountCmd", "write")]


def test_a_malformed_or_foreign_snapshot_is_refused(snapshot_failures: Any) -> None:
    good = take(snapper(), CountCmd, Account())
    assert good is not None
    inconsistent = replace(good, versions=(1, 2))
    corrupted = replace(good, state=good.state + b"x")
    forged = replace(good, versions=(9,))  # fits, but the checksum does not
    for found in ("not a snapshot", inconsistent, corrupted, forged):
        assert Snapshotter(Broken(found), MsgpackCodec(), 100).read(CountCmd, "k") is None
    assert Snapshotter(Broken(good), MsgpackCodec(), 100).read(CountCmd, "other") is None
    assert Snapshotter(Broken(good), MsgpackCodec(), 100).read(CountCmd, "k") is good
    assert snapshot_failures == [("CountCmd", "read")] * 5


async def test_async_load_reads_sync_and_async_stores() -> None:
    s = snapper()
    snap = take(s, CountCmd, Account(True, 2))
    assert snap is not None
    s.write(CountCmd, snap)
    assert await s.read_async(CountCmd, "k") is snap

    class Async:
        async def load(self, key: str) -> Snapshot | None:
            return snap

        async def save(self, snapshot: Snapshot) -> None:
            raise OSError("gone")

    a = Snapshotter(Async(), MsgpackCodec(), 100)
    assert await a.read_async(CountCmd, "k") is snap
    assert a.read(CountCmd, "k") is None  # an async store from sync code: refused, warned


async def test_async_writes_run_in_the_background_until_close(snapshot_failures: Any) -> None:
    snap = take(snapper(), CountCmd, Account(True, 2))
    assert snap is not None
    written: list[Snapshot] = []

    class Async:
        async def load(self, key: str) -> Snapshot | None:
            return None

        async def save(self, snapshot: Snapshot) -> None:
            if snapshot.events > 3:
                raise OSError("gone")
            written.append(snapshot)

    a = Snapshotter(Async(), MsgpackCodec(), 100)
    a.write(CountCmd, snap)
    assert written == []  # not yet: it runs on the loop
    big = take(a, CountCmd, Account(True, 2), (9,))
    assert big is not None
    a.write(CountCmd, big)
    await a.close()
    assert written == [snap] and snapshot_failures == [("CountCmd", "write")]
    a.max_pending = 0
    a.write(CountCmd, snap)  # over the bound: dropped, no error, nothing pending
    await a.close()
    assert written == [snap]


def test_classes_defined_in_functions_are_told_apart_stably() -> None:
    def make() -> type:
        class Local(CountCmd):
            def apply(self, state: Any, event: Any, stream_id: str) -> Any:
                return state

        return Local

    def make_other() -> type:
        class Local(CountCmd):
            def apply(self, state: Any, event: Any, stream_id: str) -> Any:
                return state

        return Local

    one, again, other = make(), make(), make_other()
    assert snapshot_key(one, ["a"]) == snapshot_key(again, ["a"])  # same code: same key
    assert snapshot_key(one, ["a"]) != snapshot_key(other, ["a"])
    assert "<locals>.Local@" in (snapshot_key(one, ["a"]) or "")


def test_an_async_store_written_from_sync_code_is_a_warning(snapshot_failures: Any) -> None:
    class Async:
        async def load(self, key: str) -> Snapshot | None:
            return None

        async def save(self, snapshot: Snapshot) -> None:
            raise AssertionError("never awaited")

    a = Snapshotter(Async(), MsgpackCodec(), 100)
    snap = take(a, CountCmd, Account(True, 2))
    assert snap is not None
    a.write(CountCmd, snap)  # no running loop: nothing scheduled, no error
    assert snapshot_failures == [("CountCmd", "write")] and not a._pending
