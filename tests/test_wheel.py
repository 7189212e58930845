"""The distribution: one abi3 manylinux wheel, built from the sdist, that works when installed.

The wheel is built once per run (scripts/dist.py: sdist, then the wheel from the unpacked
sdist, with zig for manylinux on Linux) and installed into a fresh virtual environment of
each supported CPython with no Rust toolchain on PATH; the README examples and the store
contract suite (in-memory store) run from that install. A missing interpreter fails the
run under CI (``CI`` set) and is a reported skip elsewhere.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import eventcore

ROOT = Path(__file__).resolve().parents[1]

# Building and installing take minutes, not the suite's default per-test timeout.
pytestmark = pytest.mark.timeout(1200)


def _load_dist() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eventcore_dist", ROOT / "scripts" / "dist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dist = _load_dist()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The sdist and the wheel built from it (once for this module)."""
    return dist.build(tmp_path_factory.mktemp("dist"))


def test_the_version_is_set_once_in_cargo_toml() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    version = dist.cargo_version()
    assert importlib.metadata.version("eventcore-py") == version
    assert eventcore.__version__ == version


def test_the_changelog_describes_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = re.escape(dist.cargo_version())
    heading = rf"^## \[{version}\] - (\d{{4}}-\d\d-\d\d|Unreleased)$"
    assert re.search(heading, changelog, re.M), heading


def test_the_loaded_extension_is_the_abi3_build() -> None:
    # A stale version-specific build next to it would be imported first (CPython prefers
    # `.cpython-3XX-*.so` to `.abi3.so`): `make install-test` removes those.
    path = eventcore._core.__file__
    assert path is not None
    assert path.endswith(".abi3.so" if os.name != "nt" else ".pyd"), (
        f"{path} is not the abi3 build: `make install-test` removes a stale one"
    )


def test_one_abi3_wheel_for_every_supported_python(built: Any) -> None:
    wheel: Path = built.wheel
    name, version, py, abi, platform = wheel.stem.split("-")
    assert (name, version) == ("eventcore_py", dist.cargo_version())
    assert (py, abi) == ("cp311", "abi3")
    if sys.platform == "linux":
        assert f"{dist.MANYLINUX}_{os.uname().machine}" in platform.split(".")
        assert "is consistent with the following platform tag" in dist.check_manylinux(wheel)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    extensions = [n for n in names if n.startswith("eventcore/_core.") and n[-4:] != ".pyi"]
    assert extensions in (["eventcore/_core.abi3.so"], ["eventcore/_core.pyd"])


def test_the_wheel_ships_types_license_and_metadata(built: Any) -> None:
    wheel: Path = built.wheel
    version = dist.cargo_version()
    info = f"eventcore_py-{version}.dist-info"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"{info}/METADATA").decode()
    assert {"eventcore/py.typed", "eventcore/_core.pyi", f"{info}/licenses/LICENSE"} <= names
    assert not [n for n in names if n.startswith(("tests/", "benches/", "rust/"))]
    headers = [line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines()]
    fields: dict[str, list[str]] = {}
    for key, value in headers:
        fields.setdefault(key, []).append(value)
    assert fields["Name"] == ["eventcore-py"]
    assert fields["Version"] == [version]
    assert fields["License-Expression"] == ["MIT"]
    assert fields["License-File"] == ["LICENSE"]
    assert fields["Requires-Python"] == [">=3.11"]
    urls = {u.split(", ", 1)[0] for u in fields["Project-URL"]}
    assert {"Repository", "Documentation", "Issues", "Changelog"} <= urls
    classifiers = set(fields["Classifier"])
    for minor in dist.PYTHONS:
        assert f"Programming Language :: Python :: {minor}" in classifiers
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert "Typing :: Typed" in classifiers
    # The long description is the README.
    assert "pip install eventcore-py" in metadata


def test_the_sdist_has_what_a_source_build_needs(built: Any) -> None:
    # The wheel above was built from this sdist, unpacked: it builds.
    sdist: Path = built.sdist
    top = f"eventcore_py-{dist.cargo_version()}"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    needed = {
        "PKG-INFO",
        "pyproject.toml",
        "Cargo.toml",
        "Cargo.lock",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "rust/src/lib.rs",
        "python/eventcore/__init__.py",
        "python/eventcore/_core.pyi",
        "python/eventcore/py.typed",
    }
    assert {f"{top}/{n}" for n in needed} <= names
    assert not [n for n in names if n.endswith((".so", ".pyd"))]


@pytest.mark.parametrize("version", dist.PYTHONS)
def test_the_installed_wheel_passes_the_smoke_suite(
    request: pytest.FixtureRequest, version: str, tmp_path: Path
) -> None:
    python = dist.find_python(version)
    if python is None:
        how = f"CPython {version} not found: `python scripts/dist.py pythons --install`"
        if os.environ.get("CI"):
            pytest.fail(how)
        pytest.skip(how)
    wheel: Path = request.getfixturevalue("built").wheel
    result = dist.smoke(wheel, python, tmp_path)
    passed = re.search(r"(\d+) passed", result.summary)
    assert passed, result.summary
    # The README test and the in-memory contract suite (64 tests when this was written).
    assert int(passed.group(1)) >= 60, result.summary
    assert not re.search(r"failed|error|skipped", result.summary), result.summary
