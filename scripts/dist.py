"""Build eventcore's distributions and smoke-test the wheel from fresh installs.

    python scripts/dist.py build [--out DIR]        # sdist, then the wheel built FROM it
    python scripts/dist.py smoke WHEEL [--python X]  # fresh venv per Python, no Rust on PATH
    python scripts/dist.py pythons [--install]       # the CPythons the smoke test runs on
    python scripts/dist.py version                   # the version (Cargo.toml)

``build`` makes the sdist, unpacks it and builds the wheel from the unpacked tree (so the
sdist is proven to build); on Linux the wheel is manylinux_2_17 (maturin with zig) and is
checked with ``auditwheel show``. ``smoke`` installs the wheel into a new virtual environment
of each supported CPython with every Rust tool removed from PATH, and runs the README
examples and the store contract suite (in-memory store) from that install, not from the
source tree. ``make wheel`` and ``make wheel-smoke`` run these; tests/test_wheel.py uses
the same functions; the release workflow (.github/workflows/release.yml) calls the same
commands.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The CPython versions the single abi3 wheel is tested on (the lowest is the abi3 floor).
PYTHONS = ("3.11", "3.12", "3.13")
#: manylinux policy of the Linux wheel (glibc 2.17, as maturin's generated CI builds).
MANYLINUX = "manylinux_2_17"
#: The wheel's extras the smoke suite uses (README examples: Prometheus and crypto-shredding;
#: a contract test imports eventcore.postgres).
SMOKE_EXTRAS = ("postgres", "prometheus", "crypto")
#: What the smoke suite needs besides the wheel and its extras (binary wheels only).
SMOKE_DEPS = ("pytest>=8", "pytest-asyncio>=0.24", "hypothesis>=6.100")
#: Files copied from the source tree to run the smoke suite against the installed package.
SMOKE_FILES = (
    "README.md",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/pgserver.py",
    "tests/bank_domain.py",
    "tests/folds.py",
    "tests/test_readme.py",
    "tests/contract/__init__.py",
    "tests/contract/conftest.py",
    "tests/contract/test_store_contract.py",
    "tests/sync/__init__.py",
    "tests/sync/adapter.py",
)
SMOKE_CONFIG = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = -ra --strict-markers -p no:cacheprovider
markers =
    postgres: needs the PostgreSQL test server
"""
RUST_TOOLS = ("cargo", "rustc", "rustup")


class DistError(Exception):
    """A build or smoke step failed; the message says which and why."""


@dataclass(frozen=True)
class Built:
    """The distributions of one build."""

    sdist: Path
    wheel: Path
    seconds: float


def cargo_version() -> str:
    """The package version, set once in Cargo.toml (maturin copies it into the metadata)."""
    with (ROOT / "Cargo.toml").open("rb") as f:
        return str(tomllib.load(f)["package"]["version"])


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DistError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
            f"\n{proc.stderr[-4000:]}"
        )
    return proc.stdout + proc.stderr


def _tool(name: str, install: str) -> str:
    """A console script of this interpreter's environment (or its base's), else PATH's."""
    scripts = [
        sysconfig.get_path("scripts"),
        sysconfig.get_path("scripts", vars={"base": sys.base_prefix}),
    ]
    found = shutil.which(name, path=os.pathsep.join(scripts)) or shutil.which(name)
    if found is None:
        raise DistError(f"{name} not found: pip install '{install}' (make install-test)")
    return found


def _zig_env() -> dict[str, str]:
    """Environment that points maturin (cargo-zigbuild) at the ziglang package's zig."""
    spec = importlib.util.find_spec("ziglang")
    if spec is None or spec.origin is None:
        raise DistError("ziglang not found: pip install ziglang (make install-test)")
    zig = Path(spec.origin).parent / "zig"
    return {**os.environ, "CARGO_ZIGBUILD_ZIG_PATH": str(zig)}


def build(out: Path, *, target_dir: Path | None = None) -> Built:
    """Build the sdist, then the wheel from the unpacked sdist, into ``out``; check both."""
    start = time.perf_counter()
    out = out.resolve()  # maturin runs in the unpacked sdist
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("eventcore_py-*.tar.gz"), *out.glob("eventcore_py-*.whl")]:
        old.unlink()
    maturin = _tool("maturin", "maturin>=1.9.4,<2")
    _run([maturin, "sdist", "--out", str(out)], cwd=ROOT)
    (sdist,) = out.glob("eventcore_py-*.tar.gz")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        (src,) = Path(tmp).iterdir()
        # The sdist's files carry a fixed old mtime (reproducible archives): touch them, or
        # cargo would take a cached build in the shared target dir for up to date.
        for f in src.rglob("*"):
            os.utime(f)
        cmd = [maturin, "build", "--release", "--out", str(out)]
        cmd += ["--target-dir", str(target_dir or ROOT / "target" / "dist")]
        env = dict(os.environ)
        if sys.platform == "linux":
            cmd += ["--zig", "--compatibility", MANYLINUX]
            env = _zig_env()
        _run(cmd, cwd=src, env=env)
    (wheel,) = out.glob("eventcore_py-*.whl")
    if sys.platform == "linux":
        check_manylinux(wheel)
    return Built(sdist, wheel, time.perf_counter() - start)


