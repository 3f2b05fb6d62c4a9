"""Fixtures for the package tests: one build of the .deb per session, unpacked once.

Tests marked ``slow`` (debootstrapped roots, qemu) run only when asked for:
``scripts/test tests/packaging -m slow`` or GATEWAYD_SLOW_TESTS=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = ("dpkg-buildpackage", "dh", "dh_python3", "help2man", "lintian")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: debootstrap/qemu install tests (minutes); "
                                       "run with -m slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.option.markexpr or "") or os.environ.get("GATEWAYD_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or GATEWAYD_SLOW_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class BuiltDeb:
    path: Path
    version: str
    build_seconds: float


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def run(*cmd: str | Path, timeout: float = 600, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, check=False, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def built_deb(tmp_path_factory: pytest.TempPathFactory) -> BuiltDeb:
    """packaging/build-deb, once per session (lintian runs in its own test)."""
    missing = [t for t in BUILD_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing build tools {missing}: apt-get install debhelper dh-python "
                    "help2man lintian python3-packaging (see .ci/run)")
    out = tmp_path_factory.mktemp("deb")
    start = time.monotonic()
    done = run(ROOT / "packaging/build-deb", "--out", out, "--work", out / "work",
               "--no-lintian")
    took = time.monotonic() - start
    assert done.returncode == 0, f"build-deb failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    version = project_version()
    deb = out / f"gatewayd_{version}_all.deb"
    assert deb.is_file(), list(out.iterdir())
    return BuiltDeb(deb, version, took)


@pytest.fixture(scope="session")
def unpacked(built_deb: BuiltDeb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The package's files under a throwaway root (dpkg -x)."""
    root = tmp_path_factory.mktemp("root")
    done = run("dpkg-deb", "-x", built_deb.path, root)
    assert done.returncode == 0, done.stderr
    yield root
