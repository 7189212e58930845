"""A short load test of the service: requests/s and latency percentiles over HTTP.

``python examples/service/loadtest.py [--dsn DSN] [--clients N] [--duration S]`` starts the
service under uvicorn (one worker) on a free local port, opens ``--accounts`` accounts,
then runs ``--clients`` concurrent clients for ``--duration`` seconds, each sending a mix
of deposits (with an ``Idempotency-Key``), transfers and read-your-writes queries, and
prints requests/s and p50/p90/p99 latency. ``--url`` targets a service already running
instead. The clients run in this process, on the same machine as the server: the figure
is for the pair, not the server alone, and on a busy machine it follows the other jobs.
So, when it started the server itself (on Linux), it also prints the server's CPU time
per request, which depends much less on what else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

EXAMPLES = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(dsn: str, schema: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EVENTCORE_DSN": dsn,
        "EVENTCORE_SCHEMA": schema,
        "SERVICE_MIGRATE": "1",
    }
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "--factory"]
    command += ["service.app:create_app", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log"]
    return subprocess.Popen(command, env=env)


async def wait_ready(client: httpx.AsyncClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the service did not become ready")
        await asyncio.sleep(0.2)


async def one_client(
    client: httpx.AsyncClient,
    accounts: list[str],
    until: float,
    latencies: list[float],
    statuses: Counter[int],
    seed: int,
) -> None:
    rng = random.Random(seed)
    position = 0
    while time.monotonic() < until:
        roll = rng.random()
        start = time.perf_counter()
        if roll < 0.5:
            account = rng.choice(accounts)
            response = await client.post(
                f"/accounts/{account}/deposits",
                json={"amount": rng.randint(1, 100)},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
        elif roll < 0.75:
            source, target = rng.sample(accounts, 2)
            response = await client.post(
                "/transfers",
                json={"source": source, "target": target, "amount": rng.randint(1, 50)},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
        else:
            account = rng.choice(accounts)
            response = await client.get(f"/accounts/{account}", params={"min_position": position})
        latencies.append(time.perf_counter() - start)
        statuses[response.status_code] += 1
        if response.status_code == 201:
            position = response.json()["position"]  # this client reads its own writes


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(
    url: str, clients: int, duration: float, n_accounts: int, server_pid: int | None
) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        await wait_ready(client)
        run = uuid.uuid4().hex[:8]  # fresh accounts on a store that has some already
        accounts = [f"load-{run}-{i}" for i in range(n_accounts)]
        for account in accounts:
            opened = await client.post("/accounts", json={"account": account, "owner": "load"})
            funded = await client.post(f"/accounts/{account}/deposits", json={"amount": 10_000})
            if (opened.status_code, funded.status_code) != (201, 201):
                raise SystemExit(f"setting up {account} failed: {opened.text} {funded.text}")
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        cpu_before = cpu_seconds(server_pid) if server_pid else None
        started = time.monotonic()
        until = started + duration
        await asyncio.gather(
            *(
                one_client(client, accounts, until, latencies, statuses, seed)
                for seed in range(clients)
            )
        )
        elapsed = time.monotonic() - started
        cpu_after = cpu_seconds(server_pid) if server_pid else None
    ms = [x * 1000 for x in latencies]
    print(
        f"{len(ms)} requests in {elapsed:.1f} s from {clients} clients: {len(ms) / elapsed:,.0f}/s"
    )
    print(
        f"latency ms: p50 {percentile(ms, 0.5):.1f}  p90 {percentile(ms, 0.9):.1f}  "
        f"p99 {percentile(ms, 0.99):.1f}  max {max(ms):.1f}"
    )
    print("statuses:", dict(sorted(statuses.items())))
    if cpu_before is not None and cpu_after is not None:
        per_request = (cpu_after - cpu_before) / len(ms) * 1000
        print(f"server CPU per request: {per_request:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="memory://", help="the store the service opens")
    parser.add_argument("--schema", default="eventcore", help="its PostgreSQL schema")
    parser.add_argument("--url", help="load a service already running at this URL instead")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--accounts", type=int, default=100)
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        port = free_port()
        server = start_server(args.dsn, args.schema, port)
        url = f"http://127.0.0.1:{port}"
    try:
        pid = server.pid if server is not None else None
        asyncio.run(load(url, args.clients, args.duration, args.accounts, pid))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
