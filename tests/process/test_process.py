"""Process managers: commands once per event, failures, deadlines, on every store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventcore import NewEvent, StoreUnavailable, ValidationError
from eventcore.errors import ProjectionError
from eventcore.process import ProcessRunner, Schedule
from eventcore.projection import MemoryCheckpointStore
from eventcore.retry import RetryPolicy
from tests.process.domain import Answer, PingPong, ping, pongs

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_each_event_runs_its_commands_once_with_causation(store: Any) -> None:
    await store.append([ping(1), ping(2), ping(3)])
    runner = ProcessRunner(store, PingPong())
    await runner.run_until_caught_up()
    assert await pongs(store) == [1, 2, 3]
    assert await pongs(store, "evens") == [2]
    (trigger, *_) = await store.read_stream("pings")
    (answer, *_) = await store.read_stream("pongs")
    assert answer.metadata.causation_id == trigger.event_id
    assert answer.metadata.correlation_id == trigger.event_id
    record = answer.metadata.custom["eventcore.idempotency"]
    assert record["key"] == f"pingpong:{trigger.event_id}:0"
    status = (await runner.status())["pingpong"]
    assert status.position == await store.head()


async def test_correlation_is_carried_over(store: Any) -> None:
    from eventcore import Metadata

    corr = __import__("uuid").uuid4()
    await store.append([ping(1)], metadata=Metadata(correlation_id=corr, user_id="ann"))
    await ProcessRunner(store, PingPong()).run_until_caught_up()
    (answer,) = await store.read_stream("pongs")
    assert answer.metadata.correlation_id == corr
    assert answer.metadata.user_id == "ann"


async def test_redelivery_writes_nothing_new(store: Any) -> None:
    await store.append([ping(n) for n in range(6)])
    cps = MemoryCheckpointStore()
    manager = PingPong()
    await ProcessRunner(store, manager, checkpoints=cps).run_until_caught_up()
    head = await store.head()
    await cps.reset("pingpong", 0)  # every event is delivered again
    await ProcessRunner(store, manager, checkpoints=cps).run_until_caught_up()
    assert manager.calls == 12  # it did react again ...
    assert await store.head() == head  # ... and wrote nothing
    assert await pongs(store) == list(range(6))


class CrashBeforeCheckpoint(MemoryCheckpointStore):
    """Checkpoints whose first save after position 0 hangs: the process dies there."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()

    async def save(self, name: str, position: int) -> None:
        if position > 0:
            self.reached.set()
            await asyncio.Event().wait()  # never returns: the test kills the task here
        await super().save(name, position)


