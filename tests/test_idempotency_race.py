"""Two callers with one idempotency key at once: the one that loses sees the first outcome.

The race: a caller looks its key up (nothing yet), the other caller's write commits, and
the first then reads state that already holds that write, so ``handle`` may reject the
command (the money is gone). The key's first outcome must still be returned, as the
README promises ("two callers with one key at once write once and both get that
outcome"). Before this was fixed the window was the time between the lookup and the
read; a snapshot read (one more round trip on PostgreSQL) made it wider.
"""

from __future__ import annotations

from typing import Any

from eventcore import MemoryStore, execute_sync

from .bank_domain import OpenAccount, Transfer, balance, open_with


class WinnerCommitsFirst:
    """A store whose first fold lets the other caller's keyed command commit before it."""

    def __init__(self, store: MemoryStore, other: Any) -> None:
        self.store = store
        self.other = other

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _first(self) -> None:
        if self.other is not None:
            other, self.other = self.other, None
            other()

    def read_fold(self, *args: Any) -> Any:
        self._first()
        return self.store.read_fold(*args)

    def read_tail(self, *args: Any) -> Any:
        self._first()
        return self.store.read_tail(*args)


def test_a_caller_whose_rival_commits_between_lookup_and_read_gets_the_first_outcome() -> None:
    store = MemoryStore()
    open_with(store, "a", 100)
    execute_sync(store, OpenAccount(account="b", owner="o"))
    command = Transfer(source="a", target="b", amount=60)  # only one can succeed for real
    first: list[Any] = []
    racing = WinnerCommitsFirst(
        store, lambda: first.append(execute_sync(store, command, idempotency_key="t-1"))
    )
    result = execute_sync(racing, command, idempotency_key="t-1")
    assert result.replayed and result.events == first[0].events
    assert balance(store, "a") == 40


def test_a_keyed_rejection_without_a_rival_is_still_raised_and_leaves_the_key_free() -> None:
    import pytest

    from eventcore import BusinessRuleViolation

    store = MemoryStore()
    open_with(store, "a", 10)
    execute_sync(store, OpenAccount(account="b", owner="o"))
    with pytest.raises(BusinessRuleViolation, match="insufficient funds"):
        execute_sync(store, Transfer(source="a", target="b", amount=60), idempotency_key="k")
    result = execute_sync(store, Transfer(source="a", target="b", amount=5), idempotency_key="k")
    assert not result.replayed and balance(store, "a") == 5
