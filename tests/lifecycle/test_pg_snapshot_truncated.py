"""PostgreSQL: a durable snapshot taken before a truncation never serves hidden events.

A second store object (cold cache) loads the snapshot the first one wrote; the stream
was truncated after it, so the snapshot's state (an open account) must not be used: the
command folds the visible events in full and refuses, like a full fold does.
"""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import BusinessRuleViolation, execute
from eventcore.examples.bank import Deposit
from eventcore.examples.bank import registry as BANK
from tests.postgres.pg_bank import balance_of, open_accounts

pytestmark = pytest.mark.postgres


async def test_a_snapshot_from_before_a_truncation_is_not_used(
    postgres_store_factory: Any,
) -> None:
    store = await postgres_store_factory(registry=BANK, snapshot_every=5)
    await open_accounts(store, ["a"], 10)  # AccountOpened, Deposited(10)
    for _ in range(8):
        await execute(store, Deposit(account="a", amount=1))
    await store.close()  # the background snapshot writes end here
    again = await postgres_store_factory(registry=BANK, schema=store.schema)
    assert await again.truncate_stream("a", 2) == 11  # hides AccountOpened
    with pytest.raises(BusinessRuleViolation, match="not open"):
        await execute(again, Deposit(account="a", amount=1))
    assert await balance_of(again, "a") == 18
