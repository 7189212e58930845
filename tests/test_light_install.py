"""A light install: `import eventcore` loads no optional part; the CLI is an extra."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

# Top-level packages an application's `import eventcore` must not load: the command line
# (and its click/rich), PostgreSQL, numpy, OpenTelemetry.
HEAVY = (
    "eventcore.cli",
    "eventcore.postgres",
    "asyncpg",
    "click",
    "rich",
    "numpy",
    "opentelemetry",
)


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    "code",
    [
        "import eventcore",
        "from eventcore import *",  # every public name, loaded
        "import eventcore.projection",
        "import eventcore.testing",
    ],
)
def test_importing_eventcore_loads_no_optional_part(code: str) -> None:
    assert _heavy(_loaded_after(code)) == []


def test_the_probe_sees_a_heavy_import() -> None:
    # The check above can fail: the same probe flags the PostgreSQL store when it is loaded.
    assert "eventcore.postgres" in _heavy(_loaded_after("import eventcore.postgres.store"))


def test_import_eventcore_alone_defers_the_executor_and_asyncio() -> None:
    loaded = _loaded_after("import eventcore")
    assert not {"asyncio", "eventcore.executor", "eventcore.projection", "msgspec"} & loaded


def test_a_sync_application_does_not_load_asyncio() -> None:
    loaded = _loaded_after(
        "from eventcore import Command, MemoryStore, event, execute_sync, stream\n"
        "from eventcore.testing import Scenario"
    )
    assert "asyncio" not in loaded
    assert "eventcore.executor" in loaded  # the probe did load the application's names


APP_IMPORT = "from eventcore import Command, MemoryStore, event, execute_sync, stream"

# What an in-memory application never needs: asyncio, SQLite, the projection runner, the
# test kit, the CLI, and what only snapshots, idempotency keys or a failing hook use.
NEVER_IN_A_SYNC_APP = (
    "asyncio",
    "sqlite3",
    "eventcore.sqlite",
    "eventcore.projection",
    "eventcore.testing",
    "eventcore.cli",
    "hashlib",
    "logging",
)
# What the application's import leaves for first use: msgspec (and the uuid and datetime
# it imports) when the first event class is registered, decimal for a Decimal value type.
FIRST_USE = ("msgspec", "uuid", "datetime", "decimal")

# The README's first steps: events, a command, one run on the in-memory store.
SYNC_APP = f"""
from dataclasses import dataclass
{APP_IMPORT}

@event("light.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int

class Deposit(Command[int, Deposited]):
    account: str = stream()
    amount: int

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Deposited, stream_id: str) -> int:
        return state + event.amount

    def handle(self, state: int) -> list[tuple[str, Deposited]]:
        return [(self.account, Deposited(self.amount))]

result = execute_sync(MemoryStore(), Deposit(account="acc-1", amount=5))
assert result.events[0].version == 1
"""


def _new_after(code: str) -> set[str]:
    # Modules loaded by ``code`` beyond what the bare interpreter (site) loads already.
    return _loaded_after(code) - _loaded_after("pass")


def test_the_application_import_leaves_for_first_use_what_it_does_not_need_yet() -> None:
    loaded = _new_after(APP_IMPORT)
    assert "eventcore.executor" in loaded  # the probe did load the application's names
    assert sorted(loaded & {*NEVER_IN_A_SYNC_APP, *FIRST_USE}) == []


def test_a_sync_application_never_loads_what_it_does_not_use() -> None:
    loaded = _new_after(SYNC_APP)
    assert "msgspec" in loaded  # registering the event class loaded the codec
    assert sorted(loaded & set(NEVER_IN_A_SYNC_APP)) == []


def test_the_import_probe_sees_a_module_loaded_on_first_use() -> None:
    # The checks above can fail: the same probe sees the modules that first uses load.
    loaded = _new_after(f"{APP_IMPORT}\nimport eventcore.registry as r\nr.default_registry")
    assert {"msgspec", "uuid", "datetime"} <= loaded


def _console_script(block: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    # Runs the installed `eventcore` entry point with the named packages made unimportable.
    code = (
        "import sys\n"
        f"for name in {block!r}: sys.modules[name] = None\n"
        f"sys.argv = ['eventcore', *{args!r}]\n"
        "from importlib.metadata import entry_points\n"
        "(script,) = entry_points(group='console_scripts', name='eventcore')\n"
        "script.load()()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("block", [("click",), ("rich",), ("click", "rich")])
def test_the_console_script_says_how_to_install_the_cli_extra(block: tuple[str, ...]) -> None:
    proc = _console_script(block, "--help")
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'eventcore-py[cli]'" in proc.stderr
    assert f"({block[0]} is not installed)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_console_script_runs_when_the_extra_is_installed() -> None:
    proc = _console_script((), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "eventcore: inspect, migrate and operate" in proc.stdout


def test_another_missing_module_is_not_blamed_on_the_extra() -> None:
    proc = _console_script(("eventcore.cli._demo",), "--help")
    assert proc.returncode == 1
    assert "ModuleNotFoundError" in proc.stderr
    assert "eventcore-py[cli]" not in proc.stderr


def test_the_cli_is_an_extra_and_the_test_extra_includes_it() -> None:
    requires = [r.replace("'", '"') for r in metadata.requires("eventcore-py") or []]
    base = [r for r in requires if "extra ==" not in r]
    assert not any(r.startswith(("click", "rich")) for r in base), base
    cli = [r for r in requires if 'extra == "cli"' in r]
    assert {r.split(">")[0] for r in cli} == {"click", "rich"}
    assert any(r.startswith("eventcore-py[cli]") and 'extra == "test"' in r for r in requires)
