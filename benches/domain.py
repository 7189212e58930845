"""The benchmark domains: the bank, for eventcore and for the peer (``eventsourcing``).

eventcore's side is :mod:`eventcore._bench`'s (re-exported here for the area modules):
``DC`` is the shipped example itself (``eventcore.examples.bank``, frozen dataclass events,
its registry and commands), ``MS`` the same commands over ``msgspec.Struct`` events. The
tests' bank (``tests/bank_domain.py``) is the same example.

The peer is the ``eventsourcing`` library (9.5.x, in-memory POPO infrastructure):
``EsAccount`` is an ``Aggregate`` whose methods trigger the same events, ``EsBank`` the
``Application``. It is imported lazily (:func:`baseline`) because it is a benchmark-only
dependency.
"""

from __future__ import annotations

from typing import Any

from eventcore._bench import DC, DOMAINS, MS, Domain
from eventcore.examples.bank import Account, Money

__all__ = ["DC", "DOMAINS", "MS", "Account", "Domain", "Money", "baseline"]

_BASELINE: Any = None


def baseline() -> Any:
    """The eventsourcing baseline: a namespace with ``EsBank``, ``EsAccount``, ``EsBlobs``."""
    global _BASELINE
    if _BASELINE is not None:
        return _BASELINE
    import types

    import eventsourcing
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate
    from eventsourcing.domain import event as es_event

    class EsAccount(Aggregate):
        @es_event("Opened")
        def __init__(self, owner: str) -> None:
            self.owner = owner
            self.balance = 0

        @es_event("Deposited")
        def deposit(self, amount: int) -> None:
            self.balance += amount

        @es_event("Withdrawn")
        def withdraw(self, amount: int) -> None:
            if amount > self.balance:
                raise ValueError("insufficient funds")
            self.balance -= amount

    class EsBlobs(Aggregate):
        """An aggregate whose events carry an opaque string (for batch and memory runs)."""

        @es_event("Created")
        def __init__(self) -> None:
            self.count = 0

        @es_event("Blob")
        def blob(self, data: str) -> None:
            self.count += 1

    class EsBank(Application[Any]):
        """In-memory (POPO) infrastructure, no snapshots, no aggregate cache: the defaults."""

    _BASELINE = types.SimpleNamespace(
        EsBank=EsBank,
        EsAccount=EsAccount,
        EsBlobs=EsBlobs,
        version=getattr(eventsourcing, "__version__", None) or _dist_version("eventsourcing"),
    )
    return _BASELINE


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
