"""Framers: lines and binary frames cut from arbitrary byte streams, every bad byte counted."""

from __future__ import annotations

import pytest
from gatewayd.drivers.serial.checksums import crc8, crc16_modbus, sum16, xor8
from gatewayd.drivers.serial.framing import (
    ChecksumSpec,
    FrameFramer,
    FrameSpec,
    LengthField,
    LineFramer,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.properties import examples

# ---- lines ------------------------------------------------------------------


def test_lines_cut_at_newline_with_or_without_cr() -> None:
    f = LineFramer()
    assert f.feed(b"a\nb\r\nc") == [b"a", b"b"]
    assert f.pending == 1
    assert f.feed(b"\n") == [b"c"]
    assert (f.lines, f.oversize, f.pending, f.bytes_in) == (3, 0, 0, 7)


def test_empty_lines_are_skipped() -> None:
    f = LineFramer()
    assert f.feed(b"\n\r\n\nx\n\n") == [b"x"]
    assert f.lines == 1


def test_crlf_terminator_split_across_reads() -> None:
    f = LineFramer(terminator=b"\r\n")
    assert f.feed(b"x\r\ny\r") == [b"x"]
    assert f.feed(b"\n") == [b"y"]
    assert f.feed(b"a\rb\r\n") == [b"a\rb"]  # a lone CR is data with this terminator


def test_custom_terminator() -> None:
    f = LineFramer(terminator=b"\x03")
    assert f.feed(b"\x02W+12.5\x03\x02W+12.6\x03") == [b"\x02W+12.5", b"\x02W+12.6"]


def test_one_byte_at_a_time_equals_all_at_once() -> None:
    data = b"$GPGGA,1*00\r\nkey=1 other=2\r\n\r\nlast\r\n"
    whole = LineFramer().feed(data)
    f = LineFramer()
    pieces = [line for i in range(len(data)) for line in f.feed(data[i:i + 1])]
    assert pieces == whole == [b"$GPGGA,1*00", b"key=1 other=2", b"last"]


def test_oversize_line_is_discarded_and_counted_once() -> None:
    f = LineFramer(max_line=5)
    assert f.feed(b"123456\nok\n") == [b"ok"]
    assert (f.oversize, f.discarded_bytes, f.lines) == (1, 7, 1)


def test_a_line_of_exactly_max_line_is_kept() -> None:
    f = LineFramer(max_line=5)
    assert f.feed(b"12345\n12345\r\n") == [b"12345", b"12345"]
    assert f.oversize == 0


def test_endless_line_is_bounded_and_counted_once() -> None:
    f = LineFramer(max_line=16)
    for _ in range(100):
        assert f.feed(b"x" * 7) == []
        assert f.pending <= 17
    assert f.feed(b"\nafter\n") == [b"after"]
    assert (f.oversize, f.discarded_bytes, f.lines) == (1, 701, 1)


def test_reset_drops_the_unfinished_line() -> None:
    f = LineFramer()
    f.feed(b"partial")
    assert f.reset() == 7
    assert f.feed(b" rest\nnext\n") == [b" rest", b"next"]
    assert f.discarded_bytes == 7


def test_invalid_framer_settings() -> None:
    with pytest.raises(ValueError):
        LineFramer(terminator=b"")
    with pytest.raises(ValueError):
        LineFramer(max_line=0)


chunkings = st.lists(st.integers(1, 40), min_size=1, max_size=60)


def _split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = sizes[len(out) % len(sizes)]
        out.append(data[i:i + n])
        i += n
    return out


@pytest.mark.property
@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=400), chunkings,
       st.sampled_from([b"\n", b"\r\n", b"\x03", b"END"]), st.integers(1, 40))
