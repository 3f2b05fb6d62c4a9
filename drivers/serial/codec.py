"""The serial pipeline without I/O: bytes in, records of points out, every outcome counted.

:class:`SerialCodec` joins a framer (lines or binary frames) to a record
decoder (NMEA, a line parser or a frame parser). ``feed`` never raises: a
record that cannot be used is counted by what went wrong and remembered in
``last_error``. :func:`build_codec` makes the pipeline the options describe.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gatewayd.errors import ProtocolError

from .checksums import ChecksumError
from .config import SerialOptions
from .framing import FrameFramer, LineFramer
from .nmea import UNITS, NmeaDecoder
from .parsers import (
    CsvLineParser,
    FrameParser,
    JsonLineParser,
    KvLineParser,
    Point,
    RecordParser,
    RegexLineParser,
)

Decode = Callable[[bytes], "list[Point] | None"]  # None: a valid record that is not used


class SerialCodec:
    """Framer plus decoder, with the counters the driver reports."""

    def __init__(self, framer: LineFramer | FrameFramer, decode: Decode, *,
                 on_reset: Callable[[], None] | None = None) -> None:
        self.framer = framer
        self._decode = decode
        self._on_reset = on_reset
        self.records_ok = 0
        self.checksum_errors = 0  # of records (NMEA); frame checksums are the framer's
        self.parse_errors = 0
        self.ignored = 0
        self.last_error: str | None = None

    def feed(self, data: bytes) -> list[list[Point]]:
        """The points of every record that ``data`` completes (a record may have none)."""
        out: list[list[Point]] = []
        for record in self.framer.feed(data):
            try:
                points = self._decode(record)
            except ChecksumError as err:
                self.checksum_errors += 1
                self.last_error = str(err)
                continue
            except ProtocolError as err:
                self.parse_errors += 1
                self.last_error = str(err)
                continue
            if points is None:
                self.ignored += 1
                continue
            self.records_ok += 1
            out.append(points)
        return out

    @property
    def errors(self) -> int:
        """Every bad outcome so far (a growing number means trouble on the line)."""
        f = self.framer
        framing = (f.oversize if isinstance(f, LineFramer)
                   else f.checksum_errors + f.length_errors + f.end_errors)
        return self.checksum_errors + self.parse_errors + framing

    def reset(self) -> int:
        """Forget partial records and decoder state; returns the bytes dropped."""
        if self._on_reset is not None:
            self._on_reset()
        return self.framer.reset()

    def stats(self) -> dict[str, int]:
        """The counters shown in the device's status (the same keys for every protocol)."""
        f = self.framer
        out = {
            "bytes_in": f.bytes_in,
            "lines_ok": 0,
            "frames_ok": 0,
            "checksum_errors": self.checksum_errors,
            "parse_errors": self.parse_errors,
            "ignored": self.ignored,
            "oversize_discarded": 0,
            "length_errors": 0,
            "end_errors": 0,
            "discarded_bytes": f.discarded_bytes,
        }
        if isinstance(f, LineFramer):
            out.update(lines_ok=self.records_ok, oversize_discarded=f.oversize)
        else:
            out.update(frames_ok=self.records_ok, length_errors=f.length_errors,
                       end_errors=f.end_errors,
                       checksum_errors=self.checksum_errors + f.checksum_errors)
        return out


def _nmea_decode(decoder: NmeaDecoder) -> Decode:
    def decode(line: bytes) -> list[Point] | None:
        found = decoder.decode(line)
        if found is None:
            return None
        return [Point(name, value, UNITS[name]) for name, value in found]

    return decode


def build_parser(options: SerialOptions) -> RecordParser:
    """The record parser of a ``lines`` or ``frames`` device."""
    if options.protocol == "frames":
        return FrameParser(options.fields)
    ps = options.parser
    enc = options.lines.encoding
    if ps is None or ps.kind == "json":
        return JsonLineParser(options.fields, encoding=enc)
    if ps.kind == "csv":
        return CsvLineParser(options.fields, delimiter=ps.delimiter, encoding=enc)
    if ps.kind == "kv":
        return KvLineParser(options.fields, separator=ps.separator, assign=ps.assign,
                            encoding=enc)
    return RegexLineParser(re.compile(ps.pattern), options.fields, encoding=enc)


def build_codec(options: SerialOptions) -> SerialCodec:
    """The pipeline the options describe (options are validated: this does not fail)."""
    if options.protocol == "frames":
        assert options.frame is not None
        return SerialCodec(FrameFramer(options.frame), build_parser(options).parse)
    framer = LineFramer(terminator=options.lines.terminator, max_line=options.lines.max_line)
    if options.protocol == "nmea":
        n = options.nmea
        assert n is not None
        decoder = NmeaDecoder(sentences=n.sentences, points=n.points,
                              once_per_epoch=n.once_per_epoch,
                              require_checksum=n.require_checksum)
        return SerialCodec(framer, _nmea_decode(decoder), on_reset=decoder.reset)
    return SerialCodec(framer, build_parser(options).parse)
