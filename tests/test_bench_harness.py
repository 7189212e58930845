"""The benchmark harness's shared part (``eventcore._bench``): the repeat loop, the timer,
figures, and the bank workloads doing the work they are named after, on an in-memory store
and on an async store."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from eventcore import MemoryStore, execute_sync
from eventcore._bench import (
    DC,
    MS,
    BankWorkloads,
    Figure,
    Target,
    Timer,
    measure,
    rate,
    run_now,
    timed,
)
from eventcore.examples import bank


def test_measure_throws_warmups_away_and_rotates_which_side_goes_first() -> None:
    calls: list[str] = []
    seen: list[tuple[str, float | None]] = []

    def side(name: str) -> tuple[Figure, Any]:
        def once() -> float:
            calls.append(name)
            return float(len(calls))

        return Figure(name, "x"), once

    sides = [side("a"), side("b"), side("c")]
    measure(sides, reps=3, warmup=1, on_sample=lambda f, s: seen.append((f.name, s)))
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    a, b, c = (f for f, _ in sides)
    assert a.samples == [4.0, 9.0, 11.0] and b.samples == [5.0, 7.0, 12.0]
    assert c.samples == [6.0, 8.0, 10.0]
    assert seen[:3] == [("a", None), ("b", None), ("c", None)]  # the warm-ups
    assert seen[3:] == [(n, float(i)) for i, n in enumerate(calls[3:], start=4)]


def test_measure_stops_early_after_three_rounds_once_its_time_is_up() -> None:
    fig = Figure("slow", "x")
    measure([(fig, lambda: 1.0)], reps=50, warmup=0, seconds=0.0)
    assert len(fig.samples) == 3
    fig = Figure("all", "x")
    measure([(fig, lambda: 1.0)], reps=50, warmup=0)
    assert len(fig.samples) == 50


def test_the_timer_turns_the_cyclic_gc_off_inside_only() -> None:
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), Timer() as t:
        assert not gc.isenabled()
        1 / 0  # noqa: B018
    assert gc.isenabled() and t.seconds > 0
    assert timed(lambda: 0.0) == 0.0
    assert 1_000 < timed(lambda: 10.0) < float("inf")


def test_a_figure_is_the_median_and_its_ratios_use_figures_of_the_same_run() -> None:
    ours = Figure("ours", "ops/s", [1.0, 9.0, 3.0], baseline="raw", peer="peer")
    figs = {f.name: f for f in (ours, Figure("raw", "ops/s", [2.0]), Figure("peer", "ops/s"))}
    assert ours.value == 3.0 and ours.ratio(figs) == 1.5
    assert ours.peer_ratio(figs) is None  # the peer has no samples
    assert Target("ratio", ">=", 1.5).check(ours, figs) is True
    assert Target("value", "<=", 2.0).check(ours, figs) is False
    assert Target("peer", ">=", 1.0).check(ours, figs) is None
    doc = ours.as_json(figs)
    assert (doc["min"], doc["max"], doc["reps"], doc["baseline"]) == (1.0, 9.0, 3, 2.0)


def test_run_now_runs_a_coroutine_that_never_suspends_and_refuses_one_that_does() -> None:
    async def plain() -> int:
        return 7

    class Suspend:
        def __await__(self) -> Any:
            yield  # what an event loop would have to resume

    async def suspends() -> int:
        await Suspend()
        return 8

    assert run_now(plain()) == 7
    with pytest.raises(RuntimeError, match="suspended"):
        run_now(suspends())


def test_the_dataclass_domain_is_the_shipped_example() -> None:
    assert DC.registry is bank.registry
    assert (DC.OpenAccount, DC.Deposit, DC.Transfer) == (
        bank.OpenAccount,
        bank.Deposit,
        bank.Transfer,
    )


@pytest.mark.parametrize("domain", [DC, MS], ids=["dataclass", "msgspec"])
def test_the_bank_workloads_do_what_they_count_in_memory(domain: Any) -> None:
    store = MemoryStore(registry=domain.registry)
    work = BankWorkloads(domain, lambda: store, prefix="t")
    assert run_now(work.prepare_cold(5))() == 5
    assert [store.stream_version(f"t-1-{i}") for i in range(5)] == [1] * 5
    assert run_now(work.prepare_warm(3, events=10))() == 3
    assert store.stream_version("t-2-2") == 12  # 10 events, the warm-up and the timed one
    assert run_now(work.prepare_transfer(2))() == 2
    assert [store.stream_version(f"t-3-{i}") for i in range(4)] == [3] * 4
    assert run_now(work.prepare_append_batch(2, streams=10))() == 2000
    assert store.stream_version("t-4-1-3") == 100  # 2 batches, each over 10 streams
    assert run_now(work.prepare_read(2, events=50))() == 100
    assert run_now(work.prepare_fold(4, events=20))() == 80
    deposit = domain.Deposit(account="t-2-0", amount=1)
    execute_sync(store, deposit)  # the folded account is open: the events decode
    assert store.stream_version("t-2-0") == 13


def test_the_bank_workloads_await_an_async_store() -> None:
    store = MemoryStore(registry=DC.registry)
    work = BankWorkloads(DC, lambda: store.aio, prefix="a")

    async def run() -> list[float]:
        units = []
        for prepared in (
            work.prepare_cold(4),
            work.prepare_warm(2, events=5),
            work.prepare_transfer(3),
            work.prepare_append_batch(1),
            work.prepare_read(2, events=10),
        ):
            body = await prepared
            units.append(await body())  # type: ignore[misc]
        assert await rate(await work.prepare_cold(3)) > 0
        return units

    assert asyncio.run(run()) == [4, 2, 3, 1000, 20]
    assert store.stream_version("a-3-5") == 3  # each transfer's target: opened, deposited, +1
    assert sum(1 for e in store.read_all() if e.event_type == "demo.bank.Withdrawn") == 3
