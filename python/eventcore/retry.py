"""How the executor retries conflicts and transient store failures."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Retry settings for :func:`~eventcore.execute`.

    A concurrency conflict re-runs the command from fresh state; a ``StoreUnavailable``
    during the append re-sends the same append (same event ids, so it is idempotent).
    Validation and business-rule failures are never retried.

    The delay before attempt ``n + 1`` is ``min(max_delay, initial_delay * multiplier ** (n-1))``,
    scaled by a random factor in ``[1 - jitter, 1]``. Defaults: 5 attempts, 1 ms growing
    x2 up to 100 ms, jitter 0.5.

    Attributes:
        max_attempts: attempts in all, including the first (1 = never retry).
        initial_delay: seconds before the first retry (0 retries at once).
        multiplier: growth per retry (1.0 = fixed delay).
        max_delay: cap on any one delay, in seconds.
        jitter: fraction of each delay that is randomized (0 = none, 1 = full jitter).
        retry_unavailable: also retry ``StoreUnavailable``.
    """

    max_attempts: int = 5
    initial_delay: float = 0.001
    multiplier: float = 2.0
    max_delay: float = 0.1
    jitter: float = 0.5
    retry_unavailable: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    @classmethod
    def fixed(cls, delay: float, *, max_attempts: int = 5, jitter: float = 0.0) -> RetryPolicy:
        """The same ``delay`` before every retry."""
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
        """Exponential backoff with jitter and a cap (the default policy's shape)."""
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
        return cls(max_attempts=1)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if self.initial_delay == 0:
            return 0.0
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        if self.jitter:
            base *= 1.0 - self.jitter * random.random()
        return base


DEFAULT_RETRY = RetryPolicy()
