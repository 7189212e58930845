"""LoggingHook: one record per command at DEBUG, retries at INFO, failures at WARNING/ERROR."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from eventcore import MemoryStore, Metadata, execute_sync
from eventcore.logs import LoggingHook
from eventcore.testing import FaultyStore

from .domain import Deposit, Open, run_sequence

FIELDS = (
    "command",
    "streams",
    "events_written",
    "attempts",
    "duration_ms",
    "correlation_id",
    "outcome",
)


@pytest.fixture
def records(use_hook: Any, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    use_hook(LoggingHook())
    caplog.set_level(logging.DEBUG, logger="eventcore")
    return caplog


def test_levels_and_fields_for_a_known_sequence(records: pytest.LogCaptureFixture) -> None:
    run_sequence(FaultyStore())
    mine = [r for r in records.records if r.name == "eventcore"]
    summary = [(r.levelname, r.command, r.outcome) for r in mine]  # type: ignore[attr-defined]
    assert summary == [
        ("DEBUG", "Open", "success"),
        ("INFO", "Deposit", "success"),  # the retry, logged as the command finished
        ("DEBUG", "Deposit", "success"),
        ("DEBUG", "Deposit", "rejected"),
        ("INFO", "Deposit", "conflict-exhausted"),
        ("INFO", "Deposit", "conflict-exhausted"),
        ("WARNING", "Deposit", "conflict-exhausted"),
        ("ERROR", "Open", "error"),
    ]
    for record in mine:
        for name in FIELDS:
            assert hasattr(record, name), (record.getMessage(), name)
    opened, retry, retried, rejected, _, _, exhausted, failed = mine
    assert (opened.streams, opened.events_written, opened.attempts) == (1, 1, 1)  # type: ignore[attr-defined]
    assert opened.duration_ms > 0  # type: ignore[attr-defined]
    assert opened.correlation_id is None  # type: ignore[attr-defined]
    assert "Open succeeded: 1 event in" in opened.getMessage()
    assert (retry.attempt, retry.reason, retry.delay_ms) == (1, "conflict", 0.0)  # type: ignore[attr-defined]
    assert (retried.attempts, retried.events_written) == (2, 2)  # type: ignore[attr-defined]
    assert "after 2 attempts" in retried.getMessage()
    assert "amount must be positive" in rejected.getMessage()
    assert (exhausted.attempts, exhausted.events_written) == (3, 0)  # type: ignore[attr-defined]
    assert "gave up after 3 attempts" in exhausted.getMessage()
    assert failed.exc_info is not None and failed.error.startswith("StoreUnavailable")  # type: ignore[attr-defined]


def test_correlation_id_comes_from_the_metadata(records: pytest.LogCaptureFixture) -> None:
    correlation = uuid.uuid4()
    execute_sync(
        MemoryStore(),
        Deposit(account="acc-1", amount=3),
        metadata=Metadata(correlation_id=correlation),
    )
    (record,) = [r for r in records.records if r.name == "eventcore"]
    assert record.correlation_id == str(correlation)  # type: ignore[attr-defined]


def test_nothing_is_built_when_the_level_is_off(
    use_hook: Any, caplog: pytest.LogCaptureFixture
) -> None:
    use_hook(LoggingHook())
    caplog.set_level(logging.INFO, logger="eventcore")
    execute_sync(MemoryStore(), Open(account="acc-1", owner="ann"))
    assert [r for r in caplog.records if r.name == "eventcore"] == []


def test_a_custom_logger_and_json_output(use_hook: Any) -> None:
    import io
    import json

    from pythonjsonlogger.json import JsonFormatter

    logger = logging.getLogger("myapp.events")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("{levelname}{name}{message}", style="{"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        use_hook(LoggingHook(logger))
        execute_sync(MemoryStore(), Open(account="acc-1", owner="ann"))
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["name"] == "myapp.events" and line["levelname"] == "DEBUG"
    assert {k: line[k] for k in ("command", "streams", "events_written", "outcome")} == {
        "command": "Open",
        "streams": 1,
        "events_written": 1,
        "outcome": "success",
    }


def test_projection_batches_and_dead_letters(records: pytest.LogCaptureFixture) -> None:
    from .test_metrics import Batch, Recorded

    hook = LoggingHook()
    hook.after_projection_batch(Batch("balances", 40, 100, [Recorded(p) for p in range(31, 41)]))
    hook.on_dead_letter("balances", Recorded(7), ValueError("boom"))
    batch, letter = [r for r in records.records if r.name == "eventcore"]
    assert batch.levelname == "DEBUG" and batch.projection == "balances"  # type: ignore[attr-defined]
    assert (batch.events, batch.lag_events) == (10, 60)  # type: ignore[attr-defined]
    assert letter.levelname == "ERROR" and letter.position == 7  # type: ignore[attr-defined]
    assert letter.error == "ValueError: boom"  # type: ignore[attr-defined]
