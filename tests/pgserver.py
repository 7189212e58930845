"""PostgreSQL for the test suite: a throwaway server per session, a fresh schema per test.

Fixtures (load this module as a pytest plugin: ``pytest_plugins = ["tests.pgserver"]``):

- ``postgres_server`` (session): the running server (:class:`PostgresServer`), with
  ``dsn``, ``admin_dsn`` and ``restart()`` (only for a server this module started).
- ``postgres_dsn`` (session): the DSN of the test database.
- ``postgres_store_factory`` (function): ``await make(**options)`` returns a new migrated
  :class:`~eventcore.postgres.PostgresStore` on a fresh random schema; all are closed and
  their schemas dropped after the test.
- ``postgres_store`` (function): one fresh migrated store on an empty schema.
- ``postgres_replica`` (session, started on first use): a streaming hot standby of the
  session's server (:class:`Replica`: ``pg_basebackup -R`` from it, its own port), with
  ``dsn``, ``stop()``, ``start()`` and ``wait_replayed()``.
- ``pgbouncer`` (session, started on first use): a PgBouncer (:class:`Bouncer`) in
  transaction-pooling mode in front of the session's server; ``dsn`` is the test database
  through it.
- ``pgbouncer_store`` (function): a migrated store on a fresh schema whose every
  connection goes through that PgBouncer (``pgbouncer=True``, no ``direct_dsn``).
- :func:`launch_cluster`: a primary and a replica of their own, for a test that promotes
  the replica or stops the primary (the session's servers stay as they are).

Where the server comes from:

1. ``EVENTCORE_TEST_DSN`` set: that server is used as it is (it is never restarted).
2. Otherwise the machine's server binaries (``EVENTCORE_PG_BIN``, then the newest
   ``/usr/lib/postgresql/*/bin``, then ``pg_ctl`` on ``PATH``) run a new cluster through
   pytest-postgresql's ``PostgreSQLExecutor``: throwaway data directory, loopback only, a
   free port, ``fsync`` on as in production. ``initdb`` refuses to run as root, so as root
   ``pg_ctl`` runs through ``runuser`` as the unprivileged ``postgres`` OS user (created
   with ``useradd`` if missing).
3. Neither: the PostgreSQL tests FAIL when the ``CI`` environment variable is set, and are
   skipped with the reason otherwise. The same holds for the replica (it needs a server
   started here: not one from ``EVENTCORE_TEST_DSN``) and for ``pgbouncer`` (Debian's
   package; ``scripts/ensure-postgres.sh`` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "Bouncer",
    "PostgresServer",
    "Replica",
    "launch_cluster",
    "pgbouncer",
    "pgbouncer_store",
    "postgres_dsn",
    "postgres_replica",
    "postgres_server",
    "postgres_store",
    "postgres_store_factory",
]

DB_NAME = "eventcore_test"
SUPERUSER = "postgres"
OS_USERS = ("postgres", "eventcore-pg")
SERVER_OPTIONS = (
    "-c fsync=on -c synchronous_commit=on -c full_page_writes=on "
    "-c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB "
    "-c max_prepared_transactions=10 -c wal_keep_size=128MB"
)


def find_pg_ctl() -> str | None:
    """The ``pg_ctl`` to use, or ``None`` when this machine has no PostgreSQL server."""
    if bindir := os.environ.get("EVENTCORE_PG_BIN"):  # explicit: that one or none
        path = os.path.join(bindir, "pg_ctl")
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    candidates = []

    def major(path: str) -> float:
        try:
            return float(Path(path).parts[-3])
        except (ValueError, IndexError):
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=major, reverse=True)
    candidates += [p for p in [shutil.which("pg_ctl")] if p]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _os_user() -> str:
    """An unprivileged OS user to run the server as (created if none exists)."""
    for name in OS_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    name = OS_USERS[-1]
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    return name


class PostgresServer:
    """A PostgreSQL server for the tests: its DSNs, and a restart for fault tests."""

    def __init__(
        self,
        dsn: str,
        admin_dsn: str,
        executor: Any = None,
        base: Path | None = None,
        pg_ctl: str | None = None,
    ):
        self.dsn = dsn
        """The test database (tests create their own schemas in it)."""
        self.admin_dsn = admin_dsn
        """The ``postgres`` maintenance database, as the superuser."""
        self._executor = executor
        self._base = base
        self.pg_ctl = pg_ctl
        """The ``pg_ctl`` this server was started with (None: not started here)."""
        self._crashed = False
        self.port = int(executor.port) if executor is not None else 0
        """The server's port (0: not started here)."""

    @property
    def can_restart(self) -> bool:
        """Whether this server was started here (and so may be stopped and restarted)."""
        return self._executor is not None

    @property
    def logfile(self) -> Path | None:
        """The server's log file, when this module started it."""
        return Path(self._executor.logfile) if self._executor is not None else None

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed)."""
        self._require_own()
        self._executor.stop()

    def crash(self) -> None:
        """Stop the server at once, as a crash would (``pg_ctl stop -m immediate``)."""
        self._require_own()
        datadir = str(self._executor.datadir)
        _run([self.pg_ctl or "pg_ctl", "stop", "-m", "immediate", "-D", datadir], "crash")
        # The executor's own stop would ask pg_ctl again: only forget its process.
        from mirakuru import SimpleExecutor

        with contextlib.suppress(Exception):
            SimpleExecutor.stop(self._executor)
        self._crashed = True

    def start(self) -> None:
        """Start the server again on the same data directory and port; wait until ready."""
        self._require_own()
        self._executor.start()
        asyncio.run(_wait_ready(self.admin_dsn))

    def restart(self) -> None:
        """Stop and start the server; every open connection is dropped."""
        self.stop()
        self.start()

    def _require_own(self) -> None:
        if self._executor is None:
            pytest.skip("the server comes from EVENTCORE_TEST_DSN and is not restarted")

    @classmethod
    def launch(cls, pg_ctl: str) -> PostgresServer:
        """Initialise and start a throwaway cluster with ``pg_ctl``; see the module docstring."""
        import port_for
        from pytest_postgresql.executors import PostgreSQLExecutor

        base = Path(tempfile.mkdtemp(prefix="eventcore-pg-"))
        executable = pg_ctl
        if os.geteuid() == 0:
            user = pwd.getpwnam(_os_user())
            os.chown(base, user.pw_uid, user.pw_gid)
            wrapper = base / "pg_ctl-as-user"
            wrapper.write_text(f'#!/bin/sh\nexec runuser -u {user.pw_name} -- "{pg_ctl}" "$@"\n')
            wrapper.chmod(stat.S_IRWXU)
            executable = str(wrapper)
        port = port_for.get_port(None)
        executor = PostgreSQLExecutor(
            executable=executable,
            host="127.0.0.1",
            port=port,
            datadir=str(base / "data"),
            unixsocketdir=str(base),
            logfile=str(base / "server.log"),
            startparams="-w",
            dbname=DB_NAME,
            user=SUPERUSER,
            postgres_options=SERVER_OPTIONS,
            timeout=120,
        )
        try:
            executor.start()
        except BaseException:
            log = base / "server.log"
            detail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            shutil.rmtree(base, ignore_errors=True)
            raise RuntimeError(f"the PostgreSQL test server did not start:\n{detail}") from None
        admin = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
        asyncio.run(_wait_ready(admin))
        asyncio.run(_create_database(admin, DB_NAME))
        dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DB_NAME}"
        return cls(dsn, admin, executor, base, pg_ctl)

    def shutdown(self) -> None:
        """Stop a server started here and delete its data directory."""
        if self._executor is not None:
            try:
                if not self._crashed:
                    self._executor.stop()
            finally:
                if self._base is not None:
                    shutil.rmtree(self._base, ignore_errors=True)


async def _wait_ready(dsn: str, timeout: float = 60.0) -> None:
    """Wait until the server accepts queries (its port opens while it is still starting)."""
    import asyncpg

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.CannotConnectNowError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        await conn.close()
        return


async def _create_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests need a server under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (see the module docstring for where it comes from)."""
    dsn = os.environ.get("EVENTCORE_TEST_DSN")
    if dsn:
        yield PostgresServer(dsn, dsn)
        return
    try:
        import asyncpg  # noqa: F401
        import pytest_postgresql  # noqa: F401
    except ImportError as exc:
        _unavailable(f"{exc.name} is not installed (pip install -e '.[test]')")
    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        _unavailable(
            "no PostgreSQL server binaries found (install postgresql, set EVENTCORE_PG_BIN, "
            "or point EVENTCORE_TEST_DSN at a server)"
        )
    server = PostgresServer.launch(pg_ctl)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of the session's test database."""
    return postgres_server.dsn


