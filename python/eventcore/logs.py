"""Structured logs for commands and projections on the standard ``logging`` module.

Register the hook once; records go to the ``eventcore`` logger (or the one you pass)::

    import logging
    from eventcore.logs import LoggingHook
    from eventcore.observe import add_hook

    logging.basicConfig(level=logging.INFO)
    add_hook(LoggingHook())

What is logged, with these ``extra=`` fields on every command record: ``command`` (the
command type), ``streams`` (how many streams it read), ``events_written``, ``attempts``,
``duration_ms``, ``correlation_id`` (a str, or None) and ``outcome``:

- ``DEBUG``: one line per executed command (success, or rejected by a business rule or
  validation; rejected ones also carry ``error``);
- ``INFO``: one line per retry, with ``attempt``, ``reason`` (``conflict`` or
  ``unavailable``) and ``delay_ms`` (logged when the command finishes: the hook sees
  the whole command at once);
- ``WARNING``: a command whose conflicts outlasted its retry policy (``conflict-exhausted``);
- ``ERROR``: a command that failed otherwise (store failures: unavailable, other store
  errors, bugs), with the exception attached;
- projections: ``DEBUG`` per batch (``projection``, ``position``, ``head``, ``events``,
  ``duration_ms``), ``ERROR`` per dead-lettered event (``projection``, ``position``,
  ``event_type``, ``event_id``, ``error``).

JSON output, with python-json-logger (``pip install python-json-logger``): every ``extra``
field becomes a JSON key::

    import logging
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{"))
    logging.getLogger("eventcore").addHandler(handler)
    logging.getLogger("eventcore").setLevel(logging.DEBUG)
    # {"asctime": "...", "levelname": "DEBUG", "name": "eventcore",
    #  "message": "OpenAccount succeeded: 1 event in 0.05 ms", "command": "OpenAccount",
    #  "streams": 1, "events_written": 1, "attempts": 1, "duration_ms": 0.05,
    #  "correlation_id": null, "outcome": "success"}

With structlog, route stdlib records through ``structlog.stdlib.ProcessorFormatter`` with
``structlog.stdlib.ExtraAdder()`` in its ``foreign_pre_chain`` and a
``structlog.processors.JSONRenderer()`` processor: the same fields come out as keys.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from eventcore._batch_report import batch_fields
from eventcore.observe import CONFLICT_EXHAUSTED, ERROR, REJECTED, SUCCESS, Hook

if TYPE_CHECKING:
    from eventcore._batch_report import batch_fields
from eventcore.observe import CommandReport

__all__ = ["LoggingHook"]

_DEBUG = logging.DEBUG
_INFO = logging.INFO


class LoggingHook(Hook):
    """A :class:`~eventcore.observe.Hook` that logs commands and projection batches with ``extra=``.

    Args:
        logger: where to log (default: the ``eventcore`` logger).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("eventcore")
        """The logger records go to."""

    def after_execute(self, report: CommandReport) -> None:
        """Log the command (level by outcome) and, at INFO, each of its retries."""
        logger = self.logger
        outcome = report.outcome
        if outcome in (SUCCESS, REJECTED):
            level = _DEBUG
        elif outcome == CONFLICT_EXHAUSTED:
            level = logging.WARNING
        else:
            level = logging.ERROR
        retried = report.attempts > 1 and logger.isEnabledFor(_INFO)
        if not retried and not logger.isEnabledFor(level):
            return  # the common case with DEBUG off: nothing to build
        fields = command_fields(report)
        if retried:
            for retry in report.retries:
                logger.info(
                    "%s retrying after attempt %d (%s), waiting %.1f ms",
                    report.command_type,
                    retry.attempt,
                    retry.reason,
                    retry.delay * 1000,
                    extra={
                        **fields,
                        "attempt": retry.attempt,
                        "reason": retry.reason,
                        "delay_ms": round(retry.delay * 1000, 3),
                    },
                )
        if not logger.isEnabledFor(level):
            return
        error = report.error
        if outcome == SUCCESS:
            n = fields["events_written"]
            logger.log(
                level,
                "%s succeeded: %d event%s in %.2f ms%s",
                report.command_type,
                n,
                "" if n == 1 else "s",
                fields["duration_ms"],
                f" after {report.attempts} attempts" if report.attempts > 1 else "",
                extra=fields,
            )
        elif outcome == REJECTED:
            logger.log(
                level,
                "%s rejected: %s",
                report.command_type,
                error,
                extra={**fields, "error": str(error)},
            )
        elif outcome == CONFLICT_EXHAUSTED:
            logger.log(
                level,
                "%s gave up after %d attempts: %s",
                report.command_type,
                report.attempts,
                error,
                extra={**fields, "error": str(error)},
            )
        else:
            logger.log(
                level,
                "%s failed: %s: %s",
                report.command_type,
                type(error).__name__,
                error,
                exc_info=error if outcome == ERROR and error is not None else None,
                extra={**fields, "error": f"{type(error).__name__}: {error}"},
            )

    def after_projection_batch(self, report: Any) -> None:
        """Log a projection batch at DEBUG."""
        logger = self.logger
        if not logger.isEnabledFor(_DEBUG):
            return
        fields = batch_fields(report)
        logger.debug(
            "projection %s applied %d events up to position %s (head %s)",
            fields["projection"],
            fields["events"],
            fields["position"],
            fields["head"],
            extra=fields,
        )

    def on_dead_letter(self, projection: str, event: Any, error: BaseException) -> None:
        """Log a dead-lettered event at ERROR, with the exception attached."""
        self.logger.error(
            "projection %s skipped event at position %s (%s): %s",
            projection,
            getattr(event, "position", None),
            getattr(event, "event_type", None),
            error,
            exc_info=error,
            extra={
                "projection": projection,
                "position": getattr(event, "position", None),
                "event_type": getattr(event, "event_type", None),
                "event_id": str(getattr(event, "event_id", "")) or None,
                "error": f"{type(error).__name__}: {error}",
            },
        )

    def on_projection_reconnect(
        self, projection: str, error: BaseException, attempt: int, delay: float
    ) -> None:
        """Log at WARNING that a projection's store is unavailable and when it retries."""
        self.logger.warning(
            "projection %s: store unavailable (attempt %d), retrying in %.2f s: %s",
            projection,
            attempt,
            delay,
            error,
            extra={
                "projection": projection,
                "attempt": attempt,
                "retry_in": delay,
                "error": f"{type(error).__name__}: {error}",
            },
        )


def command_fields(report: CommandReport) -> dict[str, Any]:
    """The structured fields of one command's log records."""
    metadata = report.metadata
    correlation = metadata.correlation_id if metadata is not None else None
    result = report.result
    return {
        "command": report.command_type,
        "streams": len(report.streams),
        "events_written": len(result.append.positions) if result is not None else 0,
        "attempts": report.attempts,
        "duration_ms": round((report.end_ns - report.start_ns) / 1e6, 3),
        "correlation_id": str(correlation) if correlation is not None else None,
        "outcome": report.outcome,
    }
