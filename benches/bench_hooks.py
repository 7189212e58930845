"""What the executor hooks cost on the single-stream cold command (in-memory store).

Run from the repository root::

    python benches/bench_hooks.py            # ~1 minute
    python benches/bench_hooks.py --quick    # ~15 s
    python benches/bench_hooks.py --json

Workload: ``OpenAccount`` on a fresh stream with ``execute_sync`` (the ``memory.command.cold``
workload of ``benches/headline.py``, same domain). Configurations, measured in the SAME
run, interleaved round-robin per repetition so machine noise hits them all alike:

- ``pre-hook shell``: a verbatim copy of ``execute_sync`` as it was before hooks existed
  (commit eaeb0e3): the "build with no hooks at all";
- ``hooks off``: today's ``execute_sync`` with no hook registered (one tuple check);
- ``no-op hook``: a registered ``Hook()`` overriding nothing (only the Recorder runs:
  no hook reads a report, so nothing is traced);
- ``report-reading no-op``: a hook whose ``after_execute`` does nothing (the run is
  traced and a report handed over: the floor under every hook below);
- ``logging (DEBUG off)``: :class:`~eventcore.logs.LoggingHook` with the logger at WARNING;
- ``prometheus``: :class:`~eventcore.metrics.PrometheusHook` on its own registry;
- ``tracing``: :class:`~eventcore.tracing.TracingHook` on an SDK TracerProvider with a
  BatchSpanProcessor and an exporter that drops spans (the instrumentation cost, not
  the export);
- ``tracing, no phase spans``: the same with ``phase_spans=False`` (one span per command);
- ``prometheus + tracing``.

Each value is the median rate over repetitions (``eventcore._bench``'s timer and repeat
loop: GC collected before and disabled during each timed block, the configurations'
repetitions alternating); ratios are against ``pre-hook shell``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benches.domain import DC  # noqa: E402
from eventcore import (  # noqa: E402
    MemoryStore,
    execute_sync,
    observe,
)
from eventcore._bench import Figure, Timer, measure  # noqa: E402
from eventcore._pipeline import APPEND, DONE, FOLD, run_command  # noqa: E402
from eventcore.errors import ConcurrencyConflict, StoreUnavailable  # noqa: E402
from eventcore.retry import DEFAULT_RETRY  # noqa: E402

_RETRIED = (ConcurrencyConflict, StoreUnavailable)


def execute_sync_pre_hooks(store: Any, command: Any, *, metadata: Any = None, retry: Any = None):  # type: ignore[no-untyped-def]
    """``execute_sync`` as of commit eaeb0e3, before hooks (copied verbatim but for the
    FOLD effect, which now asks the store for rows: the machine folds them)."""
    send = run_command(command, store.registry, retry or DEFAULT_RETRY, metadata).send
    result: Any = None
    while True:
        effect = send(result)
        kind = effect[0]
        try:
            if kind is FOLD:
                result = store.read_fold(effect[1])
            elif kind is APPEND:
                result = store.append(effect[1], expected=effect[2], metadata=effect[3])
            elif kind is DONE:
                return effect[1]
            else:
                time.sleep(effect[1])
                result = None
        except _RETRIED as exc:
            result = exc


def _tracing_hook(*, phase_spans: bool = True) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from eventcore.tracing import TracingHook

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 16))
    return TracingHook(provider, phase_spans=phase_spans)


def _prometheus_hook() -> Any:
    from prometheus_client import CollectorRegistry

    from eventcore.metrics import PrometheusHook

    return PrometheusHook(CollectorRegistry())


def _logging_hook() -> Any:
    from eventcore.logs import LoggingHook

    logger = logging.getLogger("bench.eventcore")
    logger.setLevel(logging.WARNING)
    return LoggingHook(logger)


class _ReadsReports(observe.Hook):
    """A hook that is handed every report and does nothing with it."""

    def after_execute(self, report: Any) -> None:
        """Do nothing."""


def configurations() -> list[tuple[str, Callable[..., Any], list[Any]]]:
    """``(name, executor, hooks)`` per configuration."""
    tracing, prometheus = _tracing_hook(), _prometheus_hook()
    return [
        ("pre-hook shell", execute_sync_pre_hooks, []),
        ("hooks off", execute_sync, []),
        ("no-op hook", execute_sync, [observe.Hook()]),
        ("report-reading no-op", execute_sync, [_ReadsReports()]),
        ("logging (DEBUG off)", execute_sync, [_logging_hook()]),
        ("prometheus", execute_sync, [prometheus]),
        ("tracing", execute_sync, [tracing]),
        ("tracing, no phase spans", execute_sync, [_tracing_hook(phase_spans=False)]),
        ("prometheus + tracing", execute_sync, [prometheus, tracing]),
    ]


def once(run: Callable[..., Any], hooks: list[Any], n: int, tag: str) -> float:
    """One timed repetition: ``n`` cold commands; returns commands/s."""
    store = MemoryStore(registry=DC.registry)
    ids = [f"acc-{tag}-{i}" for i in range(n)]
    open_account = DC.OpenAccount
    for hook in hooks:
        observe.add_hook(hook)
    try:
        with Timer() as t:
            for s in ids:
                run(store, open_account(account=s, owner="owner"))
    finally:
        for hook in hooks:
            observe.remove_hook(hook)
    return n / t.seconds


def _repetition(
    run: Callable[..., Any], hooks: list[Any], n: int, name: str, tags: Iterator[int]
) -> float:
    return once(run, hooks, n, f"{next(tags)}-{name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer commands and repetitions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--commands", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.commands or (5_000 if args.quick else 20_000)
    reps = args.reps or (5 if args.quick else 11)
    tags = itertools.count()
    sides = [
        (Figure(name, "commands/s"), functools.partial(_repetition, run, hooks, n, name, tags))
        for name, run, hooks in configurations()
    ]
    measure(sides, reps, warmup=1)
    rates = {fig.name: fig.samples for fig, _ in sides}
    base = statistics.median(rates["pre-hook shell"])
    off = statistics.median(rates["hooks off"])
    results = {
        name: {
            "commands_per_s": statistics.median(r),
            "min": min(r),
            "max": max(r),
            "vs_pre_hook_shell": statistics.median(r) / base,
            "vs_hooks_off": statistics.median(r) / off,
            "us_per_command_added": (1 / statistics.median(r) - 1 / base) * 1e6,
        }
        for name, r in rates.items()
    }
    # paired ratios: each repetition's hooks-off rate over the pre-hook rate of the same rep
    paired = [o / b for o, b in zip(rates["hooks off"], rates["pre-hook shell"], strict=True)]
    summary = {
        "commands_per_rep": n,
        "reps": reps,
        "hooks_off_vs_pre_hook_paired_median": statistics.median(paired),
        "target": "hooks off within 3% of no hooks at all (ratio >= 0.97)",
        "met": statistics.median(paired) >= 0.97,
    }
    if args.json:
        print(json.dumps({"summary": summary, "configurations": results}, indent=2))
        return
    print(f"single-stream cold command (OpenAccount, execute_sync), {n} commands x {reps} reps")
    head = (
        f"{'configuration':<24} {'commands/s':>11} {'[min .. max]':>23} {'ratio':>7} {'+us/cmd':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        span = f"[{r['min']:,.0f} .. {r['max']:,.0f}]"
        print(
            f"{name:<24} {r['commands_per_s']:>11,.0f} {span:>23} "
            f"{r['vs_pre_hook_shell']:>6.3f}x {r['us_per_command_added']:>8.2f}"
        )
    print(
        f"hooks off / pre-hook shell, paired per repetition: "
        f"{summary['hooks_off_vs_pre_hook_paired_median']:.3f} "
        f"(target >= 0.97: {'met' if summary['met'] else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
