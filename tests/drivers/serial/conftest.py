"""Fixtures of the serial driver tests: a socat pty pair per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.peers.serial_pty import SocatPair


@pytest.fixture
async def cable(tmp_path: Path) -> AsyncIterator[SocatPair]:
    """A running virtual cable: the driver opens ``cable.dev``, the emulator ``cable.emu``."""
    pair = SocatPair(tmp_path / "cable")
    await pair.start()
    try:
        yield pair
    finally:
        await pair.stop()
