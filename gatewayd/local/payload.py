"""What local clients publish, turned into Readings. Pure.

Topic layout (MQTT; a CoAP POST to ``/telemetry`` counts as a publish to
``devices/{client}``). The device of every reading is the client id:

``devices/{client}``
    a SenML pack (RFC 8428, JSON array; CBOR over CoAP). Each record's name,
    minus the pack's base name (the first ``bn``), is the point; or a flat JSON
    object of point → value, e.g. ``{"temp": 21.5, "door_open": false}``.
``devices/{client}/{point}``
    one value: a bare JSON number, ``true``/``false`` or a JSON string; or a
    JSON object that is one SenML record without a name, e.g.
    ``{"v": 21.5, "u": "Cel", "t": 1700000000.25}``.

Values without a time get the time of reception. Point names are letters,
digits, ``_``, ``-`` and ``.`` (at most 128), as for every driver.
Anything else raises MessageRefused with reason ``malformed`` (or
``too_large`` beyond ``max_records`` records) and a message naming the record.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import cbor2

from gatewayd import senml
from gatewayd.errors import ProtocolError
from gatewayd.local.errors import MessageRefused
from gatewayd.reading import Reading

TOPIC_ROOT = "devices"
POINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_RECORD_VALUE_KEYS = ("v", "vb", "vs", "vd")


def telemetry_topic(client: str) -> str:
    """The topic a whole SenML pack of ``client`` is published to (and CoAP's equivalent)."""
    return f"{TOPIC_ROOT}/{client}"


def topic_point(topic: str) -> tuple[str, str | None] | None:
    """``(device, point or None)`` of a telemetry topic; None when the topic is not
    under ``devices/`` (not telemetry: it is only relayed by the broker).

    Raises MessageRefused (malformed) for ``devices/…`` topics of another shape.
    """
    root, sep, rest = topic.partition("/")
    if root != TOPIC_ROOT:
        return None
    levels = rest.split("/") if sep else []
    if len(levels) == 1 and levels[0]:
        return levels[0], None
    if len(levels) == 2 and levels[0] and POINT_NAME.fullmatch(levels[1]):
        return levels[0], levels[1]
    raise MessageRefused(f"topic {topic!r} is not devices/{{client}} or "
                         "devices/{client}/{point}", client=None, reason="malformed")


def _refuse(client: str, text: str) -> MessageRefused:
    return MessageRefused(f"client {client}: {text}", client=client, reason="malformed")


def _scalar(value: object) -> float | int | bool | str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # 1e999, NaN, Infinity: refused here as in SenML records
    if isinstance(value, (bool, int, float, str)):
        return value
    return None


def decode(data: bytes, *, client: str, point: str | None, fmt: str, now_ns: int,
           max_records: int) -> list[Reading]:
    """The readings of one message of ``client``. Raises MessageRefused."""
    if fmt == "cbor":
        if point is not None:
            raise _refuse(client, "CBOR is accepted for SenML packs only")
        try:
            raw = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as err:
            raise _refuse(client, f"not valid CBOR: {err}") from None
        return _senml(raw, client, cbor=True, now_ns=now_ns, max_records=max_records)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # Recursion: [[[[...
        raise _refuse(client, f"not valid JSON: {err}") from None
    if point is None:
        if isinstance(doc, list):
            return _senml(doc, client, cbor=False, now_ns=now_ns, max_records=max_records)
        if isinstance(doc, dict):
            return _flat(doc, client, now_ns, max_records)
        raise _refuse(client, "expected a SenML pack (array) or an object of point values")
    if isinstance(doc, dict):
        return _record(doc, client, point, now_ns)
    value = _scalar(doc)
    if value is None:
        raise _refuse(client, f"point {point}: expected a finite number, true/false, a string "
                              "or a SenML record")
    return [Reading(client, point, value, None, now_ns)]


def _flat(doc: dict[str, Any], client: str, now_ns: int, max_records: int) -> list[Reading]:
    if not doc:
        raise _refuse(client, "empty object")
    if len(doc) > max_records:
        raise MessageRefused(f"client {client}: {len(doc)} values; at most {max_records}",
                             client=client, reason="too_large")
    out = []
    for name, raw in doc.items():
        if not POINT_NAME.fullmatch(name):
            raise _refuse(client, f"invalid point name {name!r}")
        value = _scalar(raw)
        if value is None:
            raise _refuse(client, f"point {name}: expected a finite number, true/false or a "
                                  "string")
        out.append(Reading(client, name, value, None, now_ns))
    return out


def _record(doc: dict[str, Any], client: str, point: str, now_ns: int) -> list[Reading]:
    if not any(k in doc for k in _RECORD_VALUE_KEYS):
        raise _refuse(client, f"point {point}: object has none of v, vb, vs, vd")
    if "n" in doc or "bn" in doc:
        raise _refuse(client, f"point {point}: a record on a point topic has no name")
    return _senml([{**doc, "n": point}], client, cbor=False, now_ns=now_ns, max_records=1)


def _senml(pack: object, client: str, *, cbor: bool, now_ns: int,
           max_records: int) -> list[Reading]:
    if not isinstance(pack, list) or not pack:
        raise _refuse(client, "a SenML pack must be a non-empty array of records")
    if len(pack) > max_records:
        raise MessageRefused(f"client {client}: {len(pack)} records; at most {max_records}",
                             client=client, reason="too_large")
    local = _localize(pack, client, cbor=cbor)
    try:
        if cbor:
            return senml.decode(cbor2.dumps(local), fmt="cbor", now_ns=now_ns)
        return senml.decode(json.dumps(local).encode(), fmt="json", now_ns=now_ns)
    except ProtocolError as err:
        raise _refuse(client, str(err)) from None
    except (ValueError, TypeError) as err:  # a value json/cbor2 cannot re-encode
        raise _refuse(client, f"unsupported value: {err}") from None


def _localize(pack: list[Any], client: str, *, cbor: bool) -> list[dict[Any, Any]]:
    """Records named ``{client}/{point}``: each name minus the pack's base name is the
    point (base names resolved here, so the decoder sees plain names)."""
    bn_keys: tuple[Any, ...] = ("bn", senml.CBOR_LABELS["bn"]) if cbor else ("bn",)
    n_keys: tuple[Any, ...] = ("n", senml.CBOR_LABELS["n"]) if cbor else ("n",)
    current_bn = ""
    pack_bn: str | None = None
    out: list[dict[Any, Any]] = []
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise _refuse(client, f"SenML record {i}: expected an object")
        rec = dict(rec)
        for key in bn_keys:
            if key in rec:
                bn = rec.pop(key)
                if not isinstance(bn, str):
                    raise _refuse(client, f"SenML record {i}: 'bn' must be a string")
                current_bn = bn
                if pack_bn is None:
                    pack_bn = bn
        name = ""
        for key in n_keys:
            if key in rec:
                n = rec.pop(key)
                if not isinstance(n, str):
                    raise _refuse(client, f"SenML record {i}: 'n' must be a string")
                name = n
        full = current_bn + name
        point = full[len(pack_bn):] if pack_bn and full.startswith(pack_bn) else full
        if not POINT_NAME.fullmatch(point):
            raise _refuse(client, f"SenML record {i}: invalid point name {point!r}")
        rec["n"] = f"{client}/{point}"
        if cbor:
            rec = {_label(k): v for k, v in rec.items()}
        elif isinstance(rec.get("v"), float) and not math.isfinite(rec["v"]):
            raise _refuse(client, f"SenML record {i}: non-finite value")
        out.append(rec)
    return out


def _label(key: Any) -> Any:
    """CBOR records keep integer labels; the name we set is the text label 'n'."""
    return senml.CBOR_LABELS["n"] if key == "n" else key
