"""NMEA 0183: pure parsing of sentences into position and fix points. No I/O.

:func:`parse_sentence` checks one sentence (``$GPGGA,...*hh``) and splits it;
:func:`sentence_points` turns a supported sentence into named values;
:class:`NmeaDecoder` does both for a stream of lines and, by default, reports
each point once per fix epoch (a receiver repeats latitude in GGA, RMC and GLL
of the same second).

Supported sentences, from any talker (GP, GN, GL, GA, BD, GB, GQ, GI, ...):
GGA, RMC, VTG, GSA and GLL. Points and their SenML units:

========== ====== ================================================
point      unit   from
========== ====== ================================================
latitude   lat    GGA, RMC, GLL (degrees, south negative)
longitude  lon    GGA, RMC, GLL (degrees, west negative)
altitude   m      GGA (above mean sea level)
speed      m/s    RMC, VTG (over ground)
course     deg    RMC, VTG (over ground, true north)
fix_quality       GGA (0 none, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, ...)
satellites        GGA (satellites used)
hdop              GGA, GSA
pdop, vdop        GSA
fix_type          GSA (1 none, 2 2D, 3 3D)
========== ====== ================================================

Position, speed and course are given only while the sentence says the fix is
valid (GGA quality > 0, RMC/GLL status ``A``, a mode other than ``N``); DOPs
only with a fix (GGA quality > 0, GSA 2D or 3D).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gatewayd.errors import ProtocolError

from .checksums import ChecksumError, xor8

SUPPORTED = ("GGA", "RMC", "VTG", "GSA", "GLL")
POINTS = ("latitude", "longitude", "altitude", "speed", "course", "fix_quality",
          "satellites", "hdop", "pdop", "vdop", "fix_type")
UNITS: dict[str, str | None] = {
    "latitude": "lat",
    "longitude": "lon",
    "altitude": "m",
    "speed": "m/s",
    "course": "deg",
    "fix_quality": None,
    "satellites": None,
    "hdop": None,
    "pdop": None,
    "vdop": None,
    "fix_type": None,
}
KNOT = 1852.0 / 3600.0  # m/s
_TIMED = {"GGA": 0, "RMC": 0, "GLL": 4}  # index of the UTC time field
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_INTEGER = re.compile(r"\d+")
_ADDRESS = re.compile(r"[A-Z][A-Z0-9]{2,5}")
MAX_SENTENCE = 1024  # longer input is not NMEA (the standard allows 82 characters)

NmeaValue = float | int


@dataclass(frozen=True)
class Sentence:
    """One checked sentence: talker (``GP``; ``P`` for proprietary), type and fields."""

    talker: str
    type: str
    fields: tuple[str, ...]


def format_sentence(body: str) -> bytes:
    """``body`` (``GPGGA,...``) as a complete sentence with checksum and CR LF."""
    raw = body.encode("ascii")
    return b"$" + raw + b"*" + f"{xor8(raw):02X}".encode() + b"\r\n"


def parse_sentence(line: bytes | str, *, require_checksum: bool = True) -> Sentence:
    """Check and split one sentence.

    Text before the last ``$`` (or ``!``) is ignored: it is what is left of a
    sentence cut by line noise. Raises ChecksumError when the checksum is wrong,
    ProtocolError when the text is not an NMEA sentence (or has no checksum and
    ``require_checksum`` is set).
    """
    if len(line) > MAX_SENTENCE:
        raise ProtocolError(f"not an NMEA sentence: {len(line)} characters")
    raw = line.encode("latin-1", "replace") if isinstance(line, str) else line
    start = max(raw.rfind(b"$"), raw.rfind(b"!"))
    if start < 0:
        raise ProtocolError("not an NMEA sentence: no '$'")
    try:
        text = raw[start + 1:].decode("ascii").strip()
    except UnicodeDecodeError as err:
        raise ProtocolError("not an NMEA sentence: non-ASCII bytes") from err
    body, star, given = text.partition("*")
    if star:
        if len(given) != 2 or not all(c in "0123456789ABCDEFabcdef" for c in given):
            raise ProtocolError(f"invalid NMEA checksum field {given[:8]!r}")
        expected = int(given, 16)
        actual = xor8(body.encode("ascii"))
        if expected != actual:
            raise ChecksumError(
                f"NMEA checksum mismatch: sentence says {expected:02X}, content gives {actual:02X}",
                expected=expected, actual=actual)
    elif require_checksum:
        raise ProtocolError("NMEA sentence without checksum")
    address, *fields = body.split(",")
    if not _ADDRESS.fullmatch(address):
        raise ProtocolError(f"invalid NMEA address field {address[:8]!r}")
    if address.startswith("P"):
        return Sentence("P", address[1:], tuple(fields))
    if len(address) != 5:
        raise ProtocolError(f"invalid NMEA address field {address!r}")
    return Sentence(address[:2], address[2:], tuple(fields))


def _need(s: Sentence, count: int) -> None:
    if len(s.fields) < count:
        raise ProtocolError(
            f"{s.talker}{s.type}: {len(s.fields)} fields, expected at least {count}")


def _number(s: Sentence, i: int) -> float | None:
    text = s.fields[i]
    if not text:
        return None
    if not _NUMBER.fullmatch(text):
        raise ProtocolError(f"{s.talker}{s.type} field {i + 1}: invalid number {text[:16]!r}")
    return float(text)


def _integer(s: Sentence, i: int) -> int | None:
    text = s.fields[i]
    if not text:
        return None
    if not _INTEGER.fullmatch(text):
        raise ProtocolError(f"{s.talker}{s.type} field {i + 1}: invalid integer {text[:16]!r}")
    return int(text)


def _coordinate(s: Sentence, i: int, hemispheres: str, limit: int) -> float | None:
    """``ddmm.mmmm`` / ``dddmm.mmmm`` and a hemisphere letter into signed degrees."""
    text, hemi = s.fields[i], s.fields[i + 1]
    if not text and not hemi:
        return None
    what = f"{s.talker}{s.type} field {i + 1}"
    if hemi not in hemispheres or not _NUMBER.fullmatch(text) or text[0] in "+-":
        raise ProtocolError(f"{what}: invalid coordinate {text[:16]!r} {hemi[:4]!r}")
    dot = text.find(".")
    whole = text if dot < 0 else text[:dot]
    if len(whole) < 3:
        raise ProtocolError(f"{what}: invalid coordinate {text[:16]!r}")
    degrees = int(whole[:-2])
    minutes = float(text[len(whole) - 2:])
    if minutes >= 60.0 or degrees + minutes / 60.0 > limit:
        raise ProtocolError(f"{what}: coordinate out of range {text[:16]!r}")
    value = degrees + minutes / 60.0
    return -value if hemi == hemispheres[1] else value


def _position(s: Sentence, i: int) -> dict[str, NmeaValue]:
    out: dict[str, NmeaValue] = {}
    lat = _coordinate(s, i, "NS", 90)
    lon = _coordinate(s, i + 2, "EW", 180)
    if lat is not None and lon is not None:
        out["latitude"] = lat
        out["longitude"] = lon
    return out


def _gga(s: Sentence) -> dict[str, NmeaValue]:
    _need(s, 9)
    out: dict[str, NmeaValue] = {}
    quality = _integer(s, 5)
    satellites = _integer(s, 6)
    hdop = _number(s, 7)
    position = _position(s, 1)
    altitude = _number(s, 8)
    if quality is not None:
        out["fix_quality"] = quality
    if satellites is not None:
        out["satellites"] = satellites
    if quality:
        if hdop is not None:
            out["hdop"] = hdop
        out.update(position)
        if altitude is not None and (len(s.fields) < 10 or s.fields[9] in ("M", "")):
            out["altitude"] = altitude
    return out


def _motion(s: Sentence, knots_at: int, course_at: int, valid: bool) -> dict[str, NmeaValue]:
    knots = _number(s, knots_at)
    course = _number(s, course_at)
    out: dict[str, NmeaValue] = {}
    if valid and knots is not None:
        out["speed"] = knots * KNOT
    if valid and course is not None:
        out["course"] = course
    return out


def _rmc(s: Sentence) -> dict[str, NmeaValue]:
    _need(s, 9)
    status = s.fields[1]
    if status not in ("A", "V"):
        raise ProtocolError(f"{s.talker}RMC: invalid status {status[:4]!r}")
    mode = s.fields[11] if len(s.fields) > 11 else ""
    valid = status == "A" and mode != "N"
    position = _position(s, 2)
    motion = _motion(s, 6, 7, valid)
    return {**position, **motion} if valid else {}


def _vtg(s: Sentence) -> dict[str, NmeaValue]:
    _need(s, 8)
    if s.fields[1] not in ("T", "") or s.fields[5] not in ("N", "") or s.fields[7] not in ("K", ""):
        raise ProtocolError(f"{s.talker}VTG: invalid unit letters")
    mode = s.fields[8] if len(s.fields) > 8 else ""
    valid = mode != "N"
    out = _motion(s, 4, 0, valid)
    kmh = _number(s, 6)
    if valid and "speed" not in out and kmh is not None:
        out["speed"] = kmh / 3.6
    return out


def _gsa(s: Sentence) -> dict[str, NmeaValue]:
    _need(s, 17)
    if s.fields[0] not in ("M", "A", ""):
        raise ProtocolError(f"{s.talker}GSA: invalid selection mode {s.fields[0][:4]!r}")
    fix_type = _integer(s, 1)
    dops = {"pdop": _number(s, 14), "hdop": _number(s, 15), "vdop": _number(s, 16)}
    out: dict[str, NmeaValue] = {}
    if fix_type is not None:
        out["fix_type"] = fix_type
    if fix_type is not None and fix_type >= 2:
        out.update({k: v for k, v in dops.items() if v is not None})
    return out


def _gll(s: Sentence) -> dict[str, NmeaValue]:
    _need(s, 6)
    status = s.fields[5]
    if status not in ("A", "V"):
        raise ProtocolError(f"{s.talker}GLL: invalid status {status[:4]!r}")
    mode = s.fields[6] if len(s.fields) > 6 else ""
    position = _position(s, 0)
    return position if status == "A" and mode != "N" else {}


_PARSERS = {"GGA": _gga, "RMC": _rmc, "VTG": _vtg, "GSA": _gsa, "GLL": _gll}


def sentence_points(s: Sentence) -> dict[str, NmeaValue] | None:
    """The points a sentence gives; None when its type is not supported.

    Raises ProtocolError when a field of a supported sentence is malformed.
    """
    parse = _PARSERS.get(s.type) if s.talker != "P" else None
    return parse(s) if parse is not None else None


class NmeaDecoder:
    """Lines in, ``(point, value)`` pairs out, for a stream of NMEA sentences.

    With ``once_per_epoch`` (the default) a point already given in the current
    fix epoch is not given again: an epoch starts when a timed sentence (GGA,
    RMC, GLL) carries a new UTC time, or, without a time, when the same timed
    sentence type comes round again.
    """

    def __init__(self, *, sentences: Iterable[str] = SUPPORTED,
                 points: Iterable[str] = POINTS, once_per_epoch: bool = True,
                 require_checksum: bool = True) -> None:
        self.sentences = frozenset(sentences)
        self.points = frozenset(points)
        self.once_per_epoch = once_per_epoch
        self.require_checksum = require_checksum
        self._epoch_time = ""
        self._epoch_types: set[str] = set()
        self._given: set[str] = set()

    def reset(self) -> None:
        """Forget the current epoch (after the port was reopened)."""
        self._epoch_time = ""
        self._epoch_types.clear()
        self._given.clear()

    def decode(self, line: bytes) -> list[tuple[str, NmeaValue]] | None:
        """The points of one line; None when the sentence is valid but not used.

        Raises ChecksumError or ProtocolError.
        """
        s = parse_sentence(line, require_checksum=self.require_checksum)
        if s.type not in self.sentences:
            return None
        found = sentence_points(s)
        if found is None:
            return None
        if self.once_per_epoch:
            self._track_epoch(s)
        out = [(k, v) for k, v in found.items() if k in self.points and k not in self._given]
        if self.once_per_epoch:
            self._given.update(k for k, _ in out)
        return out

    def _track_epoch(self, s: Sentence) -> None:
        at = _TIMED.get(s.type)
        if at is None:
            return
        stamp = s.fields[at]
        if stamp:
            new = stamp != self._epoch_time
        else:
            new = s.type in self._epoch_types
        if new:
            self._given.clear()
            self._epoch_types.clear()
            self._epoch_time = stamp
        self._epoch_types.add(s.type)
