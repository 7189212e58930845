"""The service's load test script runs against a real uvicorn server and reports its figures."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "service" / "loadtest.py"


def test_the_load_test_reports_throughput_and_latency() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "1", "--clients", "2", "--accounts", "3"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\d+ requests in [\d.]+ s from 2 clients: [\d,]+/s", proc.stdout)
    assert re.search(r"p99 [\d.]+", proc.stdout)
    statuses = re.search(r"statuses: (\{.*\})", proc.stdout)
    assert statuses is not None
    # Every request succeeded: new writes (201) and reads (200), no error status.
    assert set(ast.literal_eval(statuses.group(1))) <= {200, 201}, proc.stdout
    if sys.platform == "linux":  # the server's CPU time comes from /proc
        assert re.search(r"server CPU per request: [\d.]+ ms", proc.stdout), proc.stdout
