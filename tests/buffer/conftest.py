from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config.schema import BufferConfig
from tests.buffer.buffer_support import buffer_config


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., BufferConfig]:
    """BufferConfig for ``tmp_path/buffer.sqlite`` with test-friendly defaults."""

    def make(**overrides: Any) -> BufferConfig:
        path = overrides.pop("path", tmp_path / "buffer.sqlite")
        return buffer_config(path, **overrides)

    return make
