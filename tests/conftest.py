from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.daemon import DaemonProcess
from tests.support.properties import BASE_EXAMPLES, fuzz_scale

# pki, broker (a TLS Mosquitto) and subscriber, for the tests that run the whole flow.
pytest_plugins = ["tests.support.flow"]

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE. "default" keeps the normal suite fast
# and free of timing flakes on a loaded machine (no deadline); "fuzz" (scripts/fuzz) runs
# GATEWAYD_FUZZ_SCALE (default 20) times the examples of every property test, which asks
# for its budget through tests.support.properties.examples().
# The default profile is derandomized: the suite gives the same verdict at every run
# (no property failing one CI run in a hundred); scripts/fuzz explores at random.
settings.register_profile("default", max_examples=BASE_EXAMPLES, deadline=None,
                          derandomize=True)
settings.register_profile("fuzz", max_examples=BASE_EXAMPLES * fuzz_scale(), deadline=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every hypothesis test counts as a property test (``-m property``), marked or not."""
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False) \
                and item.get_closest_marker("property") is None:
            item.add_marker(pytest.mark.property)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long forms of the fault campaign (tests/faults)")


@pytest.fixture
def long_faults(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))
