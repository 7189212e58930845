"""The FastAPI service example: commands over HTTP, idempotent retries, read-your-writes,
readiness, metrics and traces, on the in-memory store and on PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from opentelemetry.trace import SpanKind

from eventcore import StoreUnavailable
from tests.service.conftest import Service, Settings, start


async def open_account(service: Service, account: str, owner: str = "ann") -> dict[str, Any]:
    response = await service.client.post("/accounts", json={"account": account, "owner": owner})
    assert response.status_code == 201, response.text
    return response.json()


async def events_of(service: Service, stream: str) -> list[Any]:
    return list(await service.app.state.store.read_stream(stream))


async def test_a_post_runs_its_command_and_a_query_reads_the_write(service: Service) -> None:
    await open_account(service, "acc-1")
    deposit = await service.client.post("/accounts/acc-1/deposits", json={"amount": 250})
    assert deposit.status_code == 201
    position = deposit.json()["position"]
    assert deposit.json()["events"][0]["version"] == 2

    response = await service.client.get("/accounts/acc-1", params={"min_position": position})
    assert response.status_code == 200
    assert response.json() == {"account": "acc-1", "owner": "ann", "balance": 250, "version": 2}


async def test_a_transfer_writes_both_accounts(service: Service) -> None:
    await open_account(service, "acc-1")
    await open_account(service, "acc-2", "bob")
    await service.client.post("/accounts/acc-1/deposits", json={"amount": 100})
    response = await service.client.post(
        "/transfers", json={"source": "acc-1", "target": "acc-2", "amount": 40}
    )
    assert response.status_code == 201
    assert [e["stream"] for e in response.json()["events"]] == ["acc-1", "acc-2"]
    position = response.json()["position"]
    balances = [
        (await service.client.get(f"/accounts/{a}", params={"min_position": position})).json()
        for a in ("acc-1", "acc-2")
    ]
    assert [b["balance"] for b in balances] == [60, 40]


async def test_a_retried_post_with_the_same_idempotency_key_writes_once(service: Service) -> None:
    await open_account(service, "acc-1")
    headers = {"Idempotency-Key": "req-42"}
    first = await service.client.post(
        "/accounts/acc-1/deposits", json={"amount": 10}, headers=headers
    )
    again = await service.client.post(
        "/accounts/acc-1/deposits", json={"amount": 10}, headers=headers
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert first.json() == again.json()
    assert len(await events_of(service, "acc-1")) == 2  # opened + ONE deposit


async def test_concurrent_retries_with_one_key_write_once(service: Service) -> None:
    await open_account(service, "acc-1")
    headers = {"Idempotency-Key": "req-7"}
    responses = await asyncio.gather(
        *(
            service.client.post("/accounts/acc-1/deposits", json={"amount": 5}, headers=headers)
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert {r.json()["position"] for r in responses} == {responses[0].json()["position"]}
    assert len(await events_of(service, "acc-1")) == 2


async def test_a_key_reused_for_another_request_is_refused(service: Service) -> None:
    await open_account(service, "acc-1")
    headers = {"Idempotency-Key": "req-1"}
    await service.client.post("/accounts/acc-1/deposits", json={"amount": 10}, headers=headers)
    other = await service.client.post(
        "/accounts/acc-1/deposits", json={"amount": 11}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["error"] == "IdempotencyKeyReused"
    assert len(await events_of(service, "acc-1")) == 2


async def test_rule_violations_and_bad_input_write_nothing(service: Service) -> None:
    opened = await open_account(service, "acc-1")
    overdraft = await service.client.post("/accounts/acc-1/withdrawals", json={"amount": 1})
    assert overdraft.status_code == 409
    assert overdraft.json() == {
        "error": "BusinessRuleViolation",
        "detail": "insufficient funds in acc-1",
    }
    zero = await service.client.post("/accounts/acc-1/deposits", json={"amount": 0})
    assert zero.status_code == 422 and zero.json()["error"] == "ValidationError"
    bad_key = await service.client.post(
        "/accounts/acc-1/deposits", json={"amount": 1}, headers={"Idempotency-Key": "k" * 256}
    )
    assert bad_key.status_code == 422 and "idempotency_key" in bad_key.json()["detail"]
    bad_stream = await service.client.post("/accounts", json={"account": " ", "owner": "x"})
    assert bad_stream.status_code == 422 and bad_stream.json()["error"] == "InvalidStreamId"
    twice = await service.client.post("/accounts", json={"account": "acc-1", "owner": "x"})
    assert twice.status_code == 409
    assert len(await events_of(service, "acc-1")) == 1
    assert await service.app.state.store.head() == opened["position"]


async def test_an_unknown_account_is_404(service: Service) -> None:
    response = await service.client.get("/accounts/nobody")
    assert response.status_code == 404


async def test_read_your_writes_is_bounded(service: Service) -> None:
    response = await service.client.get("/accounts/acc-1", params={"min_position": 10**9})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "did not reach position" in response.json()["detail"]


async def test_health_and_readiness(service: Service) -> None:
    assert (await service.client.get("/healthz")).json() == {"status": "ok"}
    await open_account(service, "acc-1")
    await service.app.state.runner.wait_for(await service.app.state.store.head())
    ready = await service.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    assert ready.json()["projection"]["lag_events"] == 0


async def test_not_ready_when_the_projection_lags(service_dsn: tuple[str, str | None]) -> None:
    dsn, schema = service_dsn
    settings = Settings(dsn=dsn, schema=schema or "eventcore", migrate=True, max_lag_seconds=0.05)
    gate = asyncio.Event()

    def stall(app: Any) -> None:
        model = app.state.accounts
        applied = model.apply

        async def slow_apply(event: Any) -> None:
            await gate.wait()  # the projection is stuck on this event
            applied(event)

        model.apply = slow_apply

    async for service in start(settings, before=stall):
        await open_account(service, "acc-1")
        await asyncio.sleep(0.2)
        lagging = await service.client.get("/readyz")
        assert lagging.status_code == 503
        assert any("lags" in p for p in lagging.json()["problems"]), lagging.json()
        gate.set()
        await service.app.state.runner.wait_for(await service.app.state.store.head())
        assert (await service.client.get("/readyz")).status_code == 200


async def test_not_ready_when_the_store_is_unreachable(service: Service) -> None:
    class Unreachable:
        async def head(self) -> int:
            raise StoreUnavailable("connection refused")

    service.app.state.store = Unreachable()
    response = await service.client.get("/readyz")
    assert response.status_code == 503
    [problem] = response.json()["problems"]
    assert problem == "store unreachable: StoreUnavailable: connection refused"
    assert (await service.client.get("/healthz")).status_code == 200  # alive, not ready


async def test_not_ready_when_the_projection_stopped(service: Service) -> None:
    await service.app.state.runner.stop()
    response = await service.client.get("/readyz")
    assert response.status_code == 503
    assert "projection accounts is stopped" in response.json()["problems"]


async def test_metrics_count_the_commands(service: Service) -> None:
    opened = await open_account(service, "acc-1")
    await service.app.state.runner.wait_for(opened["position"])
    await service.client.post("/accounts/acc-1/withdrawals", json={"amount": 5})
    text = (await service.client.get("/metrics")).text
    assert 'eventcore_commands_total{command_type="OpenAccount",outcome="success"} 1.0' in text
    assert 'eventcore_commands_total{command_type="Withdraw",outcome="rejected"} 1.0' in text
    assert 'eventcore_events_written_total{event_type="demo.bank.AccountOpened"} 1.0' in text
    # The projection runner reports through the same hook.
    applied = re.search(r'eventcore_projection_position\{projection="accounts"\} (\S+)', text)
    assert applied is not None and float(applied.group(1)) >= opened["position"], text


async def test_the_command_span_is_a_child_of_the_http_span(service: Service) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    response = await service.client.post(
        "/accounts", json={"account": "acc-1", "owner": "ann"}, headers={"traceparent": traceparent}
    )
    assert response.status_code == 201
    spans = {s.name: s for s in service.spans.get_finished_spans()}
    http = spans["POST /accounts"]
    command = spans["execute OpenAccount"]
    assert http.kind == SpanKind.SERVER
    assert format(http.context.trace_id, "032x") == trace_id  # the caller's trace continues
    assert http.parent is not None and format(http.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert command.context.trace_id == http.context.trace_id
    assert command.parent is not None and command.parent.span_id == http.context.span_id
    # The events carry the trace: their correlation id is the trace id.
    [recorded] = await events_of(service, "acc-1")
    assert recorded.metadata.correlation_id.hex == trace_id
