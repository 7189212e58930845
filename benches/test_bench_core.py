"""pytest-benchmark versions of the in-memory headline workloads (smaller sizes).

Run ``python -m pytest benches -q`` (add ``--benchmark-disable`` for a smoke run). eventcore's
side is :class:`eventcore._bench.BankWorkloads` and the peer's is ``benches/core.py``'s, the
very workloads ``benches/headline.py`` and ``eventcore bench`` time: each round's data is
prepared untimed by ``setup`` and a round runs the workload's body (``units_per_round``
commands or events). Nothing here asserts a speed: the targets are judged by
``benches/headline.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from benches import core
from eventcore._bench import DC, BankWorkloads, Domain, run_now

ROUNDS = 5
COLD = 2_000
WARM = 200
TRANSFERS = 1_000
BASE_COMMANDS = 100
BATCHES = 10


def _rounds(
    benchmark: Any, prepare: Callable[[], Callable[[], Any]], units: int, group: str
) -> None:
    """Each round: ``prepare()`` untimed, then its body timed."""
    benchmark.group = group
    benchmark.extra_info["units_per_round"] = units
    benchmark.pedantic(
        lambda body: body(), setup=lambda: ((prepare(),), {}), rounds=ROUNDS, warmup_rounds=1
    )


def _ours(prepare: Callable[..., Any], *args: int) -> Callable[[], Callable[[], Any]]:
    return lambda: run_now(prepare(*args))


def test_command_cold(benchmark: Any, domain: Domain) -> None:
    bank = BankWorkloads(domain)
    _rounds(benchmark, _ours(bank.prepare_cold, COLD), COLD, "command.cold")


def test_command_cold_baseline(benchmark: Any, es: Any) -> None:
    prepare = lambda: core.es_prepare_deposits(BASE_COMMANDS, 1)  # noqa: E731
    _rounds(benchmark, prepare, BASE_COMMANDS, "command.cold")


def test_command_warm100(benchmark: Any, domain: Domain) -> None:
    bank = BankWorkloads(domain)
    _rounds(benchmark, _ours(bank.prepare_warm, WARM), WARM, "command.warm100")


def test_command_warm100_baseline(benchmark: Any, es: Any) -> None:
    n = BASE_COMMANDS // 4
    _rounds(benchmark, lambda: core.es_prepare_deposits(n, 100), n, "command.warm100")


def test_transfer(benchmark: Any) -> None:
    bank = BankWorkloads(DC)
    _rounds(benchmark, _ours(bank.prepare_transfer, TRANSFERS), TRANSFERS, "transfer")


def test_transfer_baseline(benchmark: Any, es: Any) -> None:
    prepare = lambda: core.es_prepare_transfer(BASE_COMMANDS)  # noqa: E731
    _rounds(benchmark, prepare, BASE_COMMANDS, "transfer")


@pytest.mark.parametrize("streams", [1, 1000], ids=["1stream", "1000streams"])
def test_append_batch1000(benchmark: Any, streams: int) -> None:
    bank = BankWorkloads(DC)
    prepare = _ours(bank.prepare_append_batch, BATCHES, streams)
    _rounds(benchmark, prepare, 1000 * BATCHES, f"append.batch1000.{streams}")


def test_append_batch1000_baseline(benchmark: Any, es: Any) -> None:
    # The peer's body times its own saves; pytest-benchmark times the whole round.
    _rounds(benchmark, lambda: core.es_prepare_batch(1, 1), 1000, "append.batch1000.1")


def test_read_1000(benchmark: Any, domain: Domain) -> None:
    body = run_now(BankWorkloads(domain).prepare_read(1))
    benchmark.group = "read.1000"
    benchmark.extra_info["units_per_round"] = 1000
    assert benchmark(body) == 1000


def test_read_1000_baseline(benchmark: Any, es: Any) -> None:
    benchmark.group = "read.1000"
    benchmark.extra_info["units_per_round"] = 1000
    assert benchmark(core.es_prepare_read(1)) == 1000


def test_fold_100(benchmark: Any, domain: Domain) -> None:
    body = run_now(BankWorkloads(domain).prepare_fold(1))
    benchmark.group = "fold.100"
    benchmark.extra_info["units_per_round"] = 100
    assert benchmark(body) == 100


def test_fold_100_baseline(benchmark: Any, es: Any) -> None:
    benchmark.group = "fold.100"
    benchmark.extra_info["units_per_round"] = 100
    assert benchmark(core.es_prepare_fold(1)) == 100
