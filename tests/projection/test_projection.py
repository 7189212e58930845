"""The projection suite: the same tests on the in-memory store and on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from tests.projection.conftest import Recorder, all_events, write

from eventcore.projection import (
    FailureStrategy,
    MemoryCheckpointStore,
    PostgresCheckpointStore,
    ProjectionError,
    ProjectionRunner,
    Subscription,
)
from eventcore.query import Query
from eventcore.recorded import NewEvent, RecordedEvent, recorded_events


def checkpoints_for(store: Any) -> Any:
    """The store's own checkpoints (and leader locks) on PostgreSQL and SQLite, else in
    memory."""
    if hasattr(store, "schema"):
        return PostgresCheckpointStore(store)
    if hasattr(store, "path"):
        return store.checkpoint_store()
    return MemoryCheckpointStore()


def runner_for(store: Any, projections: Any, **kw: Any) -> ProjectionRunner:
    kw.setdefault("checkpoints", checkpoints_for(store))
    kw.setdefault("page_size", 64)
    kw.setdefault("poll_interval", 0.2)
    return ProjectionRunner(store, projections, **kw)


def test_fast_wrap_builds_the_same_immutable_events() -> None:
    from tests.projection.conftest import new_events

    from eventcore import MemoryStore

    store = MemoryStore()
    store.append(new_events(20))
    rows = store._core.read_all(0, None, None, None)
    built = recorded_events(rows, store.registry)
    assert built == [RecordedEvent(*row, store.registry) for row in rows]
    assert type(built[0]) is RecordedEvent
    with pytest.raises(AttributeError):
        built[0].position = 5  # type: ignore[misc]


async def test_catch_up_delivers_every_event_once_in_order(store: Any) -> None:
    await write(store, 300)
    rec = Recorder()
    runner = runner_for(store, rec)
    await runner.run_until_caught_up()
    expected = [e.position for e in await all_events(store)]
    assert rec.order == expected
    status = (await runner.status())["recorder"]
    assert status.position >= expected[-1] and status.lag_events == 0
    assert status.state == "stopped"


async def test_async_apply_batch_and_filters(store: Any) -> None:
    await write(store, 200)

    class Batches:
        name = "batches"
        event_types = ("T1",)
        stream_prefix = "s-1"

        def __init__(self) -> None:
            self.events: list[Any] = []

        async def apply_batch(self, events: list[Any]) -> None:
            await asyncio.sleep(0)
            self.events += events

    proj = Batches()
    await runner_for(store, proj).run_until_caught_up()
    want = [
        e.position
        for e in await all_events(store)
        if e.event_type == "T1" and e.stream_id.startswith("s-1")
    ]
    assert [e.position for e in proj.events] == want and want


async def test_live_delivery_and_wait_for(store: Any) -> None:
    rec = Recorder()
    runner = runner_for(store, rec)
    async with runner:
        for i in range(5):
            last = await write(store, 7, offset=i * 7)
            await runner.wait_for(last, timeout=5)
            assert max(rec.seen) == last
        status = (await runner.status())["recorder"]
        assert status.state == "live" and status.lag_events == 0
    assert runner._workers[0].state == "stopped"
    assert len(rec.seen) == 35 and rec.duplicates == 0


async def test_switch_from_catch_up_to_live_is_exactly_once(store: Any) -> None:
    """Writers keep appending while the runner catches up and goes live."""
    await write(store, 400)
    rec = Recorder()
    runner = runner_for(store, rec, page_size=16)
    stop = asyncio.Event()

    async def writer(k: int) -> None:
        i = 0
        while not stop.is_set():
            await write(store, 3, offset=10_000 * k + i, per_append=3)
            i += 3
            await asyncio.sleep(0.001)

    async with runner:
        writers = [asyncio.create_task(writer(k)) for k in range(3)]
        await asyncio.sleep(0.6)
        stop.set()
        await asyncio.gather(*writers)
        head = await store.head()
        await runner.wait_for(head, timeout=10)
    expected = [e.position for e in await all_events(store)]
    assert rec.order == expected  # every event once, in order, nothing skipped


async def test_subscription_pages_then_stops_when_not_live(store: Any) -> None:
    await write(store, 130)
    sub = Subscription(store, page_size=50, live=False)
    pages = [p async for p in sub]
    assert [len(p) for p in pages] == [50, 50, 30]
    assert pages[-1].caught_up and not pages[0].caught_up


async def test_columnar_batches_count_by_type(store: Any) -> None:
    await write(store, 500)

    class Counts:
        name = "counts"

        def __init__(self) -> None:
            self.counts = np.zeros(0, dtype=np.int64)
            self.names: list[str] = []

        def apply_columns(self, batch: Any) -> None:
            c = np.bincount(batch.type_codes, minlength=len(batch.type_names))
            if len(c) > len(self.counts):
                self.counts = np.pad(self.counts, (0, len(c) - len(self.counts)))
            self.counts[: len(c)] += c
            self.names = list(batch.type_names)
            assert np.all(np.diff(batch.positions) > 0)

    proj = Counts()
    await runner_for(store, proj, page_size=128).run_until_caught_up()
    got = {name: int(proj.counts[i]) for i, name in enumerate(proj.names)}
    want: dict[str, int] = {}
    for e in await all_events(store):
        want[e.event_type] = want.get(e.event_type, 0) + 1
    assert got == want


async def test_columnar_filters(store: Any) -> None:
    await write(store, 90)
    seen: list[int] = []

    class Only:
        name = "only"
        event_types = ("T2",)
        stream_prefix = "s-5"

        def apply_columns(self, batch: Any) -> None:
            for code in batch.type_codes:
                assert batch.type_names[code] == "T2"
            for code in batch.stream_codes:
                assert batch.stream_names[code].startswith("s-5")
            seen.extend(int(p) for p in batch.positions)

    await runner_for(store, Only(), page_size=20).run_until_caught_up()
    want = [
        e.position
        for e in await all_events(store)
        if e.event_type == "T2" and e.stream_id.startswith("s-5")
    ]
    assert seen == want and want


async def test_restart_resumes_from_the_checkpoint(store: Any) -> None:
    await write(store, 100)
    cps = checkpoints_for(store)
    rec = Recorder()
    await runner_for(store, rec, checkpoints=cps).run_until_caught_up()
    await write(store, 50, offset=100)
    rec2 = Recorder()
    await runner_for(store, rec2, checkpoints=cps).run_until_caught_up()
    assert len(rec2.seen) == 50 and rec2.duplicates == 0


async def test_rebuild_replays_while_writes_continue_with_progress(store: Any) -> None:
    await write(store, 600)
    rec = Recorder()
    cps = checkpoints_for(store)
    runner = runner_for(store, rec, checkpoints=cps, progress_interval=0.0)
    await runner.run_until_caught_up()
    rec.seen[-1] = ("stale", "x")  # the reset must clear the read model
    reports: list[Any] = []
    writing = asyncio.create_task(write(store, 200, offset=600, per_append=5))
    await runner.rebuild("recorder", progress=reports.append)
    await writing
    await runner.run_until_caught_up()
    assert -1 not in rec.seen
    assert sorted(rec.seen) == [e.position for e in await all_events(store)]
    assert reports and reports[-1].done and reports[-1].events_remaining == 0
    assert reports[-1].events_done >= 600 and reports[-1].events_per_second > 0
    assert all(0 <= r.fraction <= 1 for r in reports)


@pytest.mark.parametrize("events", [128, 130])
async def test_rebuild_reports_done_when_the_last_page_is_exactly_full(
    store: Any, events: int
) -> None:
    await write(store, events)
    reports: list[Any] = []
    runner = runner_for(store, Recorder(), page_size=64, progress_interval=3600.0)
    await runner.rebuild("recorder", progress=reports.append)
    assert reports[-1].done and reports[-1].events_remaining == 0
    assert reports[-1].events_done == events
    assert sum(r.done for r in reports) == 1


async def test_rebuild_from_a_position(store: Any) -> None:
    await write(store, 100)
    events = await all_events(store)
    rec = Recorder()
    runner = runner_for(store, rec)
    await runner.rebuild(from_position=events[59].position)
    assert sorted(rec.seen) == [e.position for e in events[60:]]


# -- failure strategies ------------------------------------------------------------------


class Flaky(Recorder):
    """Fails on chosen positions: ``times`` times each (forever when None)."""

    def __init__(self, name: str, bad: set[int], times: int | None, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.bad = bad
        self.times = times
        self.failures: dict[int, int] = {}

    def apply(self, event: Any) -> None:
        if event.position in self.bad:
            n = self.failures.get(event.position, 0)
            if self.times is None or n < self.times:
                self.failures[event.position] = n + 1
                raise ValueError(f"boom at {event.position}")
        super().apply(event)


async def test_retry_with_backoff_then_succeeds(store: Any) -> None:
    await write(store, 50)
    bad = (await all_events(store))[20].position
    proj = Flaky("flaky", {bad}, times=2, on_error=FailureStrategy.retry(3, initial_delay=0.01))
    await runner_for(store, proj).run_until_caught_up()
    assert proj.failures == {bad: 2}
    assert len(proj.seen) == 50 and proj.duplicates == 0


async def test_skip_records_dead_letters_and_goes_on(store: Any) -> None:
    await write(store, 50)
    events = await all_events(store)
    bad = {events[3].position, events[30].position}
    cps = checkpoints_for(store)
    proj = Flaky("skipper", bad, times=None, on_error=FailureStrategy.skip())
    runner = runner_for(store, proj, checkpoints=cps)
    await runner.run_until_caught_up()
    assert set(proj.seen) == {e.position for e in events} - bad
    letters = await runner.dead_letters("skipper")
    assert [d.position for d in letters] == sorted(bad)
    assert letters[0].event_id == events[3].event_id
    assert letters[0].stream_id == events[3].stream_id and "boom" in letters[0].error


async def test_skip_isolates_the_culprit_of_a_failing_batch(store: Any) -> None:
    await write(store, 40)
    events = await all_events(store)
    bad = events[17].position

    class Batch:
        name = "batch"
        on_error = FailureStrategy.skip()

        def __init__(self) -> None:
            self.seen: set[int] = set()

        def apply_batch(self, batch: list[Any]) -> None:
            if any(e.position == bad for e in batch):
                raise RuntimeError("bad batch")
            self.seen.update(e.position for e in batch)

    proj = Batch()
    runner = runner_for(store, proj, page_size=10)
    await runner.run_until_caught_up()
    assert proj.seen == {e.position for e in events} - {bad}
    assert [d.position for d in await runner.dead_letters("batch")] == [bad]


async def test_stop_halts_only_the_failing_projection(store: Any) -> None:
    await write(store, 60)
    events = await all_events(store)
    bad = events[25].position
    failing = Flaky("failing", {bad}, times=None)
    healthy = Recorder("healthy")
    runner = runner_for(store, [failing, healthy])
    with pytest.raises(ProjectionError) as info:
        await runner.run_until_caught_up()
    assert info.value.position == bad and info.value.projection == "failing"
    assert len(healthy.seen) == 60
    assert max(failing.seen) < bad
    status = await runner.status()
    assert status["failing"].state == "failed" and "boom" in (status["failing"].error or "")
    assert status["failing"].position < bad and status["healthy"].lag_events == 0
    # live mode: the failed one stops, the healthy one keeps going; the block raises
    # the failure on exit (issue 10: a runner that stops for good does not hide it)
    with pytest.raises(ProjectionError) as exited:
        async with runner:
            last = await write(store, 5, offset=60)
            await runner.wait_for(last, projection="healthy")
            with pytest.raises(ProjectionError):
                await runner.wait_for(last, projection="failing", timeout=5)
    assert exited.value.projection == "failing"
    assert len(healthy.seen) == 65


async def test_lag_in_seconds_while_behind(store: Any) -> None:
    await write(store, 10)
    await asyncio.sleep(0.2)
    rec = Recorder()
    runner = runner_for(store, rec)
    status = (await runner.status())["recorder"]
    assert status.state == "idle" and status.lag_events == 10
    assert status.lag_seconds >= 0.15


async def test_a_query_filter_delivers_the_events_of_its_types_and_tags(store: Any) -> None:
    """A projection with a ``query`` (issue 19) gets exactly the matching events, across
    pages, and its checkpoint moves past the rest; ``event_types`` narrows it further."""
    events = [
        NewEvent(f"c-{i % 3}", f"T{i % 2}", b"%d" % i, None, (f"course:c{i % 3}", f"n:{i}"))
        for i in range(45)
    ]
    await store.append(events)
    await store.append([NewEvent("x", "T0", b"-")])  # untagged: never matches

    class Course:
        name = "course"
        query = Query.of(tags=["course:c1"])

        def __init__(self) -> None:
            self.positions: list[int] = []

        def apply(self, event: Any) -> None:
            assert "course:c1" in event.tags
            self.positions.append(event.position)

    class CourseT1(Course):
        name = "course-t1"
        event_types = ("T1",)

    logged = await all_events(store)
    for proj, want in (
        (Course(), [e.position for e in logged if "course:c1" in e.tags]),
        (
            CourseT1(),
            [e.position for e in logged if "course:c1" in e.tags and e.event_type == "T1"],
        ),
    ):
        runner = runner_for(store, proj, page_size=4)
        await runner.run_until_caught_up()
        assert proj.positions == want and len(want) >= 7
        assert await runner.checkpoints.load(proj.name) == await store.head()
