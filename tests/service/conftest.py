"""The FastAPI service example (examples/service) under test, on memory and on PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.pgserver import drop_schema, new_schema_name

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

from service.app import Settings, create_app  # noqa: E402


@dataclass
class Service:
    """A running app, a client to it, and the spans it recorded."""

    app: Any
    client: httpx.AsyncClient
    spans: InMemorySpanExporter
    settings: Settings


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def service_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """``(dsn, schema)`` of the store the service runs on (a fresh schema for PostgreSQL)."""
    if request.param == "memory":
        return "memory://", None
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db", None
    return request.getfixturevalue("postgres_dsn"), new_schema_name()


@pytest.fixture
def settings(service_dsn: tuple[str, str | None]) -> Settings:
    dsn, schema = service_dsn
    return Settings(dsn=dsn, schema=schema or "eventcore", migrate=True, read_timeout=1.0)


async def start(
    settings: Settings, *, before: Callable[[Any], None] | None = None
) -> AsyncIterator[Service]:
    """Run the app's lifespan around an httpx client on its ASGI transport.

    ``before(app)`` runs once the app is made, before its projection starts.
    """
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(settings, tracer_provider=provider)
    if before is not None:
        before(app)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
                yield Service(app, client, spans, settings)
    finally:
        if settings.dsn.startswith("postgres"):
            await drop_schema(settings.dsn, settings.schema)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    async for running in start(settings):
        yield running
