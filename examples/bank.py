"""The bank example on eventcore's in-memory store: random deposits, withdrawals, transfers.

The domain (events, commands, the fold) is ``eventcore/examples/bank.py``; this script
runs it: ``python examples/bank.py [--accounts N] [--commands N] [--seed N]``. It prints
balances, the events written and the commands per second, overall and for the commands
that found their state in the store's state cache (warm). ``eventcore demo`` is the same
with progress bars.
"""

from __future__ import annotations

import argparse
import random
import time

from eventcore import BusinessRuleViolation, Command, MemoryStore, StreamId, execute_sync
from eventcore.examples.bank import (
    Account,
    Deposit,
    Money,
    OpenAccount,
    Transfer,
    Withdraw,
    fold_account,
    registry,
)


def balance(store: MemoryStore, account: str) -> int:
    """Fold an account's events the way its commands do."""
    state = Account()
    for recorded in store.read_stream(account):
        state = fold_account(state, recorded.data)
    return state.balance


def main() -> None:
    """Open accounts, run random commands, print balances, events and commands/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    store = MemoryStore(registry=registry)
    accounts = [StreamId(f"account-{i}") for i in range(args.accounts)]
    for i, account in enumerate(accounts):
        execute_sync(store, OpenAccount(account=account, owner=f"owner {i}"))
        execute_sync(store, Deposit(account=account, amount=Money(10_000)))
    opening_total = 10_000 * len(accounts)

    rejected = deposited = withdrawn = warm = 0
    warm_seconds = 0.0
    cache = store.state_cache
    started = time.perf_counter()
    for _ in range(args.commands):
        kind = rng.random()
        account = rng.choice(accounts)
        amount = Money(rng.randint(1, 500))
        command: Command[object, object]
        if kind < 0.3:
            command = Deposit(account=account, amount=amount)  # type: ignore[assignment]
        elif kind < 0.6:
            command = Withdraw(account=account, amount=amount)  # type: ignore[assignment]
        else:
            other = rng.choice(accounts)
            command = Transfer(source=account, target=other, amount=amount)  # type: ignore[assignment]
        hits = cache.hits if cache is not None else 0
        began = time.perf_counter()
        try:
            execute_sync(store, command)
        except BusinessRuleViolation:
            rejected += 1
            continue
        finally:
            if cache is not None and cache.hits > hits:
                warm += 1
                warm_seconds += time.perf_counter() - began
        deposited += amount if kind < 0.3 else 0
        withdrawn += amount if 0.3 <= kind < 0.6 else 0
    elapsed = time.perf_counter() - started

    balances = {account: balance(store, account) for account in accounts}
    print(f"{'account':<14} {'balance':>12}")
    for account in accounts[:10]:
        print(f"{account:<14} {balances[account] / 100:>12,.2f}")
    if len(accounts) > 10:
        print(f"{f'... {len(accounts) - 10} more':<14}")
    total = sum(balances.values())
    print(f"{'total':<14} {total / 100:>12,.2f}")
    expected = opening_total + deposited - withdrawn
    print(f"money conserved: {'yes' if total == expected else 'NO'}")
    print(f"commands: {args.commands:,} ({rejected:,} rejected by business rules)")
    print(f"events written: {len(store):,}")
    print(f"commands/s: {args.commands / elapsed:,.0f}")
    if warm:
        print(
            f"warm commands/s: {warm / warm_seconds:,.0f} "
            f"({warm:,} of {args.commands:,} commands found their state in the cache)"
        )


if __name__ == "__main__":
    main()
