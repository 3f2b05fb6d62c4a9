"""The built .deb: lintian, its file list, no compiled code, the bundle's pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.packaging.conftest import ROOT, BuiltDeb, run

ELF = b"\x7fELF"

# The first test to need the package builds it (about a minute, more on a loaded
# machine or with a cold wheel cache).
pytestmark = pytest.mark.timeout(900)


def test_lintian_is_clean(built_deb: BuiltDeb) -> None:
    done = run("lintian", "--fail-on", "error,warning", "--display-info", built_deb.path)
    tags = [line for line in done.stdout.splitlines() if re.match(r"[EWIX]: ", line)]
    assert done.returncode == 0 and tags == [], done.stdout + done.stderr


def test_control_fields(built_deb: BuiltDeb) -> None:
    fields = run("dpkg-deb", "-f", built_deb.path).stdout
    assert "Architecture: all\n" in fields
    assert f"Version: {built_deb.version}\n" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M)
    assert depends is not None
    names = {d.strip().split(" ")[0] for d in depends.group(1).split(",")}
    # Debian's own packages for the compiled and the recent-enough libraries.
    assert {"python3:any", "python3-cryptography", "python3-cbor2", "python3-jwt",
            "python3-serial", "adduser"} <= names
    assert "python3:any (>= 3.11~)" in depends.group(1)
    conffiles = run("dpkg-deb", "--info", built_deb.path, "conffiles").stdout.split()
    assert conffiles == ["/etc/gatewayd/gatewayd.toml"]


def test_file_list(built_deb: BuiltDeb) -> None:
    listing = run("dpkg-deb", "-c", built_deb.path).stdout
    paths = {line.split()[-1].removeprefix(".") for line in listing.splitlines()}
    for expected in ("/usr/bin/gatewayd", "/usr/bin/gatewayctl",
                     "/lib/systemd/system/gatewayd.service",
                     "/etc/gatewayd/gatewayd.toml", "/etc/gatewayd/conf.d/",
                     "/usr/share/doc/gatewayd/bundled.txt", "/usr/share/doc/gatewayd/copyright",
                     "/usr/share/man/man8/gatewayd.8.gz", "/usr/share/man/man8/gatewayctl.8.gz",
                     "/usr/lib/gatewayd/gatewayd/daemon.py",
                     "/usr/lib/gatewayd/gatewayd/drivers/sim/driver.py"):
        assert expected in paths, expected
    assert f"/usr/lib/gatewayd/gatewayd-{built_deb.version}.dist-info/entry_points.txt" in paths
    # No byte code in the package (postinst compiles it), no top-level "drivers".
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    assert not [p for p in paths if p.startswith("/usr/lib/gatewayd/drivers")]
    # Everything outside the bundle is where Debian expects it.
    outside = {p.split("/")[1] for p in paths if p.strip("/")}
    assert outside == {"etc", "lib", "usr"}


def test_nothing_architecture_specific(unpacked: Path) -> None:
    """No ELF file or shared object anywhere: the same files run on amd64, arm64, armhf."""
    compiled = []
    for path in unpacked.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as fh:
                if fh.read(4) == ELF or path.suffix in (".so", ".pyd") or ".so." in path.name:
                    compiled.append(path.relative_to(unpacked))
    assert compiled == []
    # Nothing under an architecture triplet or a python3.X-specific site directory.
    assert not list(unpacked.glob("usr/lib/*-linux-gnu*"))
    assert not list(unpacked.glob("usr/lib/python3*"))


def _bundled_table(unpacked: Path) -> dict[str, str]:
    text = (unpacked / "usr/share/doc/gatewayd/bundled.txt").read_text()
    section = text.split("Carried under", 1)[1].split("\n\n", 1)[0]
    return dict(m.groups() for m in re.finditer(r"^  (\S+)==(\S+)", section, re.M))


def test_bundled_txt_lists_every_distribution_pinned(unpacked: Path) -> None:
    lib = unpacked / "usr/lib/gatewayd"
    listed = _bundled_table(unpacked)
    text = (unpacked / "usr/share/doc/gatewayd/bundled.txt").read_text()
    assert "NOT PINNED" not in text
    on_disk = {}
    for dist in lib.glob("*.dist-info"):
        name, version = dist.name.removesuffix(".dist-info").rsplit("-", 1)
        if name != "gatewayd":
            on_disk[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert on_disk == listed
    # The direct dependencies carried are exactly the versions pyproject.toml pins.
    with (ROOT / "pyproject.toml").open("rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    pins = dict(d.replace(" ", "").lower().split("==") for d in deps)
    for name, version in listed.items():
        if name in pins:
            assert pins[name] == version, name
    assert "From Debian (package Depends):" in text


def test_every_source_module_is_carried(unpacked: Path) -> None:
    lib = unpacked / "usr/lib/gatewayd/gatewayd"
    source = {p.relative_to(ROOT / "gatewayd") for p in (ROOT / "gatewayd").rglob("*.py")}
    source |= {Path("drivers") / p.relative_to(ROOT / "drivers")
               for p in (ROOT / "drivers").rglob("*.py")}
    carried = {p.relative_to(lib) for p in lib.rglob("*.py")}
    assert source - carried == set()


def test_maintainer_scripts_are_posix_sh(built_deb: BuiltDeb, tmp_path: Path) -> None:
    control = tmp_path / "control"
    assert run("dpkg-deb", "-e", built_deb.path, control).returncode == 0
    for script in ("postinst", "postrm", "prerm"):
        text = (control / script).read_text()
        assert text.startswith("#!/bin/sh\n"), script
        assert run("sh", "-n", control / script).returncode == 0, script
    postinst = (control / "postinst").read_text()
    # debhelper's parts were filled in: unit enable/start, byte-compilation.
    assert "deb-systemd-helper" in postinst and "py3compile" in postinst
    assert "#DEBHELPER#" not in postinst
