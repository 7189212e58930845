"""docs/guides/personal-data.md: its ``python`` blocks run as one program, in order; its
``py`` blocks (PostgreSQL) run after them against the test server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "personal-data.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)


def run(program: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "guide.py"
    path.write_text(program, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_guides_examples_run(tmp_path: Path) -> None:
    python = blocks("python")
    assert len(python) >= 4
    proc = run("\n".join(python), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "was forgotten" in proc.stdout  # the SubjectForgotten example printed it


@pytest.mark.postgres
def test_the_guides_postgres_examples_run(
    tmp_path: Path, postgres_dsn: str, postgres_store: object
) -> None:
    schema = postgres_store.schema  # type: ignore[attr-defined]
    pg = [b.replace('schema="eventcore"', f"schema={schema!r}") for b in blocks("py")]
    assert len(pg) == 2
    check = """
async def main() -> None:
    async with pg_store:
        grace = CustomerRegistered("cust-2", "Grace Hopper", "grace@x.y", 1906, "US")
        await pg_store.append([NewEvent("customer-cust-2", *pg_registry.encode(grace))])
        assert (await pg_store.read_stream("customer-cust-2"))[0].data == grace
        await erase("cust-2")  # the guide's forget, off the event loop
        (after,) = await pg_store.read_stream("customer-cust-2")
        assert after.data == CustomerRegistered("cust-2", "", "erased@invalid", 0, "US")


asyncio.run(main())
pg_keys.close()
print("postgres ok")
"""
    program = "\n".join([*blocks("python"), f"dsn = {postgres_dsn!r}", *pg, check])
    proc = run(program, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "postgres ok" in proc.stdout