def check_manylinux(wheel: Path) -> str:
    """``auditwheel show``: the wheel must be consistent with its manylinux tag."""
    report = _run([_tool("auditwheel", "auditwheel>=6"), "show", str(wheel)])
    policy = f"{MANYLINUX}_{os.uname().machine}"
    if f'consistent with the following platform tag:\n"{policy}"' not in report:
        raise DistError(f"auditwheel does not accept {wheel.name} as {policy}:\n{report}")
    return report


def find_python(version: str) -> Path | None:
    """A CPython ``version`` interpreter: pyenv's newest, else ``pythonX.Y`` on PATH."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(
        glob.glob(str(root / "versions" / f"{version}.*" / "bin" / f"python{version}")),
        key=lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parents[1].name)],
        reverse=True,
    )
    on_path = shutil.which(f"python{version}")
    for exe in [*candidates, *([on_path] if on_path else [])]:
        probe = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return Path(exe)
    return None


def install_pythons(versions: tuple[str, ...] = PYTHONS) -> list[str]:
    """Install missing CPythons with pyenv; returns the versions still missing."""
    pyenv = shutil.which("pyenv") or str(
        Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "bin" / "pyenv"
    )
    for version in versions:
        if find_python(version) is None and Path(pyenv).exists():
            subprocess.run([pyenv, "install", "--skip-existing", version], check=False)
    return [v for v in versions if find_python(v) is None]


def _env_without_rust() -> dict[str, str]:
    path = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any(shutil.which(tool, path=d) for tool in RUST_TOOLS)
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CARGO", "RUSTUP", "RUST", "PYTHON", "VIRTUAL_ENV", "PYO3"))
    }
    env["PATH"] = os.pathsep.join(path)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@dataclass(frozen=True)
class Smoke:
    """One smoke run: the interpreter, install time and the pytest summary line."""

    python: str
    install_seconds: float
    test_seconds: float
    summary: str


def smoke(wheel: Path, python: Path, work: Path) -> Smoke:
    """Install ``wheel`` into a fresh venv of ``python`` (no Rust on PATH) and run the suite."""
    env = _env_without_rust()
    for tool in RUST_TOOLS:
        if shutil.which(tool, path=env["PATH"]):
            raise DistError(f"{tool} still on PATH for the smoke test")
    venv = work / "venv"
    _run([str(python), "-m", "venv", str(venv)], env=env)
    vpy = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    start = time.perf_counter()
    # Binary wheels only: nothing may be compiled, and eventcore-py only from this wheel.
    pip = [str(vpy), "-m", "pip", "install", "--quiet", "--only-binary", ":all:"]
    _run([*pip, f"{wheel}[{','.join(SMOKE_EXTRAS)}]"], env=env)
    installed = time.perf_counter() - start
    _run([*pip, *SMOKE_DEPS], env=env)
    suite = work / "suite"
    for name in SMOKE_FILES:
        (suite / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, suite / name)
    (suite / "pytest.ini").write_text(SMOKE_CONFIG)
    where = _run(
        [
            str(vpy),
            "-c",
            "import eventcore, eventcore._core as c; "
            "print(eventcore.__version__, eventcore.__file__, c.__file__)",
        ],
        cwd=suite,
        env=env,
    ).split()
    if where[0] != wheel.name.split("-")[1] or not all(
        Path(p).is_relative_to(venv) for p in where[1:]
    ):
        raise DistError(f"eventcore was not imported from the installed wheel: {where}")
    start = time.perf_counter()
    out = _run([str(vpy), "-m", "pytest", "-q", "-m", "not postgres", "tests"], cwd=suite, env=env)
    summary = out.strip().splitlines()[-1]
    return Smoke(str(python), installed, time.perf_counter() - start, summary)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``build``, ``smoke``, ``pythons`` or ``version`` (see the docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="the sdist, and the wheel built from it")
    b.add_argument("--out", type=Path, default=ROOT / "dist")
    s = sub.add_parser("smoke", help="install the wheel in fresh venvs and run the smoke suite")
    s.add_argument("wheel", type=Path)
    s.add_argument("--python", action="append", help="X.Y (repeatable; default: all)")
    p = sub.add_parser("pythons", help="the interpreters the smoke test uses")
    p.add_argument("--install", action="store_true", help="install missing ones with pyenv")
    sub.add_parser("version", help="the package version, from Cargo.toml")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "version":
            print(cargo_version())
        elif args.cmd == "build":
            built = build(args.out)
            size = built.wheel.stat().st_size / 1024
            print(f"{built.sdist}\n{built.wheel} ({size:.0f} KiB) in {built.seconds:.0f} s")
        elif args.cmd == "smoke":
            for version in args.python or PYTHONS:
                python = find_python(version)
                if python is None:
                    raise DistError(f"no CPython {version}: scripts/dist.py pythons --install")
                with tempfile.TemporaryDirectory() as tmp:
                    r = smoke(args.wheel.resolve(), python, Path(tmp))
                print(
                    f"{version} ({r.python}): installed in {r.install_seconds:.1f} s, "
                    f"suite {r.test_seconds:.1f} s: {r.summary}"
                )
        else:
            if args.install:
                install_pythons()
            for version in PYTHONS:
                print(version, find_python(version) or "MISSING")
            missing = [v for v in PYTHONS if find_python(v) is None]
            if missing:
                names = " ".join(missing)
                print(f"missing CPython {names}: `pyenv install {names}`, or put", end=" ")
                print(" ".join(f"python{v}" for v in missing), "on PATH")
                return 1
    except DistError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
