"""Every docs page's Python examples run, in order, as one program; the site builds strictly.

The conventions (docs/contributing-docs.md): each ```python block of a page runs, in the
order of the page, as one program in a fresh interpreter (like the README's). A block
whose fence carries a title (```python title="Not run: needs a hot standby") is shown
but not run; use it only for code that needs what the test suite does not have. Any other
word after ``python`` on a fence would not render on the site, so it fails here.

A page whose code reads ``os.environ["EVENTCORE_DSN"]`` runs against the suite's
PostgreSQL server, with ``EVENTCORE_SCHEMA`` naming a fresh schema (dropped afterwards);
``EVENTCORE_REPLICA_DSN`` and ``EVENTCORE_PGBOUNCER_DSN``, when read, name the suite's
streaming replica of it and its PgBouncer (tests/pgserver.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pgserver import drop_schema, new_schema_name

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```\s*$", re.S | re.M)
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def blocks(page: str) -> tuple[list[str], list[str], list[str]]:
    """The page's ```python blocks: ``(run, shown only, fences that would not render)``."""
    run: list[str] = []
    shown: list[str] = []
    bad: list[str] = []
    for match in FENCE.finditer((DOCS / page).read_text()):
        info = match["info"].strip()
        if not info:
            run.append(match["code"])
        elif re.fullmatch(r'title="[^"]+"', info):
            shown.append(match["code"])
        else:
            bad.append(f"{page}: ```python {info}")
    return run, shown, bad


def test_every_fence_renders() -> None:
    bad = [fence for page in PAGES for fence in blocks(page)[2]]
    assert not bad, f'only title="..." may follow ```python (shown, not run): {bad}'


NEEDS_POSTGRES = 'os.environ["EVENTCORE_DSN"]'


def needs_postgres(page: str) -> bool:
    return any(NEEDS_POSTGRES in code for code in blocks(page)[0])


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=[pytest.mark.postgres] if needs_postgres(p) else [])
        for p in PAGES
        if blocks(p)[0]
    ],
)
def test_page_examples_run(page: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = blocks(page)[0]
    program = tmp_path / "page.py"
    program.write_text("\n".join(run))
    env = dict(os.environ)
    schema = None
    if needs_postgres(page):
        schema = new_schema_name()
        env.update(EVENTCORE_DSN=request.getfixturevalue("postgres_dsn"), EVENTCORE_SCHEMA=schema)
        code = "\n".join(run)
        if 'os.environ["EVENTCORE_REPLICA_DSN"]' in code:
            env["EVENTCORE_REPLICA_DSN"] = request.getfixturevalue("postgres_replica").dsn
        if 'os.environ["EVENTCORE_PGBOUNCER_DSN"]' in code:
            env["EVENTCORE_PGBOUNCER_DSN"] = request.getfixturevalue("pgbouncer").dsn
    try:
        # A fresh interpreter per page: each page registers event names of its own.
        proc = subprocess.run(
            [sys.executable, str(program)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=env,
        )
    finally:
        if schema is not None:
            asyncio.run(drop_schema(env["EVENTCORE_DSN"], schema))
    assert proc.returncode == 0, f"{page}:\n{proc.stdout}\n{proc.stderr}"


def test_most_examples_run() -> None:
    # Shown-only blocks are for code that needs a server, never the bulk of the docs.
    ran = sum(len(blocks(p)[0]) for p in PAGES)
    shown = sum(len(blocks(p)[1]) for p in PAGES)
    assert ran >= 30 and shown <= ran // 4, (ran, shown)


def nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node] if node.endswith(".md") else []
    if isinstance(node, dict):
        return [p for value in node.values() for p in nav_pages(value)]
    if isinstance(node, list):
        return [p for item in node for p in nav_pages(item)]
    return []


def test_every_page_is_in_the_nav() -> None:
    import yaml

    # mkdocs.yml's own tags (none today) would need mkdocs' loader; plain YAML suffices.
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert sorted(nav) == PAGES, "add the missing pages to mkdocs.yml's nav"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    home = (tmp_path / "index.html").read_text()
    assert "eventcore" in home
    api = (tmp_path / "reference" / "eventcore" / "index.html").read_text()
    for name in ("eventcore.Command", "eventcore.execute", "eventcore.MemoryStore"):
        assert f'id="{name}"' in api, name
