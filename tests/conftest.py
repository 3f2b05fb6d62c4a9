from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess

# pki, broker (a TLS Mosquitto) and subscriber, for the tests that run the whole flow.
pytest_plugins = ["tests.support.flow"]


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[type[DaemonProcess]]:
    """Make DaemonProcess instances that are stopped at the end of the test."""
    made: list[DaemonProcess] = []

    class Factory(DaemonProcess):
        def __init__(self, config_text: str, **kw: object) -> None:
            super().__init__(tmp_path / f"d{len(made)}", config_text, **kw)  # type: ignore[arg-type]
            made.append(self)

    yield Factory
    for d in made:
        d.close()
        if d.proc is not None and d.proc.returncode not in (0, -9, None):
            print(d.log_text())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long forms of the fault campaign (tests/faults)")


@pytest.fixture
def long_faults(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))
