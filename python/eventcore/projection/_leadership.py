"""Leadership: one process at a time runs a projection, the others stand by.

A runner with ``exclusive`` checkpoints takes the projection's lease
(:meth:`eventcore.store.CheckpointStore.lease`) before it reads, retries every
``takeover_interval`` while another process holds it, and checks every
``check_interval`` that it still holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from eventcore.errors import StoreUnavailable
from eventcore.projection.reconnect import store_failure
from eventcore.store import CheckpointStore, Lease


class Leadership:
    """Takes and watches one projection's lease."""

    def __init__(
        self,
        checkpoints: CheckpointStore,
        name: str,
        *,
        takeover_interval: float,
        check_interval: float,
    ) -> None:
        self.checkpoints = checkpoints
        self.name = name
        self.takeover_interval = takeover_interval
        self.check_interval = check_interval

    async def take(
        self,
        stopping: asyncio.Event,
        *,
        standby: Callable[[], None],
        unavailable: Callable[[StoreUnavailable], Awaitable[None]],
    ) -> Lease | None:
        """The lease, once taken (None: ``stopping`` was set first).

        Calls ``standby()`` each time another process holds it, and awaits
        ``unavailable(failure)`` (which waits, or raises to give up) when the store fails.

        Raises:
            StoreError: a failure that is not transient (the caller stops).
        """
        lease = self.checkpoints.lease(self.name)
        while not stopping.is_set():
            try:
                if await lease.acquire():
                    return lease
            except Exception as exc:
                await lease.release()
                failure = store_failure(exc, "take the leader lock")
                if failure is None:
                    raise
                await unavailable(failure)
                continue
            standby()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.takeover_interval)
        await lease.release()
        return None

    async def watch(self, lease: Lease, lost: Callable[[StoreUnavailable | None], None]) -> None:
        """Check the lease every ``check_interval``; once it is gone call ``lost(failure)``
        (the store failure that lost it, None for any other cause)."""
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await lease.check()
            except Exception as exc:
                lost(store_failure(exc, "check the leader lock"))
                return
