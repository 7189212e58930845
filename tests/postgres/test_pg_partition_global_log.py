"""The global log's gap tests (tests/postgres/test_pg_global_log.py) against a store whose
events table is partitioned by position range: appends in flight, shuffled commits,
prepared and repeatable-read transactions, spread over several partitions and the
DEFAULT one (the fixture's partitions span 4 transaction ids each)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.postgres.test_pg_global_log import (  # noqa: F401  (collected again here)
    test_a_prepared_append_holds_readers_back_until_it_commits,
    test_a_repeatable_read_reader_never_skips,
    test_an_open_append_holds_readers_back_without_losing_events,
    test_an_unrelated_prepared_transaction_does_not_hold_readers_back,
    test_concurrent_appends_and_idle_sessions_tail_exactly_once,
    test_one_streams_events_are_delivered_in_version_order,
    test_projection_status_names_an_append_that_holds_the_log_back,
    test_shuffled_commits_are_never_skipped,
    test_unrelated_open_transactions_do_not_hold_readers_back,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
async def postgres_store(partitioned_postgres_store: Any) -> Any:
    """Every test of this module runs on a partitioned store."""
    return partitioned_postgres_store
