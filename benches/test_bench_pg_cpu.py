"""``benches.pg_workloads.cpu_per_command``: one write's CPU, statements and WAL per side."""

from __future__ import annotations

import asyncio
import os

import pytest

pw = pytest.importorskip("benches.pg_workloads")


# The backends' /proc entries are readable when the server runs on this machine.
LOCAL = not os.environ.get("EVENTCORE_TEST_DSN")


def test_every_side_reports_one_write_per_statement_and_its_wal(bench_dsn: str) -> None:
    try:
        rows = pw.cpu_per_command(bench_dsn, blocks=2, block=50)
    finally:
        asyncio.set_event_loop(None)
    sides = {row["side"]: row for row in rows}
    assert list(sides) == [
        "eventcore warm",
        "eventcore append",
        "eventcore statement",
        "raw onetrip",
        "raw onetrip, existing stream",
    ]
    for name in ("eventcore statement", "raw onetrip", "raw onetrip, existing stream"):
        assert sides[name]["statements"] == 1.0, name  # one round trip per write, no more
    for row in rows:
        # A warm command sends its append and nothing else but, now and then, a snapshot
        # write or the notifier's look for listeners (every 0.1 s).
        assert 1.0 <= row["statements"] < 1.2, row
        assert row["client_cpu_us"] > 0 and row["per_s"] > 0, row
        assert row["wal_bytes"] > 100, row  # every side wrote its event and committed
        if LOCAL:
            assert row["server_cpu_us"] > 0, row


def test_the_decision_parts_each_report_their_cpu(bench_dsn: str) -> None:
    pytest.importorskip("eventsourcing")
    dcb = pytest.importorskip("benches.dcb_workloads")
    rows = dcb.cpu_per_part(bench_dsn, blocks=2, block=10)
    assert [row["part"] for row in rows] == [
        "read",
        "conditional append",
        "plain append",
        "decision",
    ]
    for row in rows:
        assert row["per_s"] > 0 and row["client_cpu_us"] > 0, row
        if LOCAL:
            assert row["server_cpu_us"] > 0, row
