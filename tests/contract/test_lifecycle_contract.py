"""The stream lifecycle contract: soft delete, truncate-before and purge, on every store.

What every store must do (see :class:`eventcore.store.StreamLifecycle`): hidden events
vanish from stream reads and folds (so from commands, state caches and snapshots), a
truncation or deletion takes a version of its own (a state folded before it no longer
matches the stream's version; an append recreates a deleted stream after it), the global
log keeps hidden events until a purge erases them, and a purge leaves a deleted range
that readers pass over, with an audit record.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from eventcore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    BusinessRuleViolation,
    ConcurrencyConflict,
    InvalidStreamId,
    NewEvent,
    ValidationError,
    default_registry,
    execute,
)
from eventcore.store import StreamBounds, StreamLifecycle

from ..bank_domain import AccountOpened, Deposit, Deposited, OpenAccount, Withdraw
from ..folds import fold_streams, fold_tail

encode = default_registry.encode


def new(stream_id: str, event: object) -> NewEvent:
    return NewEvent(stream_id, *encode(event), None)


async def open_with(store: Any, account: str, *amounts: int) -> None:
    events = [new(account, AccountOpened("ann"))] + [new(account, Deposited(a)) for a in amounts]
    await store.append(events, expected={account: NO_STREAM})


def balance_fold(state: int, event: Any, stream_id: str) -> int:
    return state + event.amount if isinstance(event, Deposited) else state


DECODERS = default_registry.decoders


async def versions_read(store: Any, stream: str) -> list[int]:
    return [e.version for e in await store.read_stream(stream)]


async def test_the_store_offers_the_lifecycle(store: Any) -> None:
    assert isinstance(store, StreamLifecycle)


async def test_delete_hides_every_event_from_stream_reads_and_keeps_the_version(
    store: Any,
) -> None:
    await open_with(store, "acc-1", 5, 7)
    await open_with(store, "acc-2", 1)
    assert await store.delete_stream("acc-1", expected=3) == 4  # the delete's own version
    assert await store.read_stream("acc-1") == []
    assert await store.read_stream_backwards("acc-1") == []
    assert [e.stream_id for e in await store.read_streams(["acc-1", "acc-2"])] == ["acc-2"] * 2
    assert await store.stream_version("acc-1") == 4
    assert await store.stream_bounds("acc-1") == StreamBounds(4, 4, deleted=True)
    assert await store.stream_bounds("acc-2") == StreamBounds(1, 2, deleted=False)
    assert await store.stream_bounds("nobody") == StreamBounds(1, 0, deleted=False)
    assert await store.delete_stream("acc-1") == 4  # nothing more to hide: no new version
    # the global log keeps them until a purge
    assert [e.stream_id for e in await store.read_all()].count("acc-1") == 3
    # a fold sees nothing, and reports the version an append must expect
    state, versions = await fold_streams(store, ["acc-1", "acc-2"], 0, balance_fold, DECODERS)
    assert (state, versions) == (1, [4, 2])


async def test_an_append_recreates_a_deleted_stream_continuing_its_versions(store: Any) -> None:
    await open_with(store, "acc-1", 5)
    await store.delete_stream("acc-1")
    with pytest.raises(ConcurrencyConflict) as err:
        await store.append([new("acc-1", AccountOpened("bob"))], expected={"acc-1": NO_STREAM})
    assert [tuple(c) for c in err.value.conflicts] == [("acc-1", NO_STREAM, 3)]
    with pytest.raises(ConcurrencyConflict):  # folded before the delete: version 2
        await store.append([new("acc-1", Deposited(1))], expected={"acc-1": 2})
    result = await store.append(
        [new("acc-1", AccountOpened("bob"))], expected={"acc-1": STREAM_EXISTS}
    )
    assert result.stream_versions == {"acc-1": 4}
    await store.append([new("acc-1", Deposited(9))], expected={"acc-1": 4})
    assert await versions_read(store, "acc-1") == [4, 5]
    assert [e.version for e in await store.read_stream_backwards("acc-1")] == [5, 4]
    assert [e.version for e in await store.read_stream("acc-1", after_version=3)] == [4, 5]
    assert await store.stream_bounds("acc-1") == StreamBounds(3, 5, deleted=False)
    # deleting again hides the new events too
    await store.delete_stream("acc-1")
    assert await store.read_stream("acc-1") == []


async def test_a_delete_checks_its_expected_version_and_hides_nothing_on_a_conflict(
    store: Any,
) -> None:
    await open_with(store, "acc-1", 5)
    with pytest.raises(ConcurrencyConflict) as err:
        await store.delete_stream("acc-1", expected=1)
    assert [tuple(c) for c in err.value.conflicts] == [("acc-1", 1, 2)]
    with pytest.raises(ConcurrencyConflict):
        await store.delete_stream("nobody", expected=STREAM_EXISTS)
    assert await versions_read(store, "acc-1") == [1, 2]
    assert await store.delete_stream("nobody") == 0  # nothing to hide
    assert await store.stream_bounds("nobody") == StreamBounds(1, 0, deleted=False)
    with pytest.raises(InvalidStreamId):
        await store.delete_stream(" ")
    with pytest.raises(ValidationError):
        await store.delete_stream("acc-1", expected=-3)
    assert await versions_read(store, "acc-1") == [1, 2]


async def test_truncate_before_hides_earlier_versions_and_only_moves_forward(store: Any) -> None:
    await open_with(store, "acc-1", 5, 7, 9)
    assert await store.truncate_stream("acc-1", 3) == 5
    assert await versions_read(store, "acc-1") == [3, 4]
    assert [e.version for e in await store.read_stream_backwards("acc-1")] == [4, 3]
    assert [e.version for e in await store.read_stream_backwards("acc-1", before_version=4)] == [3]
    assert await versions_read(store, "acc-1") == [3, 4]
    assert [e.version for e in await store.read_stream("acc-1", after_version=3)] == [4]
    assert await store.truncate_stream("acc-1", 2) == 5  # earlier: changes nothing
    assert await store.stream_bounds("acc-1") == StreamBounds(3, 5, deleted=False)
    state, versions = await fold_streams(store, ["acc-1"], 0, balance_fold, DECODERS)
    assert (state, versions) == (16, [5])
    # the next truncation point may be the truncation's own version + 1
    assert await store.truncate_stream("acc-1", 6) == 6
    assert await store.stream_bounds("acc-1") == StreamBounds(6, 6, deleted=True)
    assert len(await store.read_all()) == 4


@pytest.mark.parametrize("before", [0, -1, 6])
async def test_truncate_refuses_a_version_out_of_range_and_hides_nothing(
    store: Any, before: int
) -> None:
    await open_with(store, "acc-1", 5, 7, 9)
    with pytest.raises(ValidationError, match="before_version"):
        await store.truncate_stream("acc-1", before)
    assert await versions_read(store, "acc-1") == [1, 2, 3, 4]
    assert await store.truncate_stream("acc-1", 5) == 5  # version + 1: everything
    assert await store.read_stream("acc-1") == []


async def test_truncate_checks_its_expected_version(store: Any) -> None:
    await open_with(store, "acc-1", 5)
    with pytest.raises(ConcurrencyConflict):
        await store.truncate_stream("acc-1", 2, expected=NO_STREAM)
    assert await versions_read(store, "acc-1") == [1, 2]
    assert await store.truncate_stream("acc-1", 2, expected=2) == 3
    assert await store.truncate_stream("acc-1", 2, expected=ANY) == 3


async def test_a_command_folds_only_visible_events_even_with_a_warm_state_cache(
    store: Any,
) -> None:
    await open_with(store, "acc-1", *range(1, 10))  # enough events for the cache to keep
    await execute(store, Deposit(account="acc-1", amount=5))  # the cached state: open, 50
    assert len(store.state_cache) == 1
    await store.truncate_stream("acc-1", 2)  # hides AccountOpened
    with pytest.raises(BusinessRuleViolation, match="not open"):
        await execute(store, Deposit(account="acc-1", amount=1))
    await store.delete_stream("acc-1")
    result = await execute(store, OpenAccount(account="acc-1", owner="bob"))
    assert result.stream_versions == {"acc-1": 14}  # 11 events, a truncation, a delete
    await execute(store, Deposit(account="acc-1", amount=3))
    with pytest.raises(BusinessRuleViolation, match="insufficient"):
        await execute(store, Withdraw(account="acc-1", amount=4))
    await execute(store, Withdraw(account="acc-1", amount=3))


async def test_read_tail_refuses_a_state_folded_before_a_truncation(store: Any) -> None:
    await open_with(store, "acc-1", 5, 7)
    state, versions = await fold_streams(store, ["acc-1"], 0, balance_fold, DECODERS)
    assert (state, versions) == (12, [3])
    assert await fold_tail(store, ["acc-1"], versions, 0, state, balance_fold, DECODERS) == (
        12,
        [3],
    )
    assert await store.truncate_stream("acc-1", 3) == 4
    assert await fold_tail(store, ["acc-1"], versions, 0, state, balance_fold, DECODERS) is None
    state, versions = await fold_streams(store, ["acc-1"], 0, balance_fold, DECODERS)
    assert (state, versions) == (7, [4])
    # a state folded at the truncation's version (no event has it) extends as before
    await store.append([new("acc-1", Deposited(1))], expected={"acc-1": 4})
    assert await fold_tail(store, ["acc-1"], [4], 0, 7, balance_fold, DECODERS) == (8, [5])
    assert await fold_tail(store, ["acc-1"], [3], 0, 12, balance_fold, DECODERS) is None


async def test_purge_erases_hidden_events_from_the_global_log_with_an_audit_record(
    store: Any,
) -> None:
    await open_with(store, "acc-1", 5, 7)
    await open_with(store, "acc-2", 1)
    log = await store.read_all()
    acc1 = [e for e in log if e.stream_id == "acc-1"]
    nothing = await store.purge_stream("acc-1", actor="ops", reason="nothing hidden yet")
    assert (nothing.events, nothing.from_version, nothing.to_version) == (0, 0, 0)
    assert await store.truncate_stream("acc-1", 3) == 4
    record = await store.purge_stream("acc-1", actor="ops@example.com", reason="retention 30d")
    assert record.stream_id == "acc-1" and record.events == 2
    assert (record.from_version, record.to_version) == (1, 2)
    assert (record.first_position, record.last_position) == (acc1[0].position, acc1[1].position)
    assert record.actor == "ops@example.com" and record.reason == "retention 30d"
    assert record.purged_at.tzinfo is not None
    after = await store.read_all()
    assert [e.event_id for e in after] == [e.event_id for e in log if e not in acc1[:2]]
    assert await store.read_events_by_id([acc1[0].event_id, acc1[2].event_id]) == [
        e for e in after if e.event_id == acc1[2].event_id
    ]
    assert await versions_read(store, "acc-1") == [3]
    assert await store.stream_version("acc-1") == 4
    # a reader past the deleted range, or inside it, reads on without waiting
    assert [e.position for e in await store.read_all(after_position=acc1[0].position)] == [
        e.position for e in after if e.position > acc1[0].position
    ]
    assert (await store.read_all(limit=1))[0].position == after[0].position
    assert await store.count_events(0, await store.head()) == len(after)
    # purging again erases nothing more; the audit log keeps both calls
    assert (await store.purge_stream("acc-1", actor="ops", reason="again")).events == 0
    assert [p.reason for p in await store.purge_log("acc-1")] == [
        "nothing hidden yet",
        "retention 30d",
        "again",
    ]
    assert await store.purge_log("acc-2") == []
    # the stream goes on
    await store.append([new("acc-1", Deposited(2))], expected={"acc-1": 4})
    assert await versions_read(store, "acc-1") == [3, 5]


async def test_a_purged_event_id_is_forgotten(store: Any) -> None:
    event_id = uuid.uuid4()
    event = NewEvent("acc-1", *encode(AccountOpened("ann")), event_id)
    await store.append([event])
    await store.delete_stream("acc-1")
    await store.purge_stream("acc-1", actor="ops", reason="erasure request")
    assert await store.read_events_by_id([event_id]) == []
    await store.append([NewEvent("acc-9", *encode(AccountOpened("eve")), event_id)])
    [again] = await store.read_events_by_id([event_id])
    assert again.stream_id == "acc-9"


async def test_purge_needs_an_actor(store: Any) -> None:
    await open_with(store, "acc-1")
    await store.delete_stream("acc-1")
    with pytest.raises(ValidationError, match="actor"):
        await store.purge_stream("acc-1", actor="", reason="x")
    assert await store.purge_log() == []
    assert len(await store.read_all()) == 1


async def test_a_purge_erases_the_tags_of_its_events_from_query_reads(store: Any) -> None:
    """A purged event's tags go with it: query reads, type scans and conditions no longer
    find it (tags may be personal data too), while the other events' tags stay."""
    from eventcore.query import Query

    opened = default_registry.encode(AccountOpened("ann"))
    await store.append(
        [
            NewEvent("acc-1", *opened, tags=("customer:ann",)),
            NewEvent("acc-2", *opened, tags=("customer:ann",)),
        ]
    )
    await store.delete_stream("acc-1")
    assert [
        e.stream_id for e in (await store.read_query(Query.of(tags=["customer:ann"]))).events
    ] == [
        "acc-1",
        "acc-2",
    ]  # hidden from stream reads, still in the log until purged
    await store.purge_stream("acc-1", actor="ops", reason="forget ann's first account")
    for query in (Query.of(tags=["customer:ann"]), Query.of(types=[opened[0]])):
        found = await store.read_query(query)
        assert [(e.stream_id, e.tags) for e in found.events] == [("acc-2", ("customer:ann",))]
