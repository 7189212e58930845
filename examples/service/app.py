"""A FastAPI service on eventcore: the bank's commands over HTTP, queries from a read model.

Run it (from the repository root, after ``pip install 'eventcore-py[service,postgres]'``)::

    EVENTCORE_DSN=memory:// uvicorn --app-dir examples --factory service.app:create_app
    EVENTCORE_DSN=postgresql://app@localhost/app SERVICE_MIGRATE=1 \\
        uvicorn --app-dir examples --factory service.app:create_app

Endpoints:

- ``POST /accounts``, ``POST /accounts/{id}/deposits``, ``POST /accounts/{id}/withdrawals``,
  ``POST /transfers`` run one command each. An ``Idempotency-Key`` header goes to the
  executor's idempotency key: a client that retries a POST with the same key writes once
  and gets the first answer back (status 200 instead of 201, ``Idempotent-Replayed: true``).
  The answer carries ``position``, the global position of the last event written.
- ``GET /accounts/{id}`` answers from the ``accounts`` projection. With
  ``?min_position=N`` (a POST's ``position``) it first waits until the projection has
  applied position N, at most ``SERVICE_READ_TIMEOUT`` seconds (else 503 with
  ``Retry-After``): the client reads its own writes.
- ``GET /healthz`` (the process answers) and ``GET /readyz`` (the store answers within
  a second, and the projection is live with a lag under ``SERVICE_MAX_LAG_SECONDS``).
- ``GET /metrics``: Prometheus text, from eventcore's ``PrometheusHook``.
- Traces: each request is an OpenTelemetry server span (continuing the caller's W3C
  ``traceparent``), and ``TracingHook`` makes each command's ``execute`` span its child.

The store comes from ``EVENTCORE_DSN`` through the command line's store opener
(``eventcore.cli._store.open_store``): ``memory://``, ``postgresql://...``, and every other
DSN the ``eventcore`` command accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import click
from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from eventcore import (
    BusinessRuleViolation,
    Command,
    ConcurrencyConflict,
    ConfigurationError,
    IdempotencyKeyReused,
    StoreUnavailable,
    ValidationError,
    execute,
)
from eventcore.cli._store import Options, open_store
from eventcore.examples.bank import Deposit, Money, OpenAccount, Transfer, Withdraw, registry
from eventcore.metrics import PrometheusHook
from eventcore.observe import add_hook, remove_hook
from eventcore.projection import MemoryCheckpointStore, ProjectionRunner
from eventcore.store import ProjectionStore
from eventcore.tracing import TracingHook

from .read_model import Accounts

__all__ = ["Settings", "create_app"]


@dataclass(frozen=True)
class Settings:
    """The service's configuration; :meth:`from_env` reads it from the environment."""

    dsn: str = "memory://"
    """The store: ``memory://``, ``sqlite:///path/events.db`` or
    ``postgresql://user:password@host:port/db``."""
    schema: str = "eventcore"
    """The PostgreSQL schema of the store."""
    migrate: bool = False
    """Apply the store's migrations at start-up (needs the schema owner's rights); for
    SQLite, also create the file if there is none."""
    read_timeout: float = 2.0
    """The longest a read-your-writes query waits for the projection, in seconds."""
    max_lag_seconds: float = 5.0
    """Readiness fails when the projection's oldest unapplied event is older than this."""

    @classmethod
    def from_env(cls) -> Settings:
        """``EVENTCORE_DSN``, ``EVENTCORE_SCHEMA``, ``SERVICE_MIGRATE``, ``SERVICE_READ_TIMEOUT``,
        ``SERVICE_MAX_LAG_SECONDS``."""
        env = os.environ
        return cls(
            dsn=env.get("EVENTCORE_DSN", cls.dsn),
            schema=env.get("EVENTCORE_SCHEMA", cls.schema),
            migrate=env.get("SERVICE_MIGRATE", "") not in ("", "0", "false"),
            read_timeout=float(env.get("SERVICE_READ_TIMEOUT", cls.read_timeout)),
            max_lag_seconds=float(env.get("SERVICE_MAX_LAG_SECONDS", cls.max_lag_seconds)),
        )


class OpenAccountBody(BaseModel):
    """``POST /accounts``."""

    account: str
    owner: str


class AmountBody(BaseModel):
    """``POST /accounts/{id}/deposits`` and ``/withdrawals``: an amount in cents."""

    amount: int


class TransferBody(BaseModel):
    """``POST /transfers``."""

    source: str
    target: str
    amount: int


def _error(status: int, error: BaseException, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": type(error).__name__, "detail": str(error)}, status_code=status, headers=headers
    )


