"""Example budgets of the property tests, scaled by the active hypothesis profile.

A property test that wants more (or fewer) examples than the profile's default
asks ``@settings(max_examples=examples(300))`` instead of a bare number: under
the default profile it runs 300, under ``fuzz`` (``scripts/fuzz``) 300 times the
fuzz scale. A bare ``max_examples=300`` would pin it to 300 under every profile.
"""

from __future__ import annotations

import os

from hypothesis import settings

BASE_EXAMPLES = 100  # max_examples of the default profile


def fuzz_scale() -> int:
    """How many times more examples the ``fuzz`` profile runs (GATEWAYD_FUZZ_SCALE)."""
    try:
        return max(1, int(os.environ.get("GATEWAYD_FUZZ_SCALE", "20")))
    except ValueError:
        return 20


def examples(n: int) -> int:
    """``n`` under the default profile, scaled like the active profile's max_examples."""
    return max(1, n * settings.default.max_examples // BASE_EXAMPLES)
