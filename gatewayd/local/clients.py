"""The clients file: who may connect locally, with which key, to which topics.

One TOML file (default ``/etc/gatewayd/clients.toml``, mode 0640, owner root,
group of the daemon's user), managed with ``gatewayctl clients``::

    [clients.thermo-1]
    key = "3q2-7w..."                 # base64url, 32 random bytes: a secret
    publish = ["devices/{client}", "devices/{client}/+"]
    subscribe = []
    signed = false                    # true: every message must be a signed JWS
    created = "2025-01-01T00:00:00Z"

``{client}`` in a filter stands for the client's id. Reading is pure
(:func:`parse_clients`) plus one blocking read (:func:`load_clients`), which
refuses a file that other users may read or anyone but its owner may write.
Writes (:func:`save_clients`) are atomic and keep the file's owner, group and
mode. A :class:`ClientRecord` never shows its key in ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import re
import secrets
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd.errors import ConfigProblem
from gatewayd.local import acl
from gatewayd.local.errors import ClientsFileError

CLIENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
KEY_BYTES = 32
MIN_KEY_BYTES = 16
FILE_MODE = 0o640
DEFAULT_PUBLISH = ("devices/{client}", "devices/{client}/+")
DEFAULT_SUBSCRIBE: tuple[str, ...] = ()
_KNOWN_KEYS = ("key", "publish", "subscribe", "signed", "created")


@dataclass(frozen=True)
class ClientRecord:
    """One local client. ``publish``/``subscribe`` have ``{client}`` already expanded."""

    name: str
    key: bytes = field(repr=False)
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    signed: bool = False
    created: str | None = None
    publish_template: tuple[str, ...] = DEFAULT_PUBLISH  # as written, for the file
    subscribe_template: tuple[str, ...] = DEFAULT_SUBSCRIBE


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def decode_key(text: str) -> bytes:
    """Raises ValueError when ``text`` is not base64url of at least 16 bytes."""
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a key of {len(key)} bytes; expected at least {MIN_KEY_BYTES}")
    return key


def make_record(name: str, *, key: bytes, publish: tuple[str, ...] = DEFAULT_PUBLISH,
                subscribe: tuple[str, ...] = DEFAULT_SUBSCRIBE, signed: bool = False,
                created: str | None = None) -> ClientRecord:
    return ClientRecord(name=name, key=key, publish=acl.expand(publish, name),
                        subscribe=acl.expand(subscribe, name), signed=signed, created=created,
                        publish_template=tuple(publish), subscribe_template=tuple(subscribe))


def name_problem(name: str) -> str | None:
    if not CLIENT_NAME.fullmatch(name):
        return (f"invalid client name {name!r}; expected up to 64 letters, digits, '_', '-' "
                "or '.'")
    return None


def _filters(value: object, where: str, problems: list[ConfigProblem], file: str
             ) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(ConfigProblem(file, where, "expected an array of topic filters"))
        return ()
    for i, item in enumerate(value):
        why = acl.filter_problem(item.replace(acl.CLIENT_PLACEHOLDER, "x"))
        if why:
            problems.append(ConfigProblem(file, f"{where}[{i}]", f"invalid filter {item!r}: {why}"))
    return tuple(value)


def _record(name: str, raw: object, file: str, problems: list[ConfigProblem]
            ) -> ClientRecord | None:
    where = f"clients.{name}"
    why = name_problem(name)
    if why:
        problems.append(ConfigProblem(file, where, why))
        return None
    if not isinstance(raw, dict):
        problems.append(ConfigProblem(file, where, "expected a table"))
        return None
    before = len(problems)
    for k in raw:
        if k not in _KNOWN_KEYS:
            problems.append(ConfigProblem(file, f"{where}.{k}",
                                          f"unknown key; expected one of {', '.join(_KNOWN_KEYS)}"))
    key = b""
    text = raw.get("key")
    if not isinstance(text, str):
        problems.append(ConfigProblem(file, f"{where}.key", "missing required key (base64url)"))
    else:
        try:
            key = decode_key(text)
        except ValueError as err:  # the message never quotes the key
            problems.append(ConfigProblem(file, f"{where}.key", f"invalid key: {err}"))
    publish = _filters(raw.get("publish", list(DEFAULT_PUBLISH)), f"{where}.publish",
                       problems, file)
    subscribe = _filters(raw.get("subscribe", list(DEFAULT_SUBSCRIBE)), f"{where}.subscribe",
                         problems, file)
    signed = raw.get("signed", False)
    if not isinstance(signed, bool):
        problems.append(ConfigProblem(file, f"{where}.signed", "expected true or false"))
    created = raw.get("created")
    if created is not None and not isinstance(created, str):
        created = str(created)
    if len(problems) != before:
        return None
    return make_record(name, key=key, publish=publish, subscribe=subscribe,
                       signed=bool(signed), created=created)


def parse_clients(data: Mapping[str, Any], *, file: str) -> dict[str, ClientRecord]:
    """The clients of a decoded clients file. Raises ClientsFileError listing every problem."""
    problems: list[ConfigProblem] = []
    for k in data:
        if k != "clients":
            problems.append(ConfigProblem(file, k, "unknown key; expected clients"))
    table = data.get("clients", {})
    out: dict[str, ClientRecord] = {}
    if not isinstance(table, dict):
        problems.append(ConfigProblem(file, "clients", "expected a table"))
    else:
        for name, raw in table.items():
            rec = _record(name, raw, file, problems)
            if rec is not None:
                out[name] = rec
    if problems:
        raise ClientsFileError(problems)
    return out


def check_permissions(path: Path, st: os.stat_result) -> None:
    """Refuse a file that others may read or that anyone but the owner may write."""
    if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ClientsFileError([ConfigProblem(
            str(path), "", f"unsafe permissions {stat.S_IMODE(st.st_mode):04o}: the file holds "
            f"keys; expected {FILE_MODE:04o} (chmod {FILE_MODE:o} {path})")])


def load_clients(path: Path, *, missing_ok: bool = False) -> dict[str, ClientRecord]:
    """Read and validate the clients file (blocking: call through asyncio.to_thread).

    Raises ClientsFileError (missing, unreadable, unsafe permissions, invalid).
    """
    try:
        with path.open("rb") as fh:
            check_permissions(path, os.fstat(fh.fileno()))
            data = tomllib.load(fh)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ClientsFileError([ConfigProblem(
            str(path), "", "file not found; create it with 'gatewayctl clients add NAME'")]
        ) from None
    except PermissionError:
        raise ClientsFileError([ConfigProblem(str(path), "", "permission denied")]) from None
    except tomllib.TOMLDecodeError as err:
        raise ClientsFileError([ConfigProblem(str(path), "", f"invalid TOML: {err}")]) from None
    except IsADirectoryError:
        raise ClientsFileError([ConfigProblem(str(path), "", "is a directory")]) from None
    return parse_clients(data, file=str(path))


def _toml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _toml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(_toml_str(i) for i in items) + "]"


def render_clients(clients: Mapping[str, ClientRecord]) -> str:
    lines = ["# gatewayd local clients: edit with 'gatewayctl clients'. The keys are secrets:",
             f"# keep this file mode {FILE_MODE:04o}, owner root, group of the daemon's user.", ""]
    for name in sorted(clients):
        rec = clients[name]
        lines += [
            f"[clients.{_toml_str(name)}]",
            f"key = {_toml_str(encode_key(rec.key))}",
            f"publish = {_toml_list(rec.publish_template)}",
            f"subscribe = {_toml_list(rec.subscribe_template)}",
            f"signed = {'true' if rec.signed else 'false'}",
        ]
        if rec.created:
            lines.append(f"created = {_toml_str(rec.created)}")
        lines.append("")
    return "\n".join(lines)


def save_clients(path: Path, clients: Mapping[str, ClientRecord]) -> None:
    """Write the file atomically (temp file, fsync, rename), mode 0640, keeping the
    owner and group of the file it replaces. Raises OSError."""
    text = render_clients(clients)
    old: os.stat_result | None
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        if old is not None and (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.fchown(fd, old.st_uid, old.st_gid)
            except PermissionError:
                pass  # not root: the file keeps our ownership, as any edit would
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def utc_now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