def test_lines_do_not_depend_on_how_bytes_arrive(data: bytes, sizes: list[int], term: bytes,
                                                 max_line: int) -> None:
    one = LineFramer(terminator=term, max_line=max_line)
    whole = one.feed(data)
    many = LineFramer(terminator=term, max_line=max_line)
    parts = [line for chunk in _split(data, sizes) for line in many.feed(chunk)]
    assert parts == whole
    assert (many.lines, many.oversize, many.pending) == (one.lines, one.oversize, one.pending)
    for line in whole:
        assert 0 < len(line) <= max_line
        assert term not in line
    assert many.pending <= max_line + len(term) + 1


@pytest.mark.property
@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b
                                                           and not b.endswith(b"\r")),
                max_size=20), chunkings)
def test_every_line_sent_is_received(lines: list[bytes], sizes: list[int]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    f = LineFramer(max_line=30)
    got = [line for chunk in _split(data, sizes) for line in f.feed(chunk)]
    assert got == lines


# ---- frames -----------------------------------------------------------------

LEN_SPEC = FrameSpec(
    start=b"\xaa\x55",
    length=LengthField(at=2, size=1, counts="payload"),
    checksum=ChecksumSpec("crc16-modbus", start=2),
    max_frame=64,
)


def framed(payload: bytes) -> bytes:
    """A frame of LEN_SPEC: AA 55, length, payload, CRC-16/MODBUS (low byte first)."""
    body = bytes([len(payload)]) + payload
    return b"\xaa\x55" + body + crc16_modbus(body).to_bytes(2, "little")


def test_frames_are_found_between_garbage() -> None:
    f = FrameFramer(LEN_SPEC)
    a, b = framed(b"\x01\x02\x03"), framed(b"")
    assert f.feed(b"\x00\xff" + a + b"junk" + b) == [a, b]
    assert (f.frames, f.discarded_bytes, f.checksum_errors, f.pending) == (2, 6, 0, 0)


def test_a_frame_split_anywhere_is_reassembled() -> None:
    frame = framed(b"hello")
    for cut in range(1, len(frame)):
        f = FrameFramer(LEN_SPEC)
        assert f.feed(frame[:cut]) == []
        assert f.feed(frame[cut:]) == [frame]


def test_bad_checksum_is_counted_and_the_next_frame_still_found() -> None:
    bad = bytearray(framed(b"\x10\x20"))
    bad[4] ^= 0x01
    good = framed(b"\x30")
    f = FrameFramer(LEN_SPEC)
    assert f.feed(bytes(bad) + good) == [good]
    assert (f.checksum_errors, f.discarded_bytes) == (1, len(bad))


def test_a_frame_hidden_inside_a_truncated_one_is_found() -> None:
    good, later = framed(b"\x42\x43"), framed(b"\x44")
    truncated = b"\xaa\x55\x09\x01"  # claims 9 bytes of payload, then the line dropped out
    f = FrameFramer(LEN_SPEC)
    assert f.feed(truncated + good) == []  # the 14 bytes it claims are not all in yet
    assert f.feed(later) == [good, later]
    assert f.checksum_errors == 1
    assert (f.bytes_in, f.discarded_bytes) == (len(truncated + good + later), 4)


def test_length_beyond_max_frame_is_counted() -> None:
    f = FrameFramer(LEN_SPEC)
    good = framed(b"ok")
    assert f.feed(b"\xaa\x55\xf0" + good) == [good]
    assert (f.length_errors, f.discarded_bytes) == (1, 3)


def test_fixed_size_with_end_byte_and_xor() -> None:
    spec = FrameSpec(start=b"\x02", size=9, end=b"\x03", checksum=ChecksumSpec("xor", start=1))

    def frame(body: bytes) -> bytes:
        return b"\x02" + body + bytes([xor8(body)]) + b"\x03"

    a, b = frame(b"W12345"), frame(b"W00007")
    bad_end = a[:-1] + b"\x04"
    f = FrameFramer(spec)
    assert f.feed(bad_end + a + b) == [a, b]
    assert (f.end_errors, f.checksum_errors, f.discarded_bytes) == (1, 0, 9)


def test_no_start_bytes_sync_on_the_checksum() -> None:
    spec = FrameSpec(size=4, checksum=ChecksumSpec("crc8"))

    def frame(body: bytes) -> bytes:
        return body + bytes([crc8(body)])

    a, b = frame(b"\x01\x02\x03"), frame(b"\x04\x05\x06")
    f = FrameFramer(spec)
    assert f.feed(b"\x99" + a + b) == [a, b]
    assert f.discarded_bytes == 1


@pytest.mark.parametrize(("counts", "adjust", "value"), [
    ("payload", 0, 3), ("rest", 0, 5), ("frame", 0, 8), ("frame", -1, 9), ("payload", 2, 1),
])
def test_what_the_length_counts(counts: str, adjust: int, value: int) -> None:
    spec = FrameSpec(start=b"\x7e", length=LengthField(at=1, size=2, endian="little",
                                                       counts=counts, adjust=adjust),
                     checksum=ChecksumSpec("sum16", start=1, order="big"))
    body = value.to_bytes(2, "little") + b"abc"
    frame = b"\x7e" + body + sum16(body).to_bytes(2, "big")
    f = FrameFramer(spec)
    assert f.feed(frame + frame) == [frame, frame]


def test_spec_problems() -> None:
    assert FrameSpec(start=b"\x01", size=4, length=LengthField(at=1)).problems() == [
        "expected exactly one of size or length"]
    assert FrameSpec(size=4).problems() == [
        "a frame without start bytes needs a checksum to find its boundaries"]
    assert FrameSpec(start=b"\x01", size=2, checksum=ChecksumSpec("crc16-modbus")).problems() \
        == ["size 2 is smaller than the 3 bytes that the start bytes, checksum and end bytes take"]
    with pytest.raises(ValueError, match="exactly one of size or length"):
        FrameFramer(FrameSpec(start=b"\x01"))


def test_reset_drops_the_unfinished_frame() -> None:
    f = FrameFramer(LEN_SPEC)
    frame = framed(b"xyz")
    f.feed(frame[:4])
    assert f.reset() == 4
    assert f.feed(frame) == [frame]


SPECS = [
    LEN_SPEC,
    FrameSpec(start=b"\x02", size=9, end=b"\x03", checksum=ChecksumSpec("xor", start=1)),
    FrameSpec(size=4, checksum=ChecksumSpec("crc8")),
    FrameSpec(start=b"\x68", length=LengthField(at=1, counts="rest"), max_frame=40),
    FrameSpec(start=b"\xfe\xfe\xfe", length=LengthField(at=3, size=2, counts="frame"),
              checksum=ChecksumSpec("sum8"), end=b"\x16"),
]


@pytest.mark.property
@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(SPECS), st.binary(max_size=500), chunkings)
def test_arbitrary_bytes_never_raise_and_are_all_accounted_for(
        spec: FrameSpec, data: bytes, sizes: list[int]) -> None:
    one = FrameFramer(spec)
    whole = one.feed(data)
    many = FrameFramer(spec)
    parts = [fr for chunk in _split(data, sizes) for fr in many.feed(chunk)]
    assert parts == whole
    assert many.bytes_in == sum(map(len, parts)) + many.discarded_bytes + many.pending
    assert many.pending < max(spec.max_frame, len(spec.start))
    for frame in parts:
        assert frame.startswith(spec.start) and frame.endswith(spec.end)
        assert len(frame) <= spec.max_frame


@pytest.mark.property
@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.binary(max_size=20), max_size=10),
       st.lists(st.binary(max_size=6).filter(lambda b: b"\xaa" not in b), max_size=10),
       chunkings)
def test_every_frame_sent_between_garbage_is_received(
        payloads: list[bytes], junk: list[bytes], sizes: list[int]) -> None:
    gaps = junk + [b""] * len(payloads)
    data = b"".join(j + framed(p) for j, p in zip(gaps, payloads, strict=False))
    f = FrameFramer(LEN_SPEC)
    got = [fr for chunk in _split(data, sizes) for fr in f.feed(chunk)]
    assert got == [framed(p) for p in payloads]
    assert f.checksum_errors == 0
