"""The extras stay optional: eventcore never imports them, and their absence is explained."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_importing_eventcore_imports_no_extra() -> None:
    result = run(
        """
        import sys
        import eventcore
        from eventcore import MemoryStore, execute_sync
        heavy = [m for m in ("opentelemetry", "prometheus_client", "click", "rich")
                 if m in sys.modules]
        print(heavy)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("eventcore.tracing", "opentelemetry", "eventcore-py[otel]"),
        ("eventcore.metrics", "prometheus_client", "eventcore-py[prometheus]"),
    ],
)
def test_a_missing_extra_gives_a_clear_error(module: str, blocked: str, extra: str) -> None:
    result = run(
        f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if it were not installed
        try:
            import {module}
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install '{extra}'" in result.stdout
