"""A strict 2.x reader and an honest salvage (issue 37). Each file is built from the structures of
docs/FORMAT.md (header, record headers, record index, trailer; every checksum recomputed), and each
refusal is checked to be one line. Growth is measured by counting work (spans planned, bytes
scanned) at two sizes, never by timing."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch
import zstandard
from click.testing import CliRunner
from test_container import MODEL

import lfqcodec.codec.decoding as decoding
import lfqcodec.format.salvage as salvage
import lfqcodec.format.scan as scan
from lfqcodec.codec.adapt import DecoderUpdate, UpdateSpec, quantize, slots
from lfqcodec.model.checkpoint import load_model
from lfqcodec.cli.commands import main
from lfqcodec.format.container import LfqReader, StreamHeader
from lfqcodec.entropy.coder import encode_bits
from lfqcodec.base.errors import FormatError
from lfqcodec.format.header import Limits, decode_header, encode_header
from lfqcodec.format.records import RECORD, RecordEntry, ChunkEntry, index_bytes, record_header, trailer_bytes

from conftest import tiny_tokenizer


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert text in result.output and len(result.output.strip().splitlines()) == 1, result.output


@pytest.fixture(scope="module")
def tiny(tiny_model):
    loaded = load_model(tiny_model)
    return tiny_model, loaded.model_id, loaded.config.num_bits


def header(model_id: bytes, frames: int, gop: int = 5, side: int = 16, coder: int = 1,
           entropy=MODEL) -> StreamHeader:  # fmt: skip
    grid = -(-side // 8)
    return StreamHeader(model_id=model_id, width=side, height=side, frame_count=frames, fps=Fraction(25),
                        time_base=Fraction(1, 25), bits=6, model_bits=12, temporal_factor=4, spatial_factor=8, gop=gop,
                        grid_height=grid, grid_width=grid, chunk_count=-(-frames // gop), version=(2, 0), coder=coder,
                        entropy_id=entropy.model_id if entropy else bytes(16),
                        metadata={"model_name": "tiny-test"})  # fmt: skip


def bits_for(h: StreamHeader, frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = np.empty((h.bits, h.latent_frames(frames), h.grid_height, h.grid_width), dtype=bool)
    bits[:, 0] = rng.random(bits[:, 0].shape) > 0.5
    for t in range(1, bits.shape[1]):
        bits[:, t] = bits[:, t - 1] ^ (rng.random(bits[:, t].shape) < 0.05)
    return bits


def chunk(h: StreamHeader, i: int, record: int, coder: int = 1, payload: bytes | None = None, update: int = 0,
          first: int | None = None, frames: int | None = None) -> bytes:  # fmt: skip
    """A chunk record (FORMAT.md, "Records"): ``update`` is the record number + 1 of its update."""
    first = i * h.gop if first is None else first
    frames = min(h.gop, h.frame_count - first) if frames is None else frames
    bits = bits_for(h, frames, i)
    if payload is None:
        raw = np.packbits(bits.reshape(-1), bitorder="little").tobytes()
        payload = encode_bits(bits, MODEL) if coder else zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    raw_size = 0 if coder else (h.chunk_bits(frames) + 7) // 8
    latent = h.latent_frames(frames)
    return record_header(0, coder, record, i, update, first, frames, latent, raw_size, payload) + payload


def update_record(record: int, first_chunk: int, count: int, payload: bytes) -> bytes:
    return record_header(1, 0, record, first_chunk, count, 0, 0, 0, 0, payload) + payload


def build(h: StreamHeader, records: list[bytes], index: bool = True) -> bytes:
    """Header, records and (with ``index``) the record index and trailer, as FORMAT.md lays them out."""
    head = encode_header(h)
    body, rows, chunks, at = b"", [], [], len(head)
    for data in records:
        fields = RECORD.unpack_from(data)
        kind, coder, record, first_chunk, count, first, frames = fields[1:8]
        if kind == 0:
            chunks.append(ChunkEntry(first_chunk, at, len(data), first, frames, record, count - 1, coder))
        else:
            rows.append(RecordEntry(record, kind, at, len(data), first_chunk, count))
        body, at = body + data, at + len(data)
    if not index:
        return head + body
    return head + body + index_bytes(2, chunks, rows) + trailer_bytes(at)


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture
def installed(monkeypatch):
    """The test context model stands in for the installed entropy model the files name."""
    monkeypatch.setattr(decoding, "find_by_id", lambda entropy_id, models_dir: MODEL)


# --- salvage planning: time proportional to the intact chunks found --------------------------------------------


def _count_spans(monkeypatch) -> list[int]:
    spans = []
    original = salvage.chunk_spans

    def counted(*args, **kwargs):
        for span in original(*args, **kwargs):
            spans.append(span)
            yield span

    monkeypatch.setattr(decoding, "chunk_spans", counted)
    return spans


@pytest.mark.parametrize("frames", [2**24, 2**31 - 1])
def test_salvage_refuses_a_claimed_length_without_listing_its_gaps(tmp_path, tiny, monkeypatch, frames):
    """GOP 1, 8x8, only the last chunk and no index: refused in one line, no span planned."""
    path_model, model_id, _ = tiny
    h = header(model_id, frames, gop=1, side=8, coder=1, entropy=None)
    data = build(h, [chunk(h, frames - 1, 0, coder=0)], index=False)
    assert len(data) < 400
    spans = _count_spans(monkeypatch)
    result = run("decode", write(tmp_path, "x.lfq", data), tmp_path / "o.mkv", "--model", path_model, "--salvage", "-q")
    one_line(result, f"only 1 frames of 0..{frames - 1} are intact")
    assert spans == [] and not (tmp_path / "o.mkv").exists()


@pytest.mark.parametrize("frames", [2**20, 2**31 - 1])
def test_salvage_plans_only_the_spans_it_outputs(tmp_path, tiny, monkeypatch, frames):
    """Three intact chunks of a file claiming many more frames: three spans planned at either size."""
    path_model, model_id, _ = tiny
    h = header(model_id, frames, gop=1, side=8, coder=1, entropy=None)
    data = build(h, [chunk(h, i, i, coder=0) for i in range(3)], index=False)
    spans = _count_spans(monkeypatch)
    result = run("decode", write(tmp_path, "x.lfq", data), tmp_path / "o.y4m", "--model", path_model, "--salvage", "-q")
    assert result.exit_code == 0, result.output
    assert [s[0] for s in spans] == [0, 1, 2]
    assert f"frames 3-{frames - 1} after the last intact chunk left out" in result.output


# --- payloads end where their stream ends --------------------------------------------------------------------


def _reader(data: bytes) -> LfqReader:
    return LfqReader(io.BytesIO(data), entropy_model=MODEL)


def _chunk_with_payload(payload_of) -> bytes:
    h = header(bytes(16), 9, gop=9, side=24)
    good = chunk(h, 0, 0)
    payload = good[RECORD.size + 4 :]
    return build(h, [chunk(h, 0, 0, payload=payload_of(payload))])


@pytest.mark.parametrize("change, message", [
    (lambda p: p + np.random.default_rng(0).integers(0, 2**32, 64, dtype=np.uint32).tobytes(),
     "256 bytes after the end of its stream"),
    (lambda p: p + bytes(4), "4 bytes after the end of its stream"),
    (lambda p: p + np.random.default_rng(0).integers(0, 2**32, 16384, dtype=np.uint32).tobytes(),
     "chunk 0: payload of 65[0-9]* bytes exceeds its limit"),  # over 2 b L gh gw + 16 bytes: refused from the index
    (lambda p: p[:-8], "ends before its last symbol"),
    (lambda p: b"", "record 0: offset or size out of range"),
    (lambda p: b"\xff" * len(p), "range-coded payload"),
])  # fmt: skip
def test_range_coded_payload_must_be_exactly_its_stream(change, message):
    with pytest.raises(FormatError, match=message) as caught:
        list(_reader(_chunk_with_payload(change)).iter_chunk(0))
    assert "\n" not in str(caught.value)


def test_valid_range_coded_payload_reads_back():
    reader = _reader(_chunk_with_payload(lambda p: p))
    h = reader.header
    assert np.array_equal(reader.read_chunk(0), bits_for(h, 9, 0))


def test_short_payload_claiming_large_frames_is_refused_after_one_latent_frame():
    h = header(bytes(16), 33, gop=33, side=160)
    data = build(h, [chunk(h, 0, 0, payload=b"\0\0\0\1")])
    frames = _reader(data).iter_chunk(0)
    with pytest.raises(FormatError, match="ends before its last symbol"):
        next(frames)  # the first of 9 latent frames


@pytest.mark.parametrize("tail", [b"junk" * 25, zstandard.ZstdCompressor(write_checksum=True).compress(b"more")])
def test_zstd_chunk_payload_with_bytes_after_its_frame_is_refused(tail):
    h = header(bytes(16), 9, gop=9, side=24, entropy=None)
    good = chunk(h, 0, 0, coder=0)
    data = build(h, [chunk(h, 0, 0, coder=0, payload=good[RECORD.size + 4 :] + tail)])
    with pytest.raises(FormatError, match=f"{len(tail)} bytes after the end of its zstd frame"):
        list(_reader(data).iter_chunk(0))


def _update_payload() -> tuple[bytes, torch.nn.Module]:
    decoder = tiny_tokenizer().decoder
    spec = UpdateSpec()
    return quantize(spec, [torch.zeros(s.shape) for s in slots(decoder, spec)]).to_bytes(), decoder


@pytest.mark.parametrize("tail", [bytes(range(100)), zstandard.ZstdCompressor(write_checksum=True).compress(b"\0" * 9)])
def test_update_payload_with_bytes_after_its_frame_is_refused(tail):
    payload, decoder = _update_payload()
    DecoderUpdate.from_bytes(payload, decoder)  # the payload as written parses
    with pytest.raises(FormatError, match=f"{len(tail)} bytes after the end of its zstd frame"):
        DecoderUpdate.from_bytes(payload + tail, decoder)


def test_update_whose_zstd_frame_declares_a_huge_size_is_refused_before_allocating():
    payload, decoder = _update_payload()
    frame_at = 12 + 2 * struct.unpack_from("<I", payload, 8)[0]
    # RFC 8878 frame: descriptor 0xE4 (8-byte content size, single segment, checksum), size 2^40, one empty
    # last raw block, a checksum
    bomb = b"\x28\xb5\x2f\xfd\xe4" + (1 << 40).to_bytes(8, "little") + b"\x01\x00\x00" + bytes(4)
    with pytest.raises(FormatError, match="declares the wrong size"):
        DecoderUpdate.from_bytes(payload[:frame_at] + bomb, decoder)


def test_record_sizes_are_checked_against_their_caps_before_reading():
    h = header(bytes(16), 9, gop=9, side=24)
    data = build(h, [update_record(0, 0, 1, b"u" * 200_000), chunk(h, 0, 1, update=1)])

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            out = super().read(n)
            Counting.read_bytes += len(out)
            return out

    with pytest.raises(FormatError, match="payload of 200000 bytes exceeds the 100000-byte limit"):
        LfqReader(Counting(data), limits=Limits(max_update_payload=100_000))
    assert Counting.read_bytes < 150_000  # refused from the index (after the 65 KiB header read), payload never read


# --- metadata: strict JSON ----------------------------------------------------------------------------------------


def _with_metadata(text: bytes) -> bytes:
    data = encode_header(header(bytes(16), 9, gop=9))
    size = struct.unpack_from("<I", data, 12)[0]
    body = bytearray(data[: size - 4 - 4 - len(b'{"model_name":"tiny-test"}')])
    body += struct.pack("<I", len(text)) + text
    struct.pack_into("<I", body, 12, len(body) + 4)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("text, message", [
    (b'{"x": NaN}', "not valid UTF-8 JSON"), (b'{"x": Infinity}', "not valid UTF-8 JSON"),
    (b'{"x": -Infinity}', "not valid UTF-8 JSON"), (b'{"x": 1e999}', "not valid UTF-8 JSON"),
    (b'{"model_name": 5}', "model_name must be a string"), (b'{"x": ' + b"[" * 32000 + b"]" * 32000 + b"}", "nested"),
    (b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested more than 32 deep"),
])  # fmt: skip
def test_metadata_must_be_strict_json(text, message):
    with pytest.raises(FormatError, match=message) as caught:
        decode_header(_with_metadata(text))
    assert "\n" not in str(caught.value)


def test_metadata_accepts_strict_json_and_the_writer_refuses_the_rest():
    h, _ = decode_header(_with_metadata(b'{"model_name": "m", "x": [1.5, -2e300, null, {"y": true}]}'))
    assert h.metadata["x"][1] == -2e300
    with pytest.raises(ValueError):
        encode_header(replace(header(bytes(16), 9, gop=9), metadata={"x": float("nan")}))


# --- errors that are not format errors ----------------------------------------------------------------------------


def test_frame_rate_beyond_31_bits_is_a_one_line_refusal(tmp_path, tiny):
    path_model, model_id, _ = tiny
    h = replace(header(model_id, 5, side=16, entropy=None), fps=Fraction(2**31 + 1, 1))
    data = build(h, [chunk(h, 0, 0, coder=0)])
    result = run("decode", write(tmp_path, "x.lfq", data), tmp_path / "o.mkv", "--model", path_model, "-q")
    one_line(result, "frame rate 2147483649/1 cannot be written")


def test_long_model_name_is_cut_in_messages(tmp_path):
    h = replace(header(bytes(16), 5, entropy=None), metadata={"model_name": "m" * 65000})
    data = build(h, [chunk(h, 0, 0, coder=0)])
    result = run("decode", write(tmp_path, "x.lfq", data), tmp_path / "o.mkv", "-q")
    assert result.exit_code == 1 and len(result.output) < 400 and "65002 characters" in result.output


# --- honest salvage --------------------------------------------------------------------------------------------


def _four_chunks(model_id: bytes, damage=None, index: bool = True) -> bytes:
    h = header(model_id, 20)
    records = [chunk(h, i, i) for i in range(4)]
    if damage is not None:
        records[2] = damage(h, records[2])
    return build(h, records, index)


def test_salvage_decodes_past_a_chunk_it_cannot_range_decode(tmp_path, tiny, installed):
    path_model, model_id, _ = tiny
    ff = lambda h, data: chunk(h, 2, 2, payload=b"\xff" * (len(data) - RECORD.size - 4))
    path = write(tmp_path, "x.lfq", _four_chunks(model_id, ff))
    one_line(run("decode", path, tmp_path / "n.y4m", "--model", path_model, "-q"), "chunk 2: range-coded payload")
    result = run("decode", path, tmp_path / "s.y4m", "--model", path_model, "-q", "--salvage")
    assert result.exit_code == 0, result.output
    assert "frames 10-14 invented" in result.output and "chunk 2: range-coded payload" in result.output
    whole = run("decode", write(tmp_path, "g.lfq", _four_chunks(model_id)), tmp_path / "g.y4m", "--model", path_model,
                "-q")  # fmt: skip
    assert whole.exit_code == 0
    assert (tmp_path / "s.y4m").stat().st_size == (tmp_path / "g.y4m").stat().st_size


def test_salvage_with_no_usable_chunk_is_an_error(tmp_path, tiny, installed):
    path_model, model_id, _ = tiny
    h = header(model_id, 5)
    good = chunk(h, 0, 0)
    data = build(h, [chunk(h, 0, 0, payload=b"\xff" * (len(good) - RECORD.size - 4))])
    result = run("decode", write(tmp_path, "x.lfq", data), tmp_path / "o.y4m", "--model", path_model, "-q", "--salvage")
    one_line(result, "no intact chunk found")
    assert not (tmp_path / "o.y4m").exists()


@pytest.mark.parametrize("kind", [0x2, 0x7FFF])
def test_salvage_refuses_must_understand_records_as_the_reader_does(tmp_path, tiny, installed, kind):
    path_model, model_id, _ = tiny
    h = header(model_id, 10)
    data = build(h, [chunk(h, 0, 0), record_header(kind, 0, 1, 1, 1, 0, 0, 0, 0, b"new") + b"new", chunk(h, 1, 2)],
                 index=False)  # fmt: skip
    result = run("decode", write(tmp_path, "x.lfq", data), tmp_path / "o.y4m", "--model", path_model, "-q", "--salvage")
    one_line(result, f"payload type {kind}, which this reader does not know and must not skip")


def _salvage(tmp_path, path_model, data: bytes):
    result = run("decode", write(tmp_path, "x.lfq", data), tmp_path / "o.y4m", "--model", path_model, "-q", "--salvage")
    assert result.exit_code == 0, result.output
    return result.output


def test_salvage_distrusts_what_the_reader_refuses(tmp_path, tiny, installed):
    path_model, model_id, _ = tiny
    h = header(model_id, 15)  # header coder 1: coder 2 is not allowed
    records = [chunk(h, 0, 0), chunk(h, 1, 1, coder=2, payload=chunk(h, 1, 1)[RECORD.size + 4 :]),
               record_header(0, 1, 2, 2, 0, 10, 5, 2, 0, b"") + record_header(0x8000, 0, 3, 0, 0, 0, 0, 0, 0, b""),
               chunk(h, 2, 4)]
    output = _salvage(tmp_path, path_model, build(h, records, index=False))
    assert "chunk index not used" in output
    assert "coder 2, which the header does not allow: not used" in output
    assert "(chunk 2): payload of 0 bytes is impossible for it: not used" in output
    assert "payload type 0x8000 (ancillary) skipped" in output
    assert "frames 5-9 invented" in output and "frames 10-14 after the last intact chunk left out" not in output


def test_salvage_says_which_updates_it_did_not_apply(tmp_path, tiny, installed):
    path_model, model_id, _ = tiny
    h = header(model_id, 15)
    payload, _ = _update_payload()
    # chunk 0 names update record 9 (absent); update record 1 covers chunk 1, which names none; chunk 2 fine
    records = [chunk(h, 0, 0, update=10), update_record(1, 1, 1, payload), chunk(h, 1, 2), chunk(h, 2, 3)]
    output = _salvage(tmp_path, path_model, build(h, records, index=False))
    assert "chunk 0 names decoder update (record 9), which was not found: decoded without it" in output
    assert "decoder update (record 1) covers chunk 1, which names none: not applied to it" in output


# --- linear scan, bounded memory -------------------------------------------------------------------------------


def _scanned_bytes(monkeypatch, junk_kib: int) -> int:
    h = header(bytes(16), 5)
    data = build(h, [chunk(h, 0, 0)], index=False) + b"LFQR" * (junk_kib * 256)
    monkeypatch.setattr(scan, "BLOCK", 4096)

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            out = super().read(n)
            Counting.read_bytes += len(out)
            return out

    reader = LfqReader(Counting(data), salvage=True)
    assert [c.index for c in reader.chunks] == [0]
    return Counting.read_bytes, len(data)


def test_salvage_scan_reads_each_byte_about_once(monkeypatch):
    small, small_size = _scanned_bytes(monkeypatch, 64)
    large, large_size = _scanned_bytes(monkeypatch, 256)
    assert small < 1.3 * small_size + 70000 and large < 1.3 * large_size + 70000  # the header read is 65 KiB
    assert large - small < 1.3 * (large_size - small_size)  # linear: 4x the junk, about 4x the bytes


def test_salvage_decode_scans_once(tmp_path, tiny, installed, monkeypatch):
    path_model, model_id, _ = tiny
    calls = []
    original = scan.scan_records

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    import lfqcodec.format.container as container

    monkeypatch.setattr(container, "scan_records", counted)
    _salvage(tmp_path, path_model, _four_chunks(model_id, index=False))
    assert len(calls) == 1


@pytest.mark.parametrize("count", [1000, 4000])
def test_skipped_records_are_counted_not_kept(count):
    h = header(bytes(16), 5)
    data = build(h, [record_header(0x8000, 0, i, 0, 0, 0, 0, 0, 0, b"") for i in range(count)] + [chunk(h, 0, count)])
    reader = LfqReader(io.BytesIO(data), entropy_model=MODEL)
    assert reader.skipped == (count, count * 48) and len(reader.others) == 100
