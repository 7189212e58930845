"""How a projection runner rides out store failures: which errors, how long, how often."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from eventcore.errors import StoreUnavailable
from eventcore.store import CheckpointTransaction

__all__ = ["ReconnectPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectPolicy:
    """How a :class:`~eventcore.projection.ProjectionRunner` retries while its store is unavailable.

    A transient store failure (``StoreUnavailable``: a lost or killed connection, a server
    restart, a refused connection) while the runner reads events, loads or saves a
    checkpoint, takes its leader lock or runs a transactional batch puts the projection in
    state ``reconnecting``; it waits, then resumes from its checkpoint. The delay before
    attempt ``n + 1`` is ``min(max_delay, initial_delay * multiplier ** (n - 1))``, scaled
    by a random factor in ``[1 - jitter, 1]``. By default it retries for as long as the
    runner runs.

    Attributes:
        initial_delay: seconds before the first retry.
        multiplier: growth per retry (1.0 = fixed delay).
        max_delay: cap on any one delay, in seconds.
        jitter: fraction of each delay that is randomized (0 = none, 1 = full jitter).
        give_up_after: stop for good (state ``failed``) once the store has been
            unavailable this many seconds in a row (None = never).
        max_attempts: stop for good after this many failed attempts in a row (None =
            never).
    """

    initial_delay: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.5
    give_up_after: float | None = None
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.give_up_after is not None and self.give_up_after < 0:
            raise ValueError("give_up_after must be >= 0 or None")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 or None")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        return base * (1.0 - self.jitter * random.random()) if self.jitter else base


def store_failure(exc: BaseException, action: str) -> StoreUnavailable | None:
    """``exc`` as a StoreUnavailable if it is a transient store failure, else None.

    Stores raise eventcore's errors only (a driver's are translated where they arise, in
    the store's package): ``StoreUnavailable`` is transient, anything else is not.
    ``action`` is kept for the callers' messages.
    """
    if isinstance(exc, StoreFault):
        return exc.error
    if isinstance(exc, StoreUnavailable):
        return exc
    return None


def transaction_failure(
    exc: BaseException, tx: CheckpointTransaction | None
) -> StoreUnavailable | None:
    """A failure inside a transactional batch that the store caused, not the projection.

    ``tx`` tells (:meth:`~eventcore.store.CheckpointTransaction.failure`); None when the
    transaction never opened, and then ``exc`` came from the store itself.
    """
    if tx is None:
        return store_failure(exc, "apply_in_transaction")
    return tx.failure(exc)


class StoreFault(Exception):
    """Internal: a transactional batch failed because of the store, not the projection.

    Raised past the projection's failure strategy to the runner, which reconnects.
    """

    def __init__(self, error: StoreUnavailable) -> None:
        super().__init__(error)
        self.error = error


class GaveUp(Exception):
    """Internal: the policy's limit was reached; ``error`` is the last store failure."""

    def __init__(self, error: StoreUnavailable, attempts: int, seconds: float) -> None:
        super().__init__(
            f"store unavailable for {seconds:.1f} s ({attempts} attempts), gave up: {error}"
        )
        self.error = error


class Outage:
    """One projection's current run of store failures: since when, how many, the last."""

    def __init__(self, policy: ReconnectPolicy) -> None:
        self.policy = policy
        self.since: datetime | None = None
        """When the first failure of this run happened (None: no outage)."""
        self.attempts = 0
        """Failed attempts in a row."""
        self.error: StoreUnavailable | None = None
        """The last failure."""
        self._started = 0.0

    def record(self, error: StoreUnavailable) -> float:
        """Count a failure; the seconds to wait before the next attempt.

        Raises:
            GaveUp: the policy's ``give_up_after`` or ``max_attempts`` is reached.
        """
        now = time.monotonic()
        if self.since is None:
            self.since = datetime.now(UTC)
            self._started = now
        self.attempts += 1
        self.error = error
        policy, elapsed = self.policy, now - self._started
        if (policy.max_attempts is not None and self.attempts >= policy.max_attempts) or (
            policy.give_up_after is not None and elapsed >= policy.give_up_after
        ):
            raise GaveUp(error, self.attempts, elapsed)
        return policy.delay(self.attempts)

    def clear(self) -> bool:
        """End the outage (the store answered again); whether there was one."""
        was = self.since is not None
        self.since, self.attempts, self.error = None, 0, None
        return was