def create_app(
    settings: Settings | None = None, *, tracer_provider: trace.TracerProvider | None = None
) -> FastAPI:
    """The service as an ASGI app; its store and projection open with the app's lifespan.

    Args:
        settings: the configuration (default: :meth:`Settings.from_env`).
        tracer_provider: where spans go (default: OpenTelemetry's global provider).
    """
    settings = settings or Settings.from_env()
    metrics = CollectorRegistry()
    hooks = [PrometheusHook(metrics), TracingHook(tracer_provider=tracer_provider)]
    tracer = trace.get_tracer("eventcore.examples.service", tracer_provider=tracer_provider)
    accounts = Accounts()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in hooks:
            add_hook(hook)
        try:
            async with contextlib.AsyncExitStack() as stack:
                options = Options(dsn=settings.dsn, schema=settings.schema, app=None)
                try:
                    opened = await stack.enter_async_context(
                        open_store(options, registry=registry, create=settings.migrate)
                    )
                except click.ClickException as exc:  # a bad DSN, an unreachable server
                    raise ConfigurationError(f"EVENTCORE_DSN: {exc.format_message()}") from None
                if settings.migrate and opened.postgres is not None:
                    await opened.postgres.migrate()
                if not isinstance(opened.store, ProjectionStore):
                    raise ConfigurationError(f"{opened.label} cannot run projections")
                # Checkpoints in memory, like the read model they describe.
                runner = ProjectionRunner(
                    opened.store, [accounts], checkpoints=MemoryCheckpointStore()
                )
                await stack.enter_async_context(runner)
                app.state.store = opened.store
                app.state.runner = runner
                yield
        finally:
            for hook in hooks:
                remove_hook(hook)

    app = FastAPI(title="eventcore bank service", lifespan=lifespan)
    app.state.accounts = accounts
    app.state.metrics = metrics

    @app.middleware("http")
    async def server_span(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """One server span per request, continuing the caller's ``traceparent``."""
        context = propagate.extract(dict(request.headers))
        name = f"{request.method} {request.url.path}"
        with tracer.start_as_current_span(name, context=context, kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("url.path", request.url.path)
            response = await call_next(request)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def run(command: Callable[[], Command[Any, Any]], key: str | None) -> Response:
        """Execute one command; map eventcore's errors to HTTP answers."""
        try:
            result = await execute(app.state.store, command(), idempotency_key=key)
        except (ValidationError, IdempotencyKeyReused) as exc:
            return _error(422, exc)
        except BusinessRuleViolation as exc:
            return _error(409, exc)
        except ConcurrencyConflict as exc:  # the retries ran out: worth another try
            return _error(409, exc, **{"Retry-After": "1"})
        except StoreUnavailable as exc:  # OutcomeUnknown too: retry with the same key
            return _error(503, exc, **{"Retry-After": "1"})
        body = {
            "position": result.positions[-1],
            "events": [
                {"id": str(e.event_id), "stream": e.stream_id, "version": e.version}
                for e in result.events
            ],
        }
        headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
        return JSONResponse(body, status_code=200 if result.replayed else 201, headers=headers)

    IdempotencyKey = Header(default=None, alias="Idempotency-Key")

    @app.post("/accounts", status_code=201)
    async def open_account(body: OpenAccountBody, key: str | None = IdempotencyKey) -> Response:
        """Open an account."""
        return await run(lambda: OpenAccount(account=body.account, owner=body.owner), key)

    @app.post("/accounts/{account}/deposits", status_code=201)
    async def deposit(account: str, body: AmountBody, key: str | None = IdempotencyKey) -> Response:
        """Deposit into an open account."""
        return await run(lambda: Deposit(account=account, amount=Money(body.amount)), key)

    @app.post("/accounts/{account}/withdrawals", status_code=201)
    async def withdraw(
        account: str, body: AmountBody, key: str | None = IdempotencyKey
    ) -> Response:
        """Withdraw what the balance covers."""
        return await run(lambda: Withdraw(account=account, amount=Money(body.amount)), key)

    @app.post("/transfers", status_code=201)
    async def transfer(body: TransferBody, key: str | None = IdempotencyKey) -> Response:
        """Move money between two accounts in one atomic write."""
        return await run(
            lambda: Transfer(source=body.source, target=body.target, amount=Money(body.amount)),
            key,
        )

    @app.get("/accounts/{account}")
    async def get_account(account: str, min_position: int = Query(default=0, ge=0)) -> Response:
        """An account from the read model, after it reached ``min_position``."""
        if min_position:
            try:
                await app.state.runner.wait_for(min_position, timeout=settings.read_timeout)
            except TimeoutError as exc:
                return _error(503, exc, **{"Retry-After": "1"})
        view = accounts.accounts.get(account)
        if view is None:
            return JSONResponse({"error": "NotFound", "detail": account}, status_code=404)
        return JSONResponse(
            {
                "account": account,
                "owner": view.owner,
                "balance": view.balance,
                "version": view.version,
            }
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Readiness: the store answers and the projection is live and close to the head."""
        problems: list[str] = []
        try:
            head = await asyncio.wait_for(app.state.store.head(), timeout=1.0)
        except (StoreUnavailable, TimeoutError, OSError) as exc:
            head = None
            problems.append(f"store unreachable: {type(exc).__name__}: {exc}")
        status = (await app.state.runner.status())[accounts.name]
        if status.state != "live":
            problems.append(f"projection {status.name} is {status.state}")
        if status.lag_seconds > settings.max_lag_seconds:
            problems.append(
                f"projection {status.name} lags {status.lag_seconds:.1f} s "
                f"(over {settings.max_lag_seconds} s)"
            )
        body = {
            "ready": not problems,
            "problems": problems,
            "head": head,
            "projection": {
                "state": status.state,
                "position": status.position,
                "lag_events": status.lag_events,
                "lag_seconds": status.lag_seconds,
            },
        }
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text exposition of eventcore's metrics."""
        return PlainTextResponse(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app
