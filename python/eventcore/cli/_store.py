"""Opening the store a command works on, loading ``--app``, and turning errors into exits."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import click

from eventcore.errors import (
    ConfigurationError,
    EventCoreError,
    InvalidStreamId,
    StoreError,
    StoreUnavailable,
    ValidationError,
)
from eventcore.memory import AsyncMemoryStore, MemoryStore
from eventcore.recorded import WriteToken
from eventcore.store import AsyncView, EventStore, ProjectionStore, StreamCatalog

if TYPE_CHECKING:
    from eventcore.postgres import PostgresStore
    from eventcore.sqlite import SqliteStore

T = TypeVar("T")

POSTGRES_SCHEMES = ("postgresql", "postgres")
MEMORY_DSNS = ("memory", "memory:", "memory://")
SQLITE_PREFIX = "sqlite:///"

EXIT_FAILURE = 1
"""A command failed: store error, unknown stream or projection, failed projection."""
EXIT_USAGE = 2
"""Bad usage: unknown option, bad DSN, no store given (click's own code for usage errors)."""


class Failure(click.ClickException):
    """An operational failure: printed as ``error: ...`` on stderr, exit code 1."""

    exit_code = EXIT_FAILURE

    def show(self, file: Any = None) -> None:
        """Print the message in red on stderr."""
        click.secho(f"error: {self.format_message()}", err=True, fg="red")


def redact(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***``."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def sqlite_path(dsn: str) -> str:
    """The file of a ``sqlite:///path`` DSN: what follows ``sqlite:///``, so
    ``sqlite:///events.db`` is relative to the current directory and
    ``sqlite:////var/lib/app/events.db`` absolute (as SQLAlchemy reads them).

    Raises a usage error for another form, no path, or ``:memory:`` (use ``memory://``).
    """
    if not dsn.lower().startswith(SQLITE_PREFIX):
        raise click.BadParameter(
            f"{dsn!r}: a SQLite DSN is sqlite:///path/to/events.db (three slashes, then the "
            "path; four for an absolute one)",
            param_hint="--dsn",
        )
    path = dsn[len(SQLITE_PREFIX) :].split("?", 1)[0]
    if not path or path == ":memory:":
        raise click.BadParameter(
            f"{dsn!r} names no file; for an in-memory store use memory://", param_hint="--dsn"
        )
    return path


def check_dsn(dsn: str) -> str:
    """Return ``"memory"``, ``"sqlite"`` or ``"postgres"`` for a valid DSN; a usage error
    otherwise."""
    if dsn.strip().lower() in MEMORY_DSNS:
        return "memory"
    if dsn.lower().startswith("sqlite:"):
        sqlite_path(dsn)
        return "sqlite"
    try:
        parts = urlsplit(dsn)
        scheme = parts.scheme.lower()
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise click.BadParameter(
            f"{redact(dsn)!r} is not a valid DSN ({exc})", param_hint="--dsn"
        ) from None
    if scheme not in POSTGRES_SCHEMES:
        raise click.BadParameter(
            f"{redact(dsn)!r} is not a DSN eventcore knows; use postgresql://user@host:port/db, "
            "sqlite:///path/to/events.db or memory://",
            param_hint="--dsn",
        )
    return "postgres"


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (``module`` alone means its attribute ``app``).

    The attribute may be a zero-argument callable returning the app (called once).
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: find modules in the current dir
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="--app"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attr!r}", param_hint="--app"
            ) from None
    if callable(obj) and not isinstance(obj, type) and not hasattr(obj, "projections"):
        obj = obj()
    return obj


@dataclass
class Options:
    """The options every store command shares."""

    dsn: str | None
    schema: str
    app: str | None
    connect_timeout: float = 5.0
    _app: Any = None
    replicas: tuple[str, ...] = field(default_factory=lambda: replica_dsns(None))
    """Read replicas of a PostgreSQL ``--dsn`` (``EVENTCORE_REPLICAS``): reads go there."""

    def app_object(self) -> Any:
        """The ``--app`` object (loaded once), or None."""
        if self._app is None and self.app:
            self._app = load_app(self.app)
        return self._app


