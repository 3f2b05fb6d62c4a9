from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.peers.bluez import BluezMock


def _need_dbus() -> None:
    if shutil.which("dbus-daemon") is None:
        pytest.fail("dbus-daemon is missing (Debian package dbus-daemon; .ci/run installs it)")


@pytest.fixture
def bluez(monkeypatch: pytest.MonkeyPatch) -> Iterator[BluezMock]:
    """A mocked bluetoothd with adapter hci0 (advertisement monitors supported) on a
    private system bus that bleak in this process uses."""
    _need_dbus()
    mock = BluezMock()
    try:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", mock.bus.address)
        mock.add_adapter("hci0")
        yield mock
    finally:
        mock.close()


@pytest.fixture
def bluez_without_monitors(monkeypatch: pytest.MonkeyPatch) -> Iterator[BluezMock]:
    """The same, as a bluetoothd started without --experimental (no passive scanning)."""
    _need_dbus()
    mock = BluezMock(monitor_api=False)
    try:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", mock.bus.address)
        mock.add_adapter("hci0")
        yield mock
    finally:
        mock.close()
