"""packaging/test-install in a debootstrapped bookworm root, per architecture (slow).

Install with apt (offline), check-config, the daemon until READY as the gatewayd
user, identity, upgrade to a rebuilt higher version keeping buffer, identity and
config, the postinst run twice, purge. arm64 and armhf run under qemu-user-static.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import pytest

from tests.packaging.conftest import ROOT, BuiltDeb, run

QEMU = {"arm64": "qemu-aarch64-static", "armhf": "qemu-arm-static"}


@pytest.fixture(scope="module")
def upgrade_deb(built_deb: BuiltDeb, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb2")
    version = f"{built_deb.version}+upgrade1"
    done = run(ROOT / "packaging/build-deb", "--out", out, "--work", out / "work",
               "--no-lintian", "--version", version)
    assert done.returncode == 0, done.stderr[-4000:]
    return out / f"gatewayd_{version}_all.deb"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("arch", ["amd64", "arm64", "armhf"])
def test_install_upgrade_purge(arch: str, built_deb: BuiltDeb, upgrade_deb: Path,
                               tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the architectures are chosen for an amd64 host")
    if arch in QEMU and shutil.which(QEMU[arch]) is None:
        pytest.skip(f"{QEMU[arch]} is not installed (apt-get install qemu-user-static "
                    "binfmt-support)")
    done = run(ROOT / "packaging/test-install", "--arch", arch, "--deb", built_deb.path,
               "--upgrade-deb", upgrade_deb, "--work", tmp_path / "ti", timeout=3500)
    print(done.stderr[-3000:])
    assert done.returncode == 0, done.stdout + done.stderr[-6000:]
    result = [line for line in done.stdout.splitlines() if line.startswith("test-install ")]
    assert result and f"test-install {arch}: OK " in result[-1], done.stdout
    if arch == "amd64" and shutil.which("systemd-nspawn"):
        # The unit ran under systemd: start, reload, watchdog drill, stop.
        assert result[-1].endswith(" systemd=ok"), result[-1]
    print(result[-1])
