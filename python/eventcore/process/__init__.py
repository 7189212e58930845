"""Process managers: react to events of the global log by executing commands, exactly once.

A process manager is your object with a ``name`` and ``react(event)`` returning commands
(and :class:`Schedule` entries for commands due later); see :class:`ProcessManager`. A
:class:`ProcessRunner` runs managers on the projection runner's machinery (checkpoints,
leases, reconnects, failure strategies, dead letters) and fires their deadlines.
"""

from __future__ import annotations

from eventcore.process.manager import (
    DeadlineFired,
    DeadlineScheduled,
    ProcessManager,
    Schedule,
)
from eventcore.process.runner import Deadline, ProcessRunner

__all__ = [
    "Deadline",
    "DeadlineFired",
    "DeadlineScheduled",
    "ProcessManager",
    "ProcessRunner",
    "Schedule",
]
