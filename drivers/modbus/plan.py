"""Pure read planning: the fewest read requests that cover a device's points.

Points of one unit, one space (hr, ir, co, di) and one poll interval are
sorted by address and merged greedily: a point joins the current request
when the gap before it is at most ``max_gap`` registers (``max_bit_gap``
bits for co/di) and the request stays within ``max_registers`` registers
(``max_bits`` bits). Reading a few unused registers costs less than another
request; a device that refuses reads of unmapped registers wants
``max_gap = 0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from gatewayd.config.units import format_duration

from .config import BIT_SPACES, ModbusOptions, ModbusPoint

FUNCTIONS = {
    "co": (1, "read coils"),
    "di": (2, "read discrete inputs"),
    "hr": (3, "read holding registers"),
    "ir": (4, "read input registers"),
}
_SPACE_RANK = {space: i for i, space in enumerate(FUNCTIONS)}


@dataclass(frozen=True)
class ReadRequest:
    """One read request of the plan; ``points`` are the names it serves."""

    unit: int
    space: str
    start: int
    count: int
    poll: float
    points: tuple[str, ...]

    @property
    def function(self) -> int:
        return FUNCTIONS[self.space][0]

    @property
    def end(self) -> int:
        return self.start + self.count


def plan_reads(points: Iterable[ModbusPoint], *, max_gap: int, max_bit_gap: int,
               max_registers: int, max_bits: int) -> tuple[ReadRequest, ...]:
    """The read requests covering ``points``, ordered by poll, unit, space, address."""

    def group_key(p: ModbusPoint) -> tuple[float, int, int]:
        return (p.poll, p.unit_id, _SPACE_RANK[p.space])

    ordered = sorted(points, key=lambda p: (*group_key(p), p.address))  # stable: config order
    requests: list[ReadRequest] = []
    for _, members in groupby(ordered, key=group_key):
        group = list(members)
        bits = group[0].space in BIT_SPACES
        requests.extend(_merge(group, gap=max_bit_gap if bits else max_gap,
                               limit=max_bits if bits else max_registers))
    return tuple(requests)


def _merge(group: Sequence[ModbusPoint], *, gap: int, limit: int) -> list[ReadRequest]:
    out: list[ReadRequest] = []
    first = group[0]
    start, end, names = first.address, first.address + first.width, [first.name]
    for p in group[1:]:
        p_end = p.address + p.width
        if p.address - end <= gap and max(end, p_end) - start <= limit:
            end = max(end, p_end)
            names.append(p.name)
            continue
        out.append(ReadRequest(first.unit_id, first.space, start, end - start, first.poll,
                               tuple(names)))
        start, end, names = p.address, p_end, [p.name]
    out.append(ReadRequest(first.unit_id, first.space, start, end - start, first.poll,
                           tuple(names)))
    return out


def build_plan(options: ModbusOptions) -> tuple[ReadRequest, ...]:
    """The plan of a device: what every poll cycle reads."""
    return plan_reads(options.points, max_gap=options.max_gap, max_bit_gap=options.max_bit_gap,
                      max_registers=options.max_registers, max_bits=options.max_bits)


def format_plan(options: ModbusOptions) -> str:
    """The plan as text: one line per request (unit, function, start, count, points)."""
    plan = build_plan(options)
    rows = [("UNIT", "FC", "FUNCTION", "START", "COUNT", "EVERY", "POINTS")]
    for r in plan:
        rows.append((str(r.unit), str(r.function), FUNCTIONS[r.space][1], str(r.start),
                     str(r.count), format_duration(r.poll), ", ".join(r.points)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [f"{options.url}"]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    polls = sorted({r.poll for r in plan})
    per_poll = ", ".join(
        f"{sum(1 for r in plan if r.poll == poll)} every {format_duration(poll)}" for poll in polls)
    lines.append(f"{len(plan)} requests for {len(options.points)} points ({per_poll})")
    return "\n".join(lines) + "\n"