def replica_dsns(value: str | None) -> tuple[str, ...]:
    """The read replicas named by ``value`` (else ``EVENTCORE_REPLICAS``): DSNs separated
    by whitespace or commas."""
    text = value if value is not None else os.environ.get("EVENTCORE_REPLICAS", "")
    return tuple(d for d in text.replace(",", " ").split() if d)


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--dsn`` (or ``EVENTCORE_DSN``), ``--schema`` and ``--app`` to a command."""
    fn = click.option(
        "--app",
        "app",
        envvar="EVENTCORE_APP",
        metavar="MODULE:ATTR",
        help="Your app object: its `store` and `projections` (see `eventcore --help`). "
        "Env: EVENTCORE_APP.",
    )(fn)
    fn = click.option(
        "--schema",
        default="eventcore",
        show_default=True,
        envvar="EVENTCORE_SCHEMA",
        help="PostgreSQL schema of the store. Env: EVENTCORE_SCHEMA.",
    )(fn)
    fn = click.option(
        "--dsn",
        envvar="EVENTCORE_DSN",
        metavar="DSN",
        help="postgresql://user:password@host:port/db, sqlite:///path/to/events.db, or "
        "memory:// for an empty in-memory store. Env: EVENTCORE_DSN.",
    )(fn)
    return fn


def token_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--after-token`` (a command result's write token) to a read command."""
    return click.option(
        "--after-token",
        "after_token",
        metavar="TIMELINE:POSITION",
        callback=_parse_token,
        help="A command result's write token (str(result.write_token)): the read shows "
        "that write. A PostgreSQL replica read waits for it (replica_wait), else the "
        "primary answers; other stores show every acknowledged write anyway.",
    )(fn)