def new_schema_name() -> str:
    """A fresh schema name for one test."""
    return f"t_{uuid.uuid4().hex[:16]}"


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop a test schema and everything in it (best effort)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except asyncpg.PostgresError:
        pass
    finally:
        await conn.close()


StoreFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def postgres_store_factory(postgres_dsn: str) -> AsyncIterator[StoreFactory]:
    """``await make(**options)``: a new migrated PostgresStore on a fresh schema.

    Options go to :class:`~eventcore.postgres.PostgresStore` (``registry``, ``max_size``,
    ``schema``...). Every store made is closed and its schema dropped after the test.
    """
    from eventcore.postgres import PostgresStore

    made: list[Any] = []

    async def make(**options: Any) -> Any:
        options.setdefault("schema", new_schema_name())
        store = PostgresStore(postgres_dsn, **options)
        made.append(store)
        await store.open()
        await store.migrate()
        return store

    try:
        yield make
    finally:
        for store in made:
            try:
                await store.close()
            finally:
                await drop_schema(postgres_dsn, store.schema)


@pytest.fixture
async def postgres_store(postgres_store_factory: StoreFactory) -> Any:
    """A fresh, migrated PostgresStore on an empty schema of its own."""
    return await postgres_store_factory()


@pytest.fixture
async def partitioned_postgres_store(postgres_store_factory: StoreFactory) -> Any:
    """A fresh PostgresStore whose events table is partitioned by position range
    (eventcore.postgres.partition): spans of 4 transaction ids, 5 made ahead, so a test's
    appends land in several partitions and, past those, in the DEFAULT one."""
    from eventcore.postgres.partition import partition_events

    store = await postgres_store_factory()
    await partition_events(store, span=4, ahead=5)
    return store


