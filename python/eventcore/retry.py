"""How the executor retries conflicts and transient store failures."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Retry settings for :func:`~eventcore.execute`.

    Two schedules, because the two failures differ:

    - A **concurrency conflict** re-runs the command from fresh state after a short wait
      (the other writer has already committed). The delay before attempt ``n + 1`` is
      ``min(max_delay, initial_delay * multiplier ** (n-1))``; after ``max_attempts`` runs
      the conflict is raised. Defaults: 5 attempts, 1 ms growing x2 up to 100 ms.
    - An **unavailable store** (a restart, a failover, a lost connection) is ridden out for
      seconds: the same read or the same append (same event ids, so idempotent) is tried
      again after ``unavailable_initial_delay`` seconds, growing by ``multiplier`` up to
      ``unavailable_max_delay``, until the waits (before jitter) would pass
      ``unavailable_timeout`` seconds in all (per call of ``execute``). Defaults: 50 ms
      growing x2 up to 2 s, for 30 s: 19 retries whose waits total 29.15 s before jitter,
      14.6-29.15 s after. Then the ``StoreUnavailable`` is raised, or
      :class:`~eventcore.OutcomeUnknown` (with the event ids) if an append may have been
      written.

    Every delay is scaled by a random factor in ``[1 - jitter, 1]`` (default 0.5), so
    clients that failed together do not retry together. Validation and business-rule
    failures are never retried.

    Attributes:
        max_attempts: runs of the command in all on conflicts, the first included
            (1 = never retry a conflict).
        initial_delay: seconds before the first conflict retry (0 retries at once).
        multiplier: growth per retry, both schedules (1.0 = fixed delay).
        max_delay: cap on any one conflict delay, in seconds.
        jitter: fraction of each delay that is randomized (0 = none, 1 = full jitter).
        retry_unavailable: retry ``StoreUnavailable`` at all.
        unavailable_initial_delay: seconds before the first retry of an unavailable store
            (must be > 0).
        unavailable_max_delay: cap on any one such delay, in seconds.
        unavailable_timeout: seconds of waiting (the sum of the un-jittered delays) after
            which an unavailable store is given up on (0 = do not retry it).
    """

    max_attempts: int = 5
    initial_delay: float = 0.001
    multiplier: float = 2.0
    max_delay: float = 0.1
    jitter: float = 0.5
    retry_unavailable: bool = True
    unavailable_initial_delay: float = 0.05
    unavailable_max_delay: float = 2.0
    unavailable_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.unavailable_initial_delay <= self.unavailable_max_delay:
            raise ValueError("need 0 < unavailable_initial_delay <= unavailable_max_delay")
        if not self.unavailable_timeout >= 0:  # also refuses NaN
            raise ValueError("unavailable_timeout must be >= 0")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    @classmethod
    def fixed(cls, delay: float, *, max_attempts: int = 5, jitter: float = 0.0) -> RetryPolicy:
        """The same ``delay`` before every conflict retry (store outages keep their schedule)."""
        return cls(
            max_attempts=max_attempts,
            initial_delay=delay,
            multiplier=1.0,
            max_delay=delay,
            jitter=jitter,
        )

    @classmethod
    def exponential(
        cls,
        *,
        initial_delay: float = 0.001,
        multiplier: float = 2.0,
        max_delay: float = 0.1,
        max_attempts: int = 5,
        jitter: float = 0.5,
    ) -> RetryPolicy:
        """Exponential conflict backoff with jitter and a cap (the default policy's shape)."""
        return cls(
            max_attempts=max_attempts,
            initial_delay=initial_delay,
            multiplier=multiplier,
            max_delay=max_delay,
            jitter=jitter,
        )

    @classmethod
    def never(cls) -> RetryPolicy:
        """Do not retry at all: the first conflict or failure is raised."""
        return cls(max_attempts=1, retry_unavailable=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if self.initial_delay == 0:
            return 0.0
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        if self.jitter:
            base *= 1.0 - self.jitter * random.random()
        return base

    def unavailable_delay(self, failures: int) -> float:
        """The un-jittered wait after ``failures`` (1-based) consecutive store failures."""
        return min(
            self.unavailable_max_delay,
            self.unavailable_initial_delay * self.multiplier ** (failures - 1),
        )

    def jittered(self, delay: float) -> float:
        """``delay`` scaled by the policy's random jitter factor."""
        return delay * (1.0 - self.jitter * random.random()) if self.jitter else delay


DEFAULT_RETRY = RetryPolicy()
