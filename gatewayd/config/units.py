"""Pure parsers for the human-written quantities in config: durations and sizes."""

from __future__ import annotations

import math
import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)")


def parse_duration(text: str) -> float:
    """Parse ``"500ms"``, ``"5s"``, ``"1m30s"``, ``"2h"``, ``"1d"`` into seconds.

    Raises ValueError with the expected form when the text is not a duration.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as '500ms' or '5s', got {text!r}")
    s = text.strip()
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(s):
        raise ValueError(
            f"invalid duration {text!r}; expected a number with a unit "
            "(ms, s, m, h, d), such as '500ms', '5s' or '1m30s'"
        )
    if not math.isfinite(total):
        raise ValueError(f"invalid duration {text[:40]!r}...: too large")
    return total


def parse_size(text: str) -> int:
    """Parse ``"256MiB"``, ``"10MB"``, ``"4096B"`` into bytes.

    Raises ValueError with the expected form when the text is not a size.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a size string such as '256MiB', got {text!r}")
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"invalid size {text!r}; expected a number with a unit "
            "(B, KB, MB, GB, KiB, MiB, GiB), such as '256MiB'"
        )
    n = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if not math.isfinite(n):
        raise ValueError(f"invalid size {text[:40]!r}...: too large")
    return int(n)


def format_duration(seconds: float) -> str:
    """The shortest duration string that parses back to ``seconds`` (to the ms)."""
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    return f"{ms // 1000}s"


def parse_host_port(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` or ``"[::1]:9108"`` into host and port. Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9108, got {text!r}")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {text!r}; expected HOST:PORT such as 127.0.0.1:9108")
    return host.strip("[]"), int(port)
