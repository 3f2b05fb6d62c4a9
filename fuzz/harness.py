"""What every atheris harness in fuzz/ shares: import the target instrumented, run
libFuzzer over it, and treat only the target's named error as an expected outcome.

A harness is ``python fuzz/NAME.py [libFuzzer options] [CORPUS_DIR ...]``;
``scripts/fuzz --atheris`` runs them all (``fuzz/run.py``). An exception other than
the named one, or a failed assertion, is a crash: libFuzzer stops and writes the
input to its artifact file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # gatewayd from this checkout, installed or not


def fuzz(one_input: Callable[[bytes], None]) -> None:
    """Run libFuzzer over ``one_input`` with this process's command line."""
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