def _parse_token(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return WriteToken.parse(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from exc


@dataclass
class OpenStore:
    """A store opened for one command: its async API, and the sync one for memory."""

    store: EventStore
    """The async face of the store (PostgresStore, or an in-memory store's ``.aio``)."""
    memory: MemoryStore | None
    label: str
    postgres: PostgresStore | None = None
    """The PostgreSQL store, when it is one (migrations)."""
    sqlite: SqliteStore | None = None
    """The SQLite store, when it is one."""

    @property
    def is_postgres(self) -> bool:
        """Whether this is a PostgreSQL store."""
        return self.postgres is not None

    def token_args(self, token: WriteToken | None) -> dict[str, Any]:
        """The keyword a read takes to show the write of ``token`` (``--after-token``):
        only a PostgreSQL store's reads take one (its replicas may lag)."""
        return {"after": token} if token is not None and self.postgres is not None else {}

    async def list_streams(
        self, *, prefix: str | None, after: str | None, limit: int | None
    ) -> list[tuple[str, int]]:
        """``(stream id, version)`` pairs sorted by id."""
        if not isinstance(self.store, StreamCatalog):
            raise Failure(f"{self.label} cannot list its streams")
        return await self.store.list_streams(prefix=prefix, after=after, limit=limit)

    async def wait_for_append(self, after: int, timeout: float) -> int:
        """Wait until the head passes ``after`` (or ``timeout`` seconds); the head."""
        if isinstance(self.store, ProjectionStore):
            return await self.store.wait_for_append(after, timeout)
        await asyncio.sleep(min(timeout, 0.5))  # a store that cannot wait: poll
        return await self.store.head()


def _postgres(store: object) -> PostgresStore | None:
    # Only a store made by the app can be one, and then its module is loaded already.
    module = sys.modules.get("eventcore.postgres.store")
    if module is not None and isinstance(store, module.PostgresStore):
        return cast("PostgresStore", store)
    return None


def _sqlite(store: object) -> SqliteStore | None:
    # Only a store made by the app can be one, and then its module is loaded already.
    module = sys.modules.get("eventcore.sqlite.store")
    if module is not None and isinstance(store, module.SqliteStore | module.AsyncSqliteStore):
        return cast("SqliteStore", getattr(store, "sync", store))
    return None


def _as_open(store: object, label: str) -> OpenStore:
    if isinstance(store, MemoryStore):
        return OpenStore(store.aio, store, label)
    sqlite = _sqlite(store)
    if sqlite is not None:
        return OpenStore(sqlite.aio, None, label, sqlite=sqlite)
    if isinstance(store, AsyncMemoryStore):
        return OpenStore(store, store.sync, label)
    if isinstance(store, AsyncView):  # a sync store with an async view (e.g. FaultyStore)
        memory = getattr(store, "store", None)  # a wrapper's real store, for the sync paths
        return OpenStore(store.aio, memory if isinstance(memory, MemoryStore) else None, label)
    if isinstance(store, EventStore):
        return OpenStore(store, None, label, _postgres(store))
    raise Failure(f"{label} is not an event store (see eventcore.store.EventStore): {store!r}")


def open_sqlite(dsn: str, *, create: bool, registry: Any = None) -> SqliteStore:
    """The SQLite store of a ``sqlite:///path`` DSN (see :func:`sqlite_path`).

    A missing file is created only with ``create`` (migrate, demo, bench): a command that
    reads is told the file does not exist rather than given a new empty store.
    """
    from eventcore.sqlite import SqliteStore

    path = sqlite_path(dsn)
    if not create and not os.path.exists(path):
        raise Failure(f"{path}: no such file (`eventcore migrate --dsn {dsn}` creates it)")
    try:
        return SqliteStore(path, **({"registry": registry} if registry else {}))
    except (ValidationError, ConfigurationError) as exc:
        raise click.BadParameter(str(exc), param_hint="--dsn") from None
    except StoreError as exc:
        raise Failure(f"cannot open the SQLite store {path}: {exc}") from None


@contextlib.asynccontextmanager
async def open_store(
    opts: Options, *, default_memory: bool = False, registry: Any = None, create: bool = False
) -> AsyncIterator[OpenStore]:
    """Open the store ``opts`` names: ``--dsn``, else the app's ``store``, else memory.

    ``create``: a ``sqlite:///`` DSN may name a file that does not exist yet (it is made).
    Raises a usage error when there is none and ``default_memory`` is False.
    """
    app = opts.app_object()
    if opts.dsn:
        kind = check_dsn(opts.dsn)
        if kind == "memory":
            yield _as_open(MemoryStore(**({"registry": registry} if registry else {})), "memory")
            return
        if kind == "sqlite":
            sqlite = open_sqlite(opts.dsn, create=create, registry=registry)
            try:
                yield OpenStore(sqlite.aio, None, sqlite.path, sqlite=sqlite)
            finally:
                sqlite.close()
            return
        try:
            from eventcore.postgres import PostgresStore
        except ImportError as exc:
            raise Failure(
                f"the PostgreSQL store needs asyncpg ({exc}): pip install 'eventcore-py[postgres]'"
            ) from None
        label = redact(opts.dsn)
        try:
            pg = PostgresStore(
                opts.dsn,
                schema=opts.schema,
                connect_timeout=opts.connect_timeout,
                max_size=4,
                replicas=opts.replicas,
                **({"registry": registry} if registry else {}),
            )
        except (ValidationError, ConfigurationError) as exc:  # a bad schema name or DSN
            raise click.BadParameter(str(exc), param_hint="--dsn/--schema") from None
        try:
            await pg.open()
        except StoreUnavailable as exc:
            raise Failure(f"cannot reach the PostgreSQL server at {label}: {exc}") from None
        except StoreError as exc:
            raise Failure(f"cannot open the PostgreSQL store at {label}: {exc}") from None
        try:
            yield OpenStore(pg, None, f"{label} (schema {opts.schema})", pg)
        finally:
            await pg.close()
        return
    store = getattr(app, "store", None) if app is not None else None
    if store is not None:
        if callable(store) and not hasattr(store, "read_all"):
            store = store()
            if inspect.isawaitable(store):
                store = await store
        yield _as_open(store, f"the store of {opts.app}")
        return
    if default_memory:
        yield _as_open(MemoryStore(**({"registry": registry} if registry else {})), "memory")
        return
    raise click.UsageError(
        "no store given: pass --dsn postgresql://user@host/db or sqlite:///events.db (or "
        "set EVENTCORE_DSN), "
        "or --app module:attr naming an app with a `store`"
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, mapping eventcore errors to clear messages and exits."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise click.Abort() from None
    except InvalidStreamId as exc:
        raise click.BadParameter(str(exc), param_hint="STREAM") from None
    except StoreUnavailable as exc:
        raise Failure(f"the store is unavailable: {exc}") from None
    except EventCoreError as exc:
        raise Failure(f"{type(exc).__name__}: {exc}") from None


def fail(message: str) -> NoReturn:
    """Stop the command with ``error: message`` and exit code 1."""
    raise Failure(message)