async def test_crash_between_command_and_checkpoint_redelivers_without_writing(
    store: Any,
) -> None:
    await store.append([ping(1), ping(2)])
    crashing = CrashBeforeCheckpoint()
    task = asyncio.create_task(ProcessRunner(store, PingPong(), checkpoints=crashing).run_forever())
    await asyncio.wait_for(crashing.reached.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await crashing.load("pingpong") == 0  # the checkpoint never moved
    head = await store.head()
    assert await pongs(store) == [1, 2]  # the commands were written
    cps = MemoryCheckpointStore()  # a restart: from position 0 again
    await ProcessRunner(store, PingPong(), checkpoints=cps).run_until_caught_up()
    assert await store.head() == head
    assert await pongs(store) == [1, 2]
    assert await cps.load("pingpong") == head


async def test_rule_violation_is_dead_lettered_not_retried(store: Any) -> None:
    await store.append([ping(1), ping(2, bad=True), ping(3)])
    manager = PingPong(then="skip", attempts=5)
    runner = ProcessRunner(store, manager)
    await runner.run_until_caught_up()
    assert await pongs(store) == [1, 3]  # the rejected command wrote nothing
    assert manager.calls == 3  # not retried
    (letter,) = await runner.dead_letters("pingpong")
    assert "BusinessRuleViolation" in letter.error
    assert letter.position == (await store.read_stream("pings"))[1].position


async def test_stop_strategy_stops_before_the_failing_event(store: Any) -> None:
    await store.append([ping(1), ping(2, bad=True), ping(3)])
    cps = MemoryCheckpointStore()
    runner = ProcessRunner(store, PingPong(then="stop"), checkpoints=cps)
    with pytest.raises(ProjectionError, match="n must not be negative"):
        await runner.run_until_caught_up()
    assert await pongs(store) == [1]
    _, bad, _ = await store.read_stream("pings")
    assert await cps.load("pingpong") < bad.position  # a restart starts before it
    head = await store.head()
    with pytest.raises(ProjectionError):
        await ProcessRunner(store, PingPong(then="stop"), checkpoints=cps).run_until_caught_up()
    assert await store.head() == head  # and the events before it write nothing again


class Flaky(Exception):
    """A transient failure the manager declares with ``retry_on``."""


class Recovering(PingPong):
    """Fails ``failures`` times with Flaky before it reacts."""

    retry_on = (Flaky,)

    def __init__(self, failures: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.failures = failures

    def react(self, event: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise Flaky("try again")
        return super().react(event)


async def test_transient_failures_are_retried_with_backoff(store: Any) -> None:
    await store.append([ping(1)])
    manager = Recovering(2, attempts=3)
    runner = ProcessRunner(store, manager)
    await runner.run_until_caught_up()
    assert await pongs(store) == [1]
    assert await runner.dead_letters("pingpong") == []


async def test_transient_failures_past_the_backoff_go_to_dead_letters(store: Any) -> None:
    await store.append([ping(1), ping(3)])
    manager = Recovering(3, attempts=3)
    runner = ProcessRunner(store, manager)
    await runner.run_until_caught_up()
    assert await pongs(store) == [3]
    (letter,) = await runner.dead_letters("pingpong")
    assert "Flaky" in letter.error


class FlakyStore:
    """A store whose appends fail with StoreUnavailable ``failures`` times."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    @property
    def aio(self) -> FlakyStore:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, events: Sequence[NewEvent], **kw: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection lost")
        return await self.inner.append(events, **kw)


async def test_store_outage_reconnects_and_redelivers(store: Any) -> None:
    await store.append([ping(1), ping(2)])
    from eventcore.projection import ReconnectPolicy

    flaky = FlakyStore(store, 2)
    runner = ProcessRunner(
        flaky,
        PingPong(then="stop", attempts=1),
        retry=RetryPolicy.never(),
        reconnect=ReconnectPolicy(initial_delay=0.01, max_delay=0.02),
    )
    async with runner:
        await runner.wait_for(await store.head())
        for _ in range(200):
            if len(await pongs(store, "evens")) == 1:
                break
            await asyncio.sleep(0.02)
        status = (await runner.status())["pingpong"]
    assert flaky.failures == 0
    assert status.error is None
    assert await pongs(store) == [1, 2]
    assert await pongs(store, "evens") == [2]
    assert await runner.dead_letters("pingpong") == []


async def test_schedule_fires_once_when_due_across_restarts(store: Any) -> None:
    await store.append([ping(5, later=True)])
    clock = Clock(datetime.now(UTC))
    runner = ProcessRunner(store, PingPong(), clock=clock)
    await runner.run_until_caught_up()
    (deadline,) = await runner.deadlines("pingpong")
    (trigger,) = await store.read_stream("pings")
    assert deadline.due == trigger.recorded_at + timedelta(minutes=10)
    assert deadline.scheduled_by == trigger.event_id
    assert deadline.command_type == "tests.process.domain:Answer"
    assert await runner.fire_due() == 0
    assert await pongs(store, "later") == []

    # A restart (new runner, no memory of the first) and a redelivery of the trigger.
    clock.now = deadline.due + timedelta(seconds=1)
    again = ProcessRunner(store, PingPong(), clock=clock, checkpoints=MemoryCheckpointStore())
    await again.run_until_caught_up()
    assert len(await store.read_stream("$process-pingpong")) == 1  # not scheduled twice
    assert await again.fire_due() == 1
    assert await pongs(store, "later") == [5]
    (answer,) = await store.read_stream("later")
    (record, fired) = await store.read_stream("$process-pingpong")
    assert answer.metadata.causation_id == record.event_id
    assert answer.metadata.correlation_id == trigger.event_id
    assert fired.event_type == "eventcore.process.DeadlineFired"
    assert await again.fire_due() == 0
    assert await runner.fire_due() == 0  # the first runner sees it fired too
    assert await runner.deadlines("pingpong") == []
    assert await pongs(store, "later") == [5]


async def test_deadline_fired_twice_at_once_writes_once(store: Any) -> None:
    await store.append([ping(7, later=True)])
    clock = Clock(datetime.now(UTC) + timedelta(hours=1))
    one = ProcessRunner(store, PingPong(), clock=clock)
    two = ProcessRunner(store, PingPong(), clock=clock, checkpoints=MemoryCheckpointStore())
    await one.run_until_caught_up()
    await asyncio.gather(one.fire_due(), two.fire_due())
    assert await pongs(store, "later") == [7]
    assert await one.deadlines("pingpong") == []


async def test_live_runner_fires_deadlines(store: Any) -> None:
    clock = Clock(datetime.now(UTC))
    runner = ProcessRunner(store, PingPong(), clock=clock, deadline_interval=0.02)
    async with runner:
        await store.append([ping(9, later=True)])
        await runner.wait_for(await store.head())
        assert await pongs(store, "later") == []
        clock.now += timedelta(minutes=11)
        for _ in range(250):
            if await pongs(store, "later"):
                break
            await asyncio.sleep(0.02)
    assert await pongs(store, "later") == [9]


async def test_rejected_deadline_is_dead_lettered_once(store: Any) -> None:
    await store.append([ping(4, later=True, bad=True)])
    clock = Clock(datetime.now(UTC) + timedelta(hours=1))
    runner = ProcessRunner(store, PingPong(), clock=clock)
    await runner.run_until_caught_up()
    assert await runner.fire_due() == 1
    assert await runner.fire_due() == 0
    assert await pongs(store, "later") == []
    (letter,) = await runner.dead_letters("pingpong")
    assert "n must not be negative" in letter.error
    assert letter.stream_id == "$process-pingpong"


async def test_two_runners_write_each_command_once(store: Any) -> None:
    """Competing instances: with leases one is active (the other stands by); without,
    both run and the idempotency keys still write every command once."""
    await store.append([ping(n) for n in range(20)])
    cps = store.checkpoint_store()
    runners = [
        ProcessRunner(store, PingPong(), checkpoints=cps, takeover_interval=0.05, page_size=3)
        for _ in range(2)
    ]

    async def one_reaches_head() -> list[Any]:
        head = await store.head()
        for _ in range(500):
            states = [(await r.status())["pingpong"] for r in runners]
            if any(s.state == "live" and s.position >= head for s in states):
                return states
            await asyncio.sleep(0.02)
        raise AssertionError(f"no runner reached {head}: {states}")

    async with runners[0], runners[1]:
        await store.append([ping(n) for n in range(20, 30)])
        states = await one_reaches_head()
        if cps.exclusive:
            assert sorted(s.state for s in states) == ["live", "standby"]
        active = 0 if states[0].state == "live" else 1
        await runners[active].stop()  # the active one goes away: the other takes over
        await store.append([ping(n) for n in range(30, 40)])
        states = await one_reaches_head()
        assert states[1 - active].state == "live"
    assert sorted(await pongs(store)) == list(range(40))
    assert sorted(await pongs(store, "evens")) == list(range(0, 40, 2))


class LocalCommandManager(PingPong):
    def react(self, event: Any) -> Any:
        class Local(Answer):
            pass

        return [Schedule(Local(target="later", n=1), after=timedelta(seconds=1))]


async def test_a_command_that_cannot_be_stored_is_poison(store: Any) -> None:
    await store.append([ping(1)])
    runner = ProcessRunner(store, LocalCommandManager())
    await runner.run_until_caught_up()
    (letter,) = await runner.dead_letters("pingpong")
    assert "inside a function" in letter.error
    assert await store.stream_version("$process-pingpong") == 0


def test_schedule_and_names_are_checked() -> None:
    command = Answer(target="x", n=1)
    with pytest.raises(ValidationError, match="exactly one"):
        Schedule(command)
    with pytest.raises(ValidationError, match="exactly one"):
        Schedule(command, after=timedelta(1), at=NOW)
    with pytest.raises(ValidationError, match="timezone-aware"):
        Schedule(command, at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="Command"):
        Schedule("not a command", after=timedelta(1))  # type: ignore[arg-type]
    from eventcore import MemoryStore

    class Unnamed:
        name = ""

        def react(self, event: Any) -> None:
            pass

    with pytest.raises(ValidationError, match="name"):
        ProcessRunner(MemoryStore(), Unnamed())
    long = PingPong()
    long.name = "x" * 201
    with pytest.raises(ValidationError, match="200"):
        ProcessRunner(MemoryStore(), long)


def broken_clock() -> datetime:
    raise ZeroDivisionError("the clock is broken")


async def test_a_bug_while_firing_deadlines_stops_the_runner_and_is_raised(store: Any) -> None:
    await store.append([ping(1)])
    runner = ProcessRunner(store, PingPong(), clock=broken_clock, deadline_interval=0.01)
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(runner.run_forever(), 20)
    assert (await runner.status())["pingpong"].state == "stopped"
    with pytest.raises(ZeroDivisionError):
        async with ProcessRunner(store, PingPong(), clock=broken_clock, deadline_interval=0.01):
            await asyncio.sleep(0.5)


def test_event_types_must_not_be_one_str() -> None:
    from eventcore import MemoryStore

    manager = PingPong()
    manager.event_types = "test.process.Ping"  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="not one str"):
        ProcessRunner(MemoryStore(), manager)


class Forgetful(PingPong):
    """Answers with a different n each time it sees the same event (a broken react)."""

    def react(self, event: Any) -> Any:
        self.calls += 1
        return [Answer(target="pongs", n=100 + self.calls)]


async def test_a_different_command_on_redelivery_goes_to_the_strategy(store: Any) -> None:
    await store.append([ping(1)])
    cps = MemoryCheckpointStore()
    manager = Forgetful()
    await ProcessRunner(store, manager, checkpoints=cps).run_until_caught_up()
    await cps.reset("pingpong", 0)
    runner = ProcessRunner(store, manager, checkpoints=cps)
    await runner.run_until_caught_up()
    assert await pongs(store) == [101]  # the first delivery's command only
    (letter,) = await runner.dead_letters("pingpong")
    assert "IdempotencyKeyReused" in letter.error


def test_retry_on_and_names_that_make_no_stream_are_refused() -> None:
    from eventcore import InvalidStreamId, MemoryStore

    one = Recovering(0)
    one.retry_on = Flaky  # type: ignore[assignment]  # one class is fine
    ProcessRunner(MemoryStore(), one)
    bad = Recovering(0)
    bad.retry_on = ("Flaky",)  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="exception classes"):
        ProcessRunner(MemoryStore(), bad)
    control = PingPong()
    control.name = "ping\npong"
    with pytest.raises(InvalidStreamId):
        ProcessRunner(MemoryStore(), control)


async def test_a_poison_event_is_dead_lettered_and_the_rest_go_on(store: Any) -> None:
    await store.append([ping(1), NewEvent("pings", "test.process.Ping", b"\xc1"), ping(3)])
    runner = ProcessRunner(store, PingPong(then="skip"))
    await runner.run_until_caught_up()
    assert await pongs(store) == [1, 3]
    (letter,) = await runner.dead_letters("pingpong")
    assert "EventDecodeError" in letter.error  # a SerializationError naming the event
