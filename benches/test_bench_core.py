"""pytest-benchmark versions of the workloads of ``benches/core.py`` (smaller sizes).

Run ``python -m pytest benches -q`` (add ``--benchmark-disable`` for a smoke run). Each
round runs a batch of ``units_per_round`` commands or events built untimed by ``setup``.
Nothing here asserts a speed: the targets are judged by ``python benches/core.py``.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from benches.core import DEPOSIT, OPENED_OWNER, es_accounts, filled_store
from benches.domain import DC, Account, Domain
from eventcore import MemoryStore, NewEvent, execute_sync

ROUNDS = 5
COLD = 2_000
WARM = 200
TRANSFERS = 1_000
BASE_COMMANDS = 100
BATCHES = 10


def _pedantic(benchmark: Any, target: Any, setup: Any, units: int, group: str) -> None:
    benchmark.group = group
    benchmark.extra_info["units_per_round"] = units
    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, warmup_rounds=1)


# -- memory.command.cold ---------------------------------------------------------------------


def test_command_cold(benchmark: Any, domain: Domain, unique: itertools.count[int]) -> None:
    open_account = domain.OpenAccount

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        k = next(unique)
        store = MemoryStore(registry=domain.registry)
        return (store, [f"cold-{k}-{i}" for i in range(COLD)]), {}

    def run(store: MemoryStore, ids: list[str]) -> None:
        for s in ids:
            execute_sync(store, open_account(account=s, owner=OPENED_OWNER))
        assert len(store) == len(ids)

    _pedantic(benchmark, run, setup, COLD, "command.cold")


def test_command_cold_baseline(benchmark: Any, es: Any) -> None:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        app = es.EsBank()
        return (app, es_accounts(app, es, BASE_COMMANDS, 1)), {}

    def run(app: Any, ids: list[Any]) -> None:
        for i in ids:
            acc = app.repository.get(i)
            acc.deposit(DEPOSIT)
            app.save(acc)

    _pedantic(benchmark, run, setup, BASE_COMMANDS, "command.cold")


# -- memory.command.warm100 ------------------------------------------------------------------


def test_command_warm100(benchmark: Any, domain: Domain, unique: itertools.count[int]) -> None:
    deposit = domain.Deposit

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        k = next(unique)
        ids = [f"warm-{k}-{i}" for i in range(WARM)]
        store = filled_store(domain, ids, 100)
        for s in ids:  # the state cache holds every stream's state (untimed)
            execute_sync(store, deposit(account=s, amount=DEPOSIT))
        return (store, ids), {}

    def run(store: MemoryStore, ids: list[str]) -> None:
        for s in ids:
            execute_sync(store, deposit(account=s, amount=DEPOSIT))
        assert store.stream_version(ids[-1]) == 102

    _pedantic(benchmark, run, setup, WARM, "command.warm100")


def test_command_warm100_baseline(benchmark: Any, es: Any) -> None:
    n = BASE_COMMANDS // 4

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        app = es.EsBank()
        return (app, es_accounts(app, es, n, 100)), {}

    def run(app: Any, ids: list[Any]) -> None:
        for i in ids:
            acc = app.repository.get(i)
            acc.deposit(DEPOSIT)
            app.save(acc)

    _pedantic(benchmark, run, setup, n, "command.warm100")


# -- memory.transfer -------------------------------------------------------------------------


def test_transfer(benchmark: Any, unique: itertools.count[int]) -> None:
    transfer = DC.Transfer

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        k = next(unique)
        ids = [f"tr-{k}-{i}" for i in range(2 * TRANSFERS)]
        return (filled_store(DC, ids, 2), list(zip(ids[0::2], ids[1::2], strict=True))), {}

    def run(store: MemoryStore, pairs: list[tuple[str, str]]) -> None:
        for a, b in pairs:
            execute_sync(store, transfer(source=a, target=b, amount=DEPOSIT // 2))

    _pedantic(benchmark, run, setup, TRANSFERS, "transfer")


def test_transfer_baseline(benchmark: Any, es: Any) -> None:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        app = es.EsBank()
        ids = es_accounts(app, es, 2 * BASE_COMMANDS, 2)
        return (app, list(zip(ids[0::2], ids[1::2], strict=True))), {}

    def run(app: Any, pairs: list[tuple[Any, Any]]) -> None:
        get = app.repository.get
        for a, b in pairs:
            src, dst = get(a), get(b)
            src.withdraw(DEPOSIT // 2)
            dst.deposit(DEPOSIT // 2)
            app.save(src, dst)

    _pedantic(benchmark, run, setup, BASE_COMMANDS, "transfer")


# -- memory.append.batch1000 -----------------------------------------------------------------


@pytest.mark.parametrize("streams", [1, 1000], ids=["1stream", "1000streams"])
def test_append_batch1000(benchmark: Any, streams: int, unique: itertools.count[int]) -> None:
    enc = DC.registry.encode

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        k = next(unique)
        batches = [
            [NewEvent(f"ap-{k}-{j}-{i % streams}", *enc(DC.Deposited(i + 1))) for i in range(1000)]
            for j in range(BATCHES)
        ]
        return (MemoryStore(registry=DC.registry), batches), {}

    def run(store: MemoryStore, batches: list[list[NewEvent]]) -> None:
        for batch in batches:
            store.append(batch)

    _pedantic(benchmark, run, setup, 1000 * BATCHES, f"append.batch1000.{streams}")


def test_append_batch1000_baseline(benchmark: Any, es: Any) -> None:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        acc = es.EsAccount(OPENED_OWNER)
        for i in range(999):
            acc.deposit(i + 1)
        return (es.EsBank(), acc), {}

    def run(app: Any, acc: Any) -> None:
        app.save(acc)

    _pedantic(benchmark, run, setup, 1000, "append.batch1000.1")


# -- memory.read.1000 / memory.fold.100 ------------------------------------------------------


def test_read_1000(benchmark: Any, domain: Domain) -> None:
    store = filled_store(domain, ["r-0"], 1000)

    def run() -> None:
        for e in store.read_stream("r-0"):
            e.data  # noqa: B018

    benchmark.group = "read.1000"
    benchmark.extra_info["units_per_round"] = 1000
    benchmark(run)


def test_read_1000_baseline(benchmark: Any, es: Any) -> None:
    app = es.EsBank()
    (agg_id,) = es_accounts(app, es, 1, 1000)

    def run() -> None:
        for _ in app.events.get(agg_id):
            pass

    benchmark.group = "read.1000"
    benchmark.extra_info["units_per_round"] = 1000
    benchmark(run)


def test_fold_100(benchmark: Any, domain: Domain) -> None:
    store = filled_store(domain, ["f-0"], 100)
    apply = domain.Deposit(account="x", amount=1).apply
    decoders = domain.registry.decoders

    def run() -> None:
        state, _ = store.fold_streams(["f-0"], Account(), apply, decoders)
        assert state.balance == 99 * DEPOSIT

    benchmark.group = "fold.100"
    benchmark.extra_info["units_per_round"] = 100
    benchmark(run)


def test_fold_100_baseline(benchmark: Any, es: Any) -> None:
    app = es.EsBank()
    (agg_id,) = es_accounts(app, es, 1, 100)

    benchmark.group = "fold.100"
    benchmark.extra_info["units_per_round"] = 100
    benchmark(app.repository.get, agg_id)
