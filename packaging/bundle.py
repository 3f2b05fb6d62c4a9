#!/usr/bin/python3
"""Stage gatewayd and the pure-Python code it needs for the .deb.

Reads pyproject.toml's dependencies and packaging/python-deps.toml, follows
every requirement through the packages' own metadata, and decides for each
one: a Debian package (a Depends), omitted (with the reason recorded), or
bundled as pure Python under usr/lib/gatewayd. Writes the staged tree, the
Depends line, the copyright paragraphs of the bundled code and bundled.txt.

Fails (exit 1, the reason on stderr) when a package would carry compiled
code, when a pin contradicts a requirement, or when a marker makes a
requirement differ between amd64, arm64 and armhf. Run by packaging/build-deb.
"""

from __future__ import annotations

import argparse
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

BINARY_SUFFIXES = (".so", ".pyd", ".dylib", ".dll", ".a", ".o")
ELF_MAGIC = b"\x7fELF"
# The machines of the three architectures the _all.deb runs on, as Python sees them.
MACHINES = ("x86_64", "aarch64", "armv7l")
BUNDLE_DIR = "usr/lib/gatewayd"


class BundleError(Exception):
    """The bundle cannot be made as asked; the message says why."""


@dataclass
class DebianDep:
    package: str
    version: str


@dataclass
class Bundled:
    name: str
    version: str
    wheel: Path
    license: str = ""
    required_by: set[str] = field(default_factory=set)
    locked: bool = True


@dataclass
class Plan:
    bundled: dict[str, Bundled] = field(default_factory=dict)
    depends: dict[str, DebianDep] = field(default_factory=dict)
    depends_for: dict[str, set[str]] = field(default_factory=dict)
    omitted: dict[str, set[str]] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)


def log(msg: str) -> None:
    print(f"bundle: {msg}", file=sys.stderr, flush=True)


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    if not path.exists():
        return pins
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise BundleError(f"{path}: '{raw}': expected name==version")
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist()
                    if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode("utf-8"))


def wheel_license(meta: email.message.Message) -> str:
    expr = meta.get("License-Expression")
    if expr:
        return str(expr)
    lic = str(meta.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) < 40:
        return lic
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License :: OSI Approved :: "):
            return classifier.rsplit(" :: ", 1)[1]
    return lic.splitlines()[0][:60] if lic else "see the package's dist-info"


def check_pure_wheel(wheel: Path) -> None:
    """Raises BundleError when the wheel carries machine code.

    A wheel built from source with its extensions turned off may still be tagged
    for the build machine (dbus-fast's build does that): its contents decide.
    """
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            if base.endswith(BINARY_SUFFIXES) or ".so." in base:
                raise BundleError(f"{wheel.name}: carries compiled code {info.filename}")
            with zf.open(info) as fh:
                if fh.read(4) == ELF_MAGIC:
                    raise BundleError(f"{wheel.name}: carries an ELF file {info.filename}")


