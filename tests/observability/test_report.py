"""CommandReport and the Recorder: raw trace tuples in, Phase/RetryRecord objects on demand."""

from __future__ import annotations

from typing import Any

from eventcore import Metadata
from eventcore.errors import ConcurrencyConflict
from eventcore.observe import CommandReport, Hook, Phase, Recorder, RetryRecord
from eventcore.testing import FaultyStore

from .domain import Open, run_sequence


class Keep(Hook):
    """Keeps every report it is handed."""

    def __init__(self) -> None:
        self.reports: list[CommandReport] = []

    def after_execute(self, report: CommandReport) -> None:
        self.reports.append(report)


def test_reports_carry_the_trace_and_build_phases_and_retries_from_it(use_hook: Any) -> None:
    keep = use_hook(Keep())
    run_sequence(FaultyStore())
    opened, retried, rejected, exhausted, failed = keep.reports
    assert [e[:2] for e in opened.trace] == [
        ("read_streams", 1),
        ("handle_command", 1),
        ("write_events", 1),
    ]
    assert [(p.name, p.attempt) for p in retried.phases] == [
        ("read_streams", 1),
        ("handle_command", 1),
        ("write_events", 1),
        ("read_streams", 2),
        ("handle_command", 2),
        ("write_events", 2),
    ]
    assert retried.retries == [RetryRecord(1, "conflict", 0.0)]
    assert retried.attempts == 2 and retried.outcome == "success"
    for phase in retried.phases:
        assert retried.start_ns <= phase.start_ns <= phase.end_ns <= retried.end_ns
    assert [(p.name, p.attempt) for p in rejected.phases] == [("read_streams", 1)]
    assert (rejected.outcome, rejected.attempts, rejected.retries) == ("rejected", 1, [])
    assert exhausted.outcome == "conflict-exhausted"
    assert exhausted.attempts == 3
    assert [(r.attempt, r.reason) for r in exhausted.retries] == [(1, "conflict"), (2, "conflict")]
    assert (failed.outcome, failed.attempts) == ("error", 1)
    assert failed.streams == ["acc-2"]


def test_finish_takes_a_machine_trace() -> None:
    keep = Keep()
    command = Open(account="acc-9", owner="ann")
    rec = Recorder(command, None, (keep,))
    trace: list[Any] = [
        ("read_streams", 1, 10, 20),
        ("handle_command", 1, 20, 25),
        ("write_events", 1, 25, 40),
        ("retry", 1, "unavailable", 0.5),
        ("read_streams", 2, 60, 70),
    ]
    error = ConcurrencyConflict([])
    rec.finish(None, error, trace)
    (report,) = keep.reports
    assert report.trace is trace
    assert report.phases[0] == Phase("read_streams", 1, 10, 20)
    assert report.phases[-1] == Phase("read_streams", 2, 60, 70)
    assert len(report.phases) == 4
    assert report.retries == [RetryRecord(1, "unavailable", 0.5)]
    assert (report.attempts, report.outcome, report.error) == (2, "conflict-exhausted", error)
    assert report.command_type == "Open"
    assert report.end_ns >= report.start_ns > 0


def test_a_hook_that_overrides_nothing_costs_no_wrapper_and_no_report() -> None:
    command = Open(account="acc-9", owner="ann")
    meta = Metadata(user_id="u")
    rec = Recorder(command, meta, (Hook(),))
    assert not rec.after  # the shells then ask the machine for no trace
    assert rec.report.metadata is meta
    rec.finish(None, None, None)  # nothing to hand over: no error, no hook called


def test_only_overriding_hooks_are_called() -> None:
    calls: list[str] = []

    class Before(Hook):
        def before_execute(self, command: Any, metadata: Metadata | None) -> Metadata | None:
            calls.append("before")
            return Metadata(user_id="from-hook")

    on_instance = Hook()
    on_instance.after_execute = lambda report: calls.append("instance")  # type: ignore[method-assign]
    command = Open(account="acc-9", owner="ann")
    rec = Recorder(command, None, (Before(), Hook(), on_instance))
    assert rec.report.metadata is not None and rec.report.metadata.user_id == "from-hook"
    assert rec.after  # someone reads reports: the run is traced
    rec.finish(None, None, [])
    assert calls == ["before", "instance"]


def test_state_cache_events_reach_the_hooks_that_override_it(use_hook: Any) -> None:
    from eventcore import MemoryStore, execute_sync
    from eventcore.observe import report_state_cache

    seen: list[tuple[str, str]] = []

    class Cache(Hook):
        def on_state_cache(self, event: str, command_type: str) -> None:
            seen.append((event, command_type))

    use_hook(Hook())  # overrides nothing: never called
    use_hook(Cache())
    report_state_cache("evict", "Open")
    store = MemoryStore()
    execute_sync(store, Open(account="acc-1", owner="ann"))
    assert seen[0] == ("evict", "Open")
    assert ("miss", "Open") in seen[1:]
