"""Run every atheris harness of fuzz/ for a share of the time budget (``scripts/fuzz
--atheris``). Each harness works in its own corpus under ``.cache/fuzz/`` (seeded
from ``fuzz/seeds/``), so what one run learns the next one starts from; a crash
leaves its input in ``.cache/fuzz/artifacts/`` and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = ROOT / ".cache" / "fuzz"
HARNESSES = {  # harness -> its seeds
    "senml_decode": "senml",
    "nmea_parse": "nmea",
    "modbus_codec": "modbus",
    "bthome_decode": "bthome",
}
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+)")


def run_one(name: str, seconds: int, extra: list[str]) -> tuple[bool, str]:
    corpus = WORK / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = WORK / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(HERE / f"{name}.py"), str(corpus),
            str(HERE / "seeds" / HARNESSES[name]), f"-max_total_time={seconds}",
            f"-artifact_prefix={artifacts}/{name}-", "-print_final_stats=1", *extra]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    (WORK / f"{name}.log").write_text(log)
    done = _DONE.search(log)
    figures = (f"{int(done.group(1)):,} inputs, coverage {done.group(2)}" if done
               else "no summary")
    if proc.returncode != 0:
        crash = re.findall(r"Test unit written to (\S+)", log)
        where = crash[-1] if crash else f"{WORK / (name + '.log')}"
        tail = "\n".join(line for line in log.splitlines()
                         if "Error" in line or "Exception" in line)[-2000:]
        return False, f"{name}: CRASH after {elapsed:.0f}s ({figures}); input: {where}\n{tail}"
    return True, f"{name}: ok, {elapsed:.0f}s, {figures}, corpus {len(list(corpus.iterdir()))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="the whole budget, shared by the harnesses (default 10)")
    parser.add_argument("--only", action="append", choices=sorted(HARNESSES),
                        help="run only this harness (repeatable)")
    parser.add_argument("libfuzzer", nargs="*", help="more libFuzzer options, e.g. -jobs=2")
    args = parser.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed here (the fuzz extra installs it on x86_64 only): "
              "run scripts/fuzz without --atheris", file=sys.stderr)
        return 2
    names = args.only or list(HARNESSES)
    seconds = max(10, int(args.minutes * 60 / len(names)))
    ok = True
    for name in names:
        passed, line = run_one(name, seconds, args.libfuzzer)
        print(line, flush=True)
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