# -- a streaming replica, pgbouncer, a cluster of its own ------------------------------------


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as the unprivileged server user when we are root (as ``launch`` does)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", _os_user(), "--", *argv]
    return argv


def _own_dir(prefix: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        user = pwd.getpwnam(_os_user())
        os.chown(base, user.pw_uid, user.pw_gid)
    return base


def _run(argv: list[str], what: str, log: Path | None = None, timeout: float = 120) -> None:
    try:
        subprocess.run(_as_server_user(argv), check=True, capture_output=True, timeout=timeout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        out = getattr(exc, "stderr", b"") or b""
        detail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        raise RuntimeError(f"{what} failed: {out.decode(errors='replace')}\n{detail}") from None


class Replica:
    """A streaming hot standby: ``pg_basebackup -R`` from a primary, on a port of its own.

    ``dsn`` is the test database on the replica (read-only); ``admin_dsn`` its ``postgres``
    database. :meth:`stop`, :meth:`start` and :meth:`promote` drive it with ``pg_ctl``.
    """

    def __init__(self, pg_ctl: str, base: Path, port: int) -> None:
        self._pg_ctl = pg_ctl
        self._base = base
        self.port = port
        """The replica's port."""
        self.datadir = base / "data"
        """Its data directory."""
        self.logfile = base / "server.log"
        """Its server log."""
        self.dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DB_NAME}"
        """The test database on the replica."""
        self.admin_dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
        """Its ``postgres`` maintenance database."""

    @classmethod
    def launch(cls, pg_ctl: str, primary_port: int) -> Replica:
        """Base-back-up the primary on ``primary_port`` and start it as a standby."""
        import port_for

        base = _own_dir("eventcore-replica-")
        bindir = os.path.dirname(pg_ctl)
        _run(
            [
                os.path.join(bindir, "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(primary_port), "-U", SUPERUSER),
                *("-D", str(base / "data"), "-R", "-X", "stream", "-c", "fast"),
            ],
            "pg_basebackup",
        )
        replica = cls(pg_ctl, base, port_for.get_port(None))
        try:
            replica.start()
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return replica

    def start(self) -> None:
        """Start it (again) and wait until it accepts read-only queries."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories='{self._base}' -c hot_standby=on "
            "-c max_connections=300 -c shared_buffers=128MB -c max_prepared_transactions=10"
        )
        argv = [self._pg_ctl, "start", "-w", "-t", "120", "-D", str(self.datadir)]
        _run(
            [*argv, "-l", str(self.logfile), "-o", options],
            "starting the replica",
            self.logfile,
        )
        asyncio.run(_wait_ready(self.admin_dsn))

    def stop(self) -> None:
        """Stop it (fast shutdown)."""
        _run([self._pg_ctl, "stop", "-w", "-m", "fast", "-D", str(self.datadir)], "stop")

    def promote(self) -> None:
        """Promote it to a primary (``pg_ctl promote``, waits until it accepts writes)."""
        _run([self._pg_ctl, "promote", "-w", "-D", str(self.datadir)], "promote")

    async def wait_replayed(self, primary_dsn: str, timeout: float = 30.0) -> None:
        """Wait until it has replayed everything the primary has written so far."""
        import asyncpg

        primary = await asyncpg.connect(primary_dsn)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
        finally:
            await primary.close()
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not await conn.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", target):
                if loop.time() > deadline:
                    raise TimeoutError("the replica did not catch up")
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    def shutdown(self) -> None:
        """Stop it if running and delete its data directory."""
        try:
            subprocess.run(
                _as_server_user([self._pg_ctl, "stop", "-m", "immediate", "-D", str(self.datadir)]),
                capture_output=True,
                timeout=60,
            )
        finally:
            shutil.rmtree(self._base, ignore_errors=True)


def find_pgbouncer() -> str | None:
    """The ``pgbouncer`` binary (Debian installs it in /usr/sbin), or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


class Bouncer:
    """A PgBouncer in transaction-pooling mode in front of one server (loopback only).

    ``dsn`` is the test database through it. Any database name is forwarded to the server.
    """

    def __init__(self, process: subprocess.Popen[bytes], base: Path, port: int) -> None:
        self._process = process
        self._base = base
        self.port = port
        """PgBouncer's port."""
        self.dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DB_NAME}"
        """The test database through PgBouncer."""
        self.logfile = base / "pgbouncer.log"
        """Its log."""

    @classmethod
    def launch(cls, binary: str, server_port: int, pool_mode: str = "transaction") -> Bouncer:
        """Start ``binary`` in front of the server on ``server_port``; wait until it serves."""
        import port_for

        base = _own_dir("eventcore-pgbouncer-")
        port = port_for.get_port(None)
        users = base / "users.txt"
        users.write_text(f'"{SUPERUSER}" ""\n"eventcore_app" ""\n')
        config = base / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\n"
            f"pool_mode = {pool_mode}\n"
            "max_client_conn = 500\ndefault_pool_size = 40\nmin_pool_size = 0\n"
            # What drivers send at startup that PgBouncer does not track itself (not
            # statement_timeout: the store's PgBouncer mode must not send it).
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {base / 'pgbouncer.log'}\npidfile = {base / 'pgbouncer.pid'}\n"
            "server_reset_query = DISCARD ALL\nserver_check_delay = 0\n"
        )
        if os.geteuid() == 0:
            user = pwd.getpwnam(_os_user())
            for path in (users, config):
                os.chown(path, user.pw_uid, user.pw_gid)
        process = subprocess.Popen(
            _as_server_user([binary, str(config)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # it logs to its logfile
        )
        bouncer = cls(process, base, port)
        try:
            asyncio.run(_wait_ready(bouncer.dsn, timeout=30))
        except BaseException:
            bouncer.shutdown()
            log = base / "pgbouncer.log"
            raise RuntimeError(
                "pgbouncer did not start: "
                + (log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)")
            ) from None
        return bouncer

    def shutdown(self) -> None:
        """Stop it and delete its files."""
        try:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
        finally:
            shutil.rmtree(self._base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_replica(postgres_server: PostgresServer) -> Iterator[Replica]:
    """A streaming replica of the session's server, started on first use."""
    if not postgres_server.can_restart or postgres_server.pg_ctl is None:
        _unavailable("a replica needs a server started by the suite (not EVENTCORE_TEST_DSN)")
    replica = Replica.launch(postgres_server.pg_ctl, postgres_server.port)  # type: ignore[arg-type]
    try:
        yield replica
    finally:
        replica.shutdown()


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[Bouncer]:
    """PgBouncer (transaction pooling) in front of the session's server, on first use."""
    if not postgres_server.can_restart:
        _unavailable("pgbouncer needs a server started by the suite (not EVENTCORE_TEST_DSN)")
    binary = find_pgbouncer()
    if binary is None:
        _unavailable("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    bouncer = Bouncer.launch(binary, postgres_server.port)  # type: ignore[arg-type]
    try:
        yield bouncer
    finally:
        bouncer.shutdown()


@pytest.fixture
async def pgbouncer_store(pgbouncer: Bouncer, postgres_dsn: str) -> AsyncIterator[Any]:
    """A fresh migrated PostgresStore that reaches the server only through PgBouncer."""
    from eventcore.postgres import PostgresStore

    store = PostgresStore(pgbouncer.dsn, schema=new_schema_name(), pgbouncer=True)
    try:
        await store.open()
        await store.migrate()
        yield store
    finally:
        try:
            await store.close()
        finally:
            await drop_schema(postgres_dsn, store.schema)


def launch_cluster(*, synchronous: bool = False) -> tuple[PostgresServer, Replica]:
    """A primary and a streaming replica of their own (shut both down when done).

    ``synchronous``: the primary acknowledges a commit only once the replica has flushed
    it (``synchronous_standby_names = '*'``), so a crash of the primary loses nothing
    acknowledged.
    """
    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        _unavailable("no PostgreSQL server binaries found")
    primary = PostgresServer.launch(pg_ctl)  # type: ignore[arg-type]
    try:
        replica = Replica.launch(pg_ctl, primary.port)  # type: ignore[arg-type]
        if synchronous:
            asyncio.run(_synchronous(primary.admin_dsn))
        return primary, replica
    except BaseException:
        primary.shutdown()
        raise


async def _synchronous(admin_dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await conn.execute("SELECT pg_reload_conf()")
        while (
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
            )
            == 0
        ):
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
