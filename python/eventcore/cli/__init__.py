"""The ``eventcore`` command line: inspect, migrate and operate an event store.

Installed as the ``eventcore`` console script (``eventcore --help``); also runnable as
``python -m eventcore.cli``. Built on click and rich, which come with the ``cli`` extra
(``pip install 'eventcore-py[cli]'``); without them the script says so and exits with 1.
Every command takes ``--dsn`` (or ``EVENTCORE_DSN``); ``demo`` and ``bench`` default to a
fresh in-memory store. Exit codes: 0 success, 1 a failure (unreachable server, unknown
stream or projection, store error, failed projection, click or rich missing), 2 bad usage
(unknown option, bad DSN, no store given).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventcore.cli._app import cli

__all__ = ["cli", "main"]

EXTRAS = ("click", "rich")
"""What the command line needs beyond eventcore (the ``cli`` extra)."""
INSTALL_HINT = "pip install 'eventcore-py[cli]'"


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra's package ``exc`` failed to find, or None for any other missing module."""
    top = (exc.name or "").partition(".")[0]
    return top if top in EXTRAS else None


def main() -> None:
    """Entry point of the ``eventcore`` console script."""
    try:
        from eventcore.cli._app import cli
    except ModuleNotFoundError as exc:
        package = _missing_extra(exc)
        if package is None:
            raise
        sys.stderr.write(
            f"eventcore: the command line needs {' and '.join(EXTRAS)} ({package} is not "
            f"installed): {INSTALL_HINT}\n"
        )
        raise SystemExit(1) from None
    cli(prog_name="eventcore")


def __getattr__(name: str) -> Any:
    # The click group loads on first use, so that `main` can report missing extras.
    if name == "cli":
        from eventcore.cli._app import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
