"""The outcome of a run: one row per check with pass, fail or skip, its figures and, for
anything but a pass, why. Printed as a table; written as JSON with ``--json``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class CheckResult:
    name: str
    result: str  # pass | fail | skip
    figures: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    bench: str
    started: float = field(default_factory=time.time)
    checks: list[CheckResult] = field(default_factory=list)
    work_dir: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.result != FAIL for c in self.checks)

    def add(self, check: CheckResult) -> CheckResult:
        self.checks.append(check)
        return check

    def as_dict(self) -> dict[str, Any]:
        return {"bench": self.bench, "passed": self.passed,
                "started": self.started, "duration_s": round(time.time() - self.started, 2),
                "work_dir": self.work_dir,
                "counts": {r: sum(1 for c in self.checks if c.result == r)
                           for r in (PASS, FAIL, SKIP)},
                "checks": [asdict(c) for c in self.checks]}

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")

    def table(self) -> str:
        """The checks as a text table; figures that are tables (per device) stay in JSON."""
        rows = [("CHECK", "RESULT", "TIME", "FIGURES")]
        for c in self.checks:
            figures = ", ".join(f"{k} {_show(v)}" for k, v in c.figures.items()
                                if not isinstance(v, (dict, list)))
            rows.append((c.name, c.result.upper() if c.result == FAIL else c.result,
                         f"{c.seconds:.1f}s", figures))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(r[i].ljust(width[i]) for i in range(3)) + "  " + r[3] for r in rows]
        for c in self.checks:
            if c.result != PASS and c.detail:
                lines.append(f"{c.name}: {c.detail}")
        counts = self.as_dict()["counts"]
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"bench {self.bench}: {verdict} ({counts[PASS]} passed, {counts[FAIL]} "
                     f"failed, {counts[SKIP]} skipped) in {time.time() - self.started:.1f}s")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
