"""The project's own tests of the code that uses Debian-provided libraries, run the
way the package runs: Debian's /usr/bin/python3, the code from the unpacked .deb,
python3-cryptography, python3-jwt, python3-cbor2 and python3-serial from Debian
(bookworm: 38.0.4, 2.6.0, 5.4.6, 3.5). Only pytest and the test-only packages come
from the development venv, placed after Debian's dist-packages so that they cannot
replace a Debian library. Slow (about a minute and a half)."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.packaging.conftest import ROOT, run

# The suites that exercise cryptography (identity, commands, uplink TLS/JWT),
# pyjwt (uplink JWT, command tokens, local client tokens) and cbor2 (SenML, local
# ingress payloads).
SUITES = [
    "tests/identity",
    "tests/commands",
    "tests/uplink/test_senml.py",
    "tests/uplink/test_uplink_parts.py",
    "tests/uplink/test_uplink_jwt.py",
    "tests/local/test_local_units.py",
]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_suites_pass_with_debian_library_versions(unpacked: Path, tmp_path: Path) -> None:
    # A copy of tests/ with no source tree beside it: gatewayd is imported from the
    # package only (the source folder would shadow it, and lacks gatewayd.drivers).
    work = tmp_path / "suite"
    shutil.copytree(ROOT / "tests", work / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "packaging"))
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")
    venv_site = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join([str(unpacked / "usr/lib/gatewayd"),
                                         "/usr/lib/python3/dist-packages", venv_site, str(work)])
    versions = run("/usr/bin/python3", "-c",
                   "import cryptography, jwt, cbor2, serial, gatewayd; "
                   "print(cryptography.__version__, jwt.__version__, serial.__version__, "
                   "cbor2.__file__, gatewayd.__file__)", env=env, cwd=work)
    print(versions.stdout, versions.stderr, file=sys.stderr)
    assert versions.stdout.split()[-1].startswith(str(unpacked)), versions.stdout
    assert "/usr/lib/python3/dist-packages/" in versions.stdout.split()[-2]
    done = run("/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--timeout=120", *SUITES, env=env, cwd=work, timeout=1700)
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