def scan_tree_for_binaries(root: Path) -> list[Path]:
    """Every file under root that is compiled code (by name or ELF magic)."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        if path.name.endswith(BINARY_SUFFIXES) or ".so." in path.name:
            found.append(path)
            continue
        with path.open("rb") as fh:
            if fh.read(4) == ELF_MAGIC:
                found.append(path)
    return found


class WheelSource:
    """Finds a verified pure-Python wheel for name==version (cached between builds)."""

    def __init__(self, pip: list[str], cache: Path, build_env: dict[str, str]) -> None:
        self.pip = pip
        self.cache = cache
        self.build_env = build_env
        self._newest: dict[str, str] = {}
        cache.mkdir(parents=True, exist_ok=True)

    def _pure_download(self, spec: str, dest: Path) -> Path | None:
        out = subprocess.run(
            [*self.pip, "download", "--no-deps", "--only-binary=:all:", "--platform", "any",
             "--implementation", "py", "--abi", "none", "--python-version", "3.11",
             "-d", str(dest), spec],
            capture_output=True, text=True, check=False)
        wheels = sorted(dest.glob("*.whl"))
        return wheels[0] if out.returncode == 0 and wheels else None

    def _build_from_sdist(self, name: str, spec: str, dest: Path) -> Path:
        env = dict(os.environ)
        env.update(self.build_env)
        out = subprocess.run(
            [*self.pip, "wheel", "--no-deps", "--no-cache-dir", "--use-pep517", "--no-binary", name,
             "-w", str(dest), spec],
            capture_output=True, text=True, check=False, env=env)
        wheels = sorted(dest.glob("*.whl"))
        if out.returncode != 0 or not wheels:
            raise BundleError(f"{spec}: no pure-Python wheel published and building it from "
                              f"source failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        return wheels[0]

    def newest(self, name: str, specifier: str) -> str:
        """The newest version of name matching specifier (for an unlocked dependency)."""
        key = f"{name}{specifier}"
        if key not in self._newest:
            self._newest[key] = self._find_newest(name, specifier)
        return self._newest[key]

    def _find_newest(self, name: str, specifier: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            spec = f"{name}{specifier}"
            wheel = self._pure_download(spec, Path(tmp))
            if wheel is not None:
                return str(parse_wheel_filename(wheel.name)[1])
            out = subprocess.run([*self.pip, "download", "--no-deps", "--no-binary", name,
                                  "-d", tmp, spec],
                                 capture_output=True, text=True, check=False)
            for f in Path(tmp).iterdir():
                m = re.match(rf"{re.escape(name).replace('-', '[-_]')}-(.+)\.(tar\.gz|zip)$",
                             f.name, re.IGNORECASE)
                if m:
                    return m.group(1)
            raise BundleError(f"cannot find {spec}: {out.stderr[-1000:]}")

    def get(self, name: str, version: str) -> Path:
        slot = self.cache / f"{name}-{version}"
        cached = sorted(slot.glob("*.whl")) if slot.is_dir() else []
        if cached:
            return cached[0]
        spec = f"{name}=={version}"
        with tempfile.TemporaryDirectory() as tmp:
            wheel = self._pure_download(spec, Path(tmp))
            if wheel is None:
                log(f"{spec}: no pure-Python wheel published; building it from source "
                    "with its compiled extensions turned off")
                wheel = self._build_from_sdist(name, spec, Path(tmp))
            check_pure_wheel(wheel)
            slot.mkdir(parents=True, exist_ok=True)
            final = slot / wheel.name
            shutil.copy2(wheel, final)
        return final


def _marker_holds(marker: Marker | None, extras: set[str], machine: str) -> bool:
    if marker is None:
        return True
    envs = [{"extra": e, "platform_machine": machine} for e in (extras or {""})]
    return any(marker.evaluate(env) for env in envs)


def marker_holds(req: Requirement, extras: set[str], parent: str) -> bool:
    """Whether req applies on Linux/Python 3.11; raises if it differs between the arches."""
    results = {m: _marker_holds(req.marker, extras, m) for m in MACHINES}
    if len(set(results.values())) > 1:
        raise BundleError(f"{parent} requires '{req}' on some architectures only "
                          f"({results}): an _all.deb cannot carry that")
    return results[MACHINES[0]]


class Resolver:
    def __init__(self, *, pins: dict[str, str], lock: dict[str, str],
                 debian: dict[str, DebianDep], omit: dict[str, str],
                 source: WheelSource, relock: bool = False) -> None:
        self.relock = relock
        self.pins = pins
        self.lock = lock
        self.debian = debian
        self.omit = omit
        self.source = source
        self.plan = Plan()

    def resolve(self, roots: list[Requirement]) -> Plan:
        queue: list[tuple[Requirement, str]] = [(r, "gatewayd") for r in roots]
        while queue:
            req, parent = queue.pop(0)
            queue.extend(self._visit(req, parent))
        return self.plan

    def _visit(self, req: Requirement, parent: str) -> list[tuple[Requirement, str]]:
        name = canonicalize_name(req.name)
        plan = self.plan
        if name in self.omit:
            plan.omitted.setdefault(name, set()).add(f"{parent} ({req})")
            return []
        deb = self.debian.get(name)
        if deb is not None:
            ok = parent == "gatewayd" or req.specifier.contains(deb.version, prereleases=True)
            if ok:
                plan.depends[deb.package] = deb
                plan.depends_for.setdefault(deb.package, set()).add(f"{parent}: {req}")
                return []
            plan.fallbacks.append(f"{name}: {parent} needs '{req.specifier}', Debian's "
                                  f"{deb.package} is {deb.version}: bundled instead")
            log(plan.fallbacks[-1])
        version = self.pins.get(name) or self.lock.get(name)
        locked = version is not None
        if version is None:
            version = self.source.newest(name, str(req.specifier))
            if not self.relock:
                log(f"WARNING: {name} (required by {parent}) is not pinned in pyproject.toml or "
                    f"packaging/bundle.lock; took {version}. Run packaging/build-deb --relock.")
        if not req.specifier.contains(version, prereleases=True):
            raise BundleError(f"{parent} requires '{req}', but {name} is pinned to {version}")
        if name in plan.bundled:
            plan.bundled[name].required_by.add(parent)
            return []
        wheel = self.source.get(name, version)
        meta = wheel_metadata(wheel)
        plan.bundled[name] = Bundled(name, version, wheel, wheel_license(meta), {parent}, locked)
        extras = {canonicalize_name(e) for e in req.extras}
        children = []
        for text in meta.get_all("Requires-Dist") or []:
            child = Requirement(text)
            if marker_holds(child, extras, name):
                children.append((child, name))
        return children


def load_inputs(source: Path, packaging_dir: Path) -> tuple[dict, dict, dict[str, str]]:
    with (source / "pyproject.toml").open("rb") as fh:
        pyproject = tomllib.load(fh)
    with (packaging_dir / "python-deps.toml").open("rb") as fh:
        deps_cfg = tomllib.load(fh)
    lock = read_lock(packaging_dir / "bundle.lock")
    return pyproject, deps_cfg, lock


def direct_pins(dependencies: list[str]) -> tuple[list[Requirement], dict[str, str]]:
    roots, pins = [], {}
    for text in dependencies:
        req = Requirement(text)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise BundleError(f"pyproject.toml: dependency '{text}' is not pinned with ==")
        roots.append(req)
        pins[canonicalize_name(req.name)] = specs[0].version
    return roots, pins


WRAPPER = '''#!/usr/bin/python3 -I
"""{name}: {target}, run from the code that the package carries."""
import os
import sys

_lib = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
                    "lib", "gatewayd")
# Before the site directories (so the bundled versions win), after the standard library.
_at = next((i for i, p in enumerate(sys.path) if p.endswith("-packages")), len(sys.path))
sys.path.insert(_at, _lib)
from {module} import {func}  # noqa: E402

sys.exit({func}())
'''


def write_wrappers(scripts: dict[str, str], bindir: Path) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for name, target in sorted(scripts.items()):
        module, _, func = target.partition(":")
        path = bindir / name
        path.write_text(WRAPPER.format(name=name, target=target, module=module, func=func))
        path.chmod(0o755)


def stage(plan: Plan, project_wheel: Path, pip: list[str], stage_dir: Path) -> Path:
    lib = stage_dir / BUNDLE_DIR
    if lib.exists():
        shutil.rmtree(lib)
    wheels = [str(b.wheel) for b in plan.bundled.values()] + [str(project_wheel)]
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-compile", "--no-index",
                    "--target", str(lib), *wheels], check=True)
    shutil.rmtree(lib / "bin", ignore_errors=True)  # the bundled packages' own scripts
    for junk in list(lib.rglob("__pycache__")) + list(lib.rglob("direct_url.json")):
        if junk.is_dir():
            shutil.rmtree(junk)
        else:
            junk.unlink()
    for path in lib.rglob("*"):  # no stray executable bits or scripts in a library
        if path.is_file():
            path.chmod(0o644)
    binaries = scan_tree_for_binaries(lib)
    if binaries:
        raise BundleError("compiled code would be carried: "
                          + ", ".join(str(p.relative_to(stage_dir)) for p in binaries))
    return lib


IMPORT_CHECK = """
import importlib, pkgutil, sys
at = next((i for i, p in enumerate(sys.path) if p.endswith("-packages")), len(sys.path))
sys.path.insert(at, sys.argv[1])
import gatewayd
failed = []
for mod in pkgutil.walk_packages(gatewayd.__path__, "gatewayd."):
    if mod.name.rsplit(".", 1)[-1] == "__main__":
        continue
    try:
        importlib.import_module(mod.name)
    except Exception as err:  # report every module, then fail
        failed.append(f"{mod.name}: {type(err).__name__}: {err}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def check_imports(lib: Path, python: str) -> None:
    """Import every gatewayd module from the staged tree with the target's python3
    and the Debian packages installed here; raises BundleError naming each failure."""
    out = subprocess.run([python, "-I", "-c", IMPORT_CHECK, str(lib)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BundleError("gatewayd does not import under " + python + " with the Debian "
                          "packages it depends on:\n  " + out.stdout.strip().replace("\n", "\n  ")
                          + out.stderr[-2000:])


def top_levels(lib: Path, bundled: Bundled) -> list[str]:
    """The files and folders under lib that one bundled distribution installed."""
    dist = next(lib.glob(f"{re.sub(r'[-_.]+', '_', bundled.name)}-{bundled.version}.dist-info"),
                None)
    if dist is None:
        dist = next(p for p in lib.glob("*.dist-info")
                    if canonicalize_name(p.name.rsplit("-", 1)[0]) == bundled.name)
    tops = {dist.name}
    record = dist / "RECORD"
    for line in record.read_text().splitlines():
        first = line.split(",", 1)[0].split("/", 1)[0]
        if first and not first.startswith("..") and first != "bin":
            tops.add(first)
    return sorted(tops)


def write_reports(plan: Plan, lib: Path, work: Path, doc_dir: Path, version: str) -> None:
    depends = ", ".join(f"{d.package} (>= {d.version})"
                        for d in sorted(plan.depends.values(), key=lambda d: d.package))
    (work / "python-depends").write_text(depends + "\n")

    lines = [f"gatewayd {version}: the Python code it runs, and where each part comes from.",
             "",
             f"Carried under /{BUNDLE_DIR}/ (pure Python, pinned; no compiled code):"]
    for b in sorted(plan.bundled.values(), key=lambda b: b.name):
        pin = "" if b.locked else "  (NOT PINNED: taken as newest at build time)"
        lines.append(f"  {b.name + '==' + b.version:<28} {b.license:<28} for "
                     f"{', '.join(sorted(b.required_by))}{pin}")
    lines += ["", "From Debian (package Depends):"]
    for pkg, dep in sorted(plan.depends.items()):
        lines.append(f"  {pkg} (>= {dep.version})  for "
                     + "; ".join(sorted(plan.depends_for[pkg])))
    if plan.fallbacks:
        lines += ["", "Debian's version too old, so bundled instead:"]
        lines += [f"  {f}" for f in plan.fallbacks]
    if plan.omitted:
        lines += ["", "Declared by a bundled package but not carried (gatewayd never imports it):"]
        for name, parents in sorted(plan.omitted.items()):
            lines.append(f"  {name}  (asked for by {'; '.join(sorted(parents))})")
    doc_dir.mkdir(parents=True, exist_ok=True)
    (doc_dir / "bundled.txt").write_text("\n".join(lines) + "\n")

    paras = []
    for b in sorted(plan.bundled.values(), key=lambda b: b.name):
        files = " ".join(f"bundle/{BUNDLE_DIR}/{t}" + ("/*" if (lib / t).is_dir() else "")
                         for t in top_levels(lib, b))
        paras.append(f"Files: {files}\nCopyright: {b.name} authors (see its .dist-info)\n"
                     f"License: {b.license}\nComment: {b.name} {b.version}, carried unmodified "
                     f"from PyPI; its license text is in its .dist-info folder.\n")
    (work / "copyright-bundled").write_text("\n".join(paras))


def build_project_wheel(source: Path, pip: list[str], work: Path) -> Path:
    src = work / "project-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for item in ("pyproject.toml", "README.md", "gatewayd", "drivers"):
        p = source / item
        if p.is_dir():
            shutil.copytree(p, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.exists():
            shutil.copy2(p, src / item)
    out = work / "project-wheel"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)], check=True)
    wheel = next(out.glob("gatewayd-*.whl"))
    check_pure_wheel(wheel)
    return wheel


def write_lock(plan: Plan, pins: dict[str, str], path: Path) -> None:
    transitive = sorted((b.name, b.version) for b in plan.bundled.values() if b.name not in pins)
    text = ("# Versions of the packages that gatewayd's pinned dependencies pull in, carried\n"
            "# in the .deb. Regenerate with: packaging/build-deb --relock\n")
    text += "".join(f"{n}=={v}\n" for n, v in transitive)
    path.write_text(text)
    log(f"wrote {path} ({len(transitive)} pins)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, required=True, help="the project checkout")
    ap.add_argument("--stage", type=Path, required=True, help="tree to stage usr/ into")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder")
    ap.add_argument("--pip", required=True, help="python with pip, for downloads and installs")
    ap.add_argument("--cache", type=Path, required=True, help="verified wheel cache")
    ap.add_argument("--target-python", default="/usr/bin/python3",
                    help="the python3 the package runs with, for the import check")
    ap.add_argument("--relock", action="store_true",
                    help="ignore packaging/bundle.lock, take the newest versions and rewrite it")
    args = ap.parse_args(argv)
    packaging_dir = Path(__file__).resolve().parent
    pip = [args.pip, "-m", "pip", "--disable-pip-version-check"]
    try:
        pyproject, deps_cfg, lock = load_inputs(args.source, packaging_dir)
        if args.relock:
            lock = {}
        project = pyproject["project"]
        roots, pins = direct_pins(project.get("dependencies", []))
        debian = {canonicalize_name(k): DebianDep(v["package"], v["version"])
                  for k, v in deps_cfg.get("debian", {}).items()}
        omit = {canonicalize_name(k): v for k, v in deps_cfg.get("omit", {}).items()}
        source = WheelSource(pip, args.cache, dict(deps_cfg.get("pure-build-env", {})))
        plan = Resolver(pins=pins, lock=lock, debian=debian, omit=omit,
                        source=source, relock=args.relock).resolve(roots)
        args.work.mkdir(parents=True, exist_ok=True)
        project_wheel = build_project_wheel(args.source, pip, args.work)
        lib = stage(plan, project_wheel, pip, args.stage)
        check_imports(lib, args.target_python)
        write_wrappers(project.get("scripts", {}), args.stage / "usr/bin")
        write_reports(plan, lib, args.work, args.stage / "usr/share/doc/gatewayd",
                      str(project["version"]))
        if args.relock:
            write_lock(plan, pins, packaging_dir / "bundle.lock")
    except BundleError as err:
        log(f"error: {err}")
        return 1
    log(f"{len(plan.bundled)} bundled, {len(plan.depends)} from Debian, "
        f"{len(plan.omitted)} omitted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
