"""Fuzz the ``.lfq`` 2.x reader: mutated real and hand-built files, decoder updates included.

Seeds: a real encode of the test clip by the shipped model (``--real-frames``, 0 to skip), files
written by ``LfqWriter`` with the shipped entropy model (coder 2 and its tables alone, coder 1), with
zstd bit planes, with cut chunks, with decoder updates fitted-like (quantised random changes of the
shipped decoder), with skippable records, and without an index (for salvage). Each execution takes
a seed (or two, spliced), mutates it (byte flips, interesting 32-bit values in fields, cuts, inserts,
deletions, duplicated slices, trailing junk) and, most of the time, recomputes every checksum the
format has (header, record headers and payloads, index, trailer) so that the mutation reaches the
parsers behind them. A worker process then runs on it what ``info``, ``tokens`` and ``decode
--salvage`` run before the network: the header, the index, every chunk's bits, every update parsed
against the shipped decoder, the salvage scan and plan and every chunk's bits again as salvage reads
them. Frames above 640x480 are refused as ``--max-pixels 307200`` would (valid files may ask for
minutes of work, docs/UNTRUSTED.md).

Counted: executions, what the normal reader and salvage each did (accepted, or refused in one line
with ``LfqError``), which check refused them (``refusals``: each message with its numbers taken out,
so it shows how deep the inputs reach), tracebacks (any other exception, or a refusal of more than
one line), hangs (an input over ``--hang-seconds``, 10 s) and over-allocations (worker RSS over
``--max-rss-mib``, 2 GiB). Each failing input is saved next to the results JSON, which records the
command, the machine, its CPU flags and the date.

    python benchmarks/fuzz_reader.py --executions 100000 --workers 2 --out benchmarks/results/fuzz-reader-100k.json
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import multiprocessing
import os
import platform
import re
import resource
import struct
import sys
import tempfile
import threading
import time
import traceback
import zlib
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_PIXELS = 640 * 480
INTERESTING = (0, 1, 2, 4, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 2**24, 2**31 - 1, 2**31, 2**32 - 1)


# --- seeds ----------------------------------------------------------------------------------------------------


def _bits(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    bits = np.empty(shape, dtype=bool)
    bits[:, 0] = rng.random(bits[:, 0].shape) > 0.5
    for t in range(1, shape[1]):
        bits[:, t] = bits[:, t - 1] ^ (rng.random(bits[:, t].shape) < 0.05)
    return bits


def seeds(real_frames: int, workdir: Path) -> list[bytes]:
    """Valid 2.x files of every layout the writers make, and a few hand-built ones."""
    import torch

    from lfqcodec.codec.adapt import UpdateSpec, quantize, slots
    from lfqcodec.model.checkpoint import load_model
    from lfqcodec.format.container import LfqWriter, StreamHeader
    from lfqcodec.entropy.store import load_entropy_model
    from lfqcodec.format.records import RecordEntry, record_header

    loaded = load_model(ROOT / "models" / "lfq-base.safetensors")
    entropy = load_entropy_model(ROOT / "models" / "lfq-base.entropy")
    cfg, rng = loaded.config, np.random.default_rng(0)
    out = []
    if real_frames:
        from lfqcodec.api import encode_file

        path = workdir / "real.lfq"
        encode_file(ROOT / "tests" / "data" / "carphone_33f.mp4", path, model=loaded.path, quality="low", gop=5,
                    device="cpu", overwrite=True, max_frames=real_frames)  # fmt: skip
        out.append(path.read_bytes())
    spec = UpdateSpec()
    layout = slots(loaded.tokenizer.decoder, spec)
    changes = [torch.from_numpy(rng.normal(0, 0.01, s.shape).astype(np.float32)) for s in layout]
    update = quantize(spec, changes).to_bytes(level=3)
    layouts = ((16, entropy, [9, 9, 3], False, 32), (16, entropy.base(), [5, 5], True, 24),
               (4, None, [5, 3, 5, 1], False, 40), (32, entropy, [5], True, 16))  # coder 2, 1, zstd + cuts, 32 bits
    for bits, model, frames, updates, side in layouts:
        height = side * 3 // 4
        h = StreamHeader(model_id=loaded.model_id, width=side, height=height, frame_count=0, fps=Fraction(25),
                         time_base=Fraction(1, 25), bits=bits, model_bits=cfg.num_bits, temporal_factor=4,
                         spatial_factor=8, gop=9 if max(frames) == 9 else 5, grid_height=-(-height // 8),
                         grid_width=-(-side // 8), metadata={"model_name": "lfq-base", "quality": "medium"})  # fmt: skip
        buf = io.BytesIO()
        writer = LfqWriter(buf, h, zstd_level=3, entropy_model=model)
        for i, n in enumerate(frames):
            if updates and i == 0:
                writer.write_update(update, 0, len(frames))
            if i == 1:  # an ancillary record: skipped by readers that do not know it
                head = record_header(0x8000 + i, 0, writer._records, 0, 0, 0, 0, 0, 0, b"note")
                writer.others.append(RecordEntry(writer._records, 0x8000 + i, writer._position(), len(head) + 4, 0, 0))
                writer.file.write(head + b"note")
            writer.write_chunk(_bits((bits, h.latent_frames(n), h.grid_height, h.grid_width), rng), n)
        writer.close()
        data = buf.getvalue()
        out += [data, data[: len(data) * 2 // 3]]  # whole, and cut (no index: salvage)
    return out


# --- mutation -------------------------------------------------------------------------------------------------


def fix_checksums(data: bytearray) -> bytearray:
    """Recompute every CRC the format has, where the structure around it is still recognisable."""
    if len(data) >= 16:
        size = struct.unpack_from("<I", data, 12)[0]
        if 8 <= size <= len(data):
            struct.pack_into("<I", data, size - 4, zlib.crc32(data[: size - 4]))
    at, fixes = data.find(b"LFQR"), 0
    while 0 <= at and at + 48 <= len(data) and fixes < 20000:
        payload = struct.unpack_from("<I", data, at + 36)[0]
        if at + 48 + payload <= len(data):
            struct.pack_into("<I", data, at + 40, zlib.crc32(data[at + 48 : at + 48 + payload]))
        struct.pack_into("<I", data, at + 44, zlib.crc32(data[at : at + 44]))
        at, fixes = data.find(b"LFQR", at + 1), fixes + 1
    if len(data) >= 36:
        index = struct.unpack_from("<Q", data, len(data) - 16)[0]
        if index + 12 <= len(data) - 16:
            struct.pack_into("<I", data, len(data) - 20, zlib.crc32(data[index : len(data) - 20]))
        struct.pack_into("<I", data, len(data) - 4, zlib.crc32(data[len(data) - 16 : len(data) - 4]))
    return data


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """A seed as its header and its whole records (FORMAT.md, "Records"), for structured mutations."""
    size = struct.unpack_from("<I", data, 12)[0]
    end = len(data)
    if data[-12:-8] == b"LFQT":  # a trailer: the records end where the index starts
        end = struct.unpack_from("<Q", data, len(data) - 16)[0]
    at, records = size, []
    while at + 48 <= end and data[at : at + 4] == b"LFQR":
        n = struct.unpack_from("<I", data, at + 36)[0]
        if at + 48 + n > end:
            break
        records.append(data[at : at + 48 + n])
        at += 48 + n
    return data[:size], records


def reseal(fields: list, payload: bytes, payload_crc: bool = True) -> bytes:
    """A record from its header fields and payload, with its length and checksums made to match."""
    from lfqcodec.format.records import RECORD, with_crc

    fields[10] = len(payload)
    if payload_crc:
        fields[11] = zlib.crc32(payload)
    return with_crc(RECORD.pack(*fields)) + payload


def assemble(head: bytes, records: list[bytes], index: bool) -> bytes:
    """Header, records and (with ``index``) an index and trailer that agree with the records as they are."""
    from lfqcodec.format.records import RECORD, ChunkEntry, RecordEntry, index_bytes, trailer_bytes

    chunks, others, at = [], [], len(head)
    for record in records:
        kind, coder, number, first_chunk, count, first, frames = RECORD.unpack_from(record)[1:8]
        if kind == 0:
            chunks.append(ChunkEntry(first_chunk, at, len(record), first, frames, number, count - 1, coder))
        else:
            others.append(RecordEntry(number, kind, at, len(record), first_chunk, count))
        at += len(record)
    tail = index_bytes(2, chunks, others) + trailer_bytes(at) if index else b""
    return head + b"".join(records) + tail


def mutate_records(parts: list[tuple[bytes, list[bytes]]], rng: np.random.Generator) -> bytes:
    """A structured mutation: change records (fields, payloads, order) and rebuild a matching index, so
    that the input passes the file-level checks and reaches the parsers of chunks and updates."""
    from lfqcodec.format.records import RECORD

    head, records = parts[rng.integers(len(parts))]
    head, records = bytearray(head), list(records)
    for _ in range(int(rng.integers(1, 3))):
        op = int(rng.integers(7))
        if not records:
            break
        k = int(rng.integers(len(records)))
        fields, payload = list(RECORD.unpack_from(records[k])), bytearray(records[k][48:])
        if op == 0 and payload:  # flip payload bits
            for i in rng.integers(0, len(payload), int(rng.integers(1, 9))):
                payload[i] ^= 1 << int(rng.integers(8))
        elif op == 1:  # a field to an interesting value or one off
            field = int(rng.integers(1, 10))
            width = 0xFFFF if field <= 2 else 0xFFFFFFFF
            if rng.random() < 0.5:
                fields[field] = INTERESTING[rng.integers(len(INTERESTING))] & width
            else:
                fields[field] = (fields[field] + int(rng.choice([-1, 1]))) & width
        elif op == 2 and payload:  # payload cut short
            del payload[int(rng.integers(len(payload))) :]
        elif op == 3:  # payload with bytes after its stream
            payload += rng.bytes(int(rng.integers(1, 64))) if rng.random() < 0.5 else bytes(int(rng.integers(1, 64)))
        elif op == 4:  # a record dropped, doubled or moved
            record = records.pop(k)
            if rng.random() < 0.7:
                records.insert(int(rng.integers(len(records) + 1)), record)
            if rng.random() < 0.3:
                records.insert(int(rng.integers(len(records) + 1)), record)
            continue
        elif op == 5:  # another record's payload
            donor = records[rng.integers(len(records))]
            payload = bytearray(donor[48:])
        else:  # a header byte changed, its checksum kept right
            at = int(rng.integers(16, max(17, len(head) - 4)))
            head[at] ^= 1 << int(rng.integers(8))
            struct.pack_into("<I", head, len(head) - 4, zlib.crc32(head[:-4]))
            continue
        records[k] = reseal(fields, bytes(payload), payload_crc=rng.random() < 0.95)
    return assemble(bytes(head), records, index=rng.random() < 0.85)


def mutate(corpus: list[bytes], rng: np.random.Generator) -> bytes:
    data = bytearray(corpus[rng.integers(len(corpus))])
    for _ in range(int(rng.integers(1, 4))):
        n = len(data)
        op = int(rng.integers(8))
        at = int(rng.integers(max(1, n)))
        if op == 0 and n:  # flip bytes
            for i in rng.integers(0, n, int(rng.integers(1, 9))):
                data[i] ^= 1 << int(rng.integers(8))
        elif op == 1 and n >= 4:  # an interesting value in an aligned field
            at -= at % 2
            value = INTERESTING[rng.integers(len(INTERESTING))]
            if at + 4 <= n:
                struct.pack_into("<I", data, at, value & 0xFFFFFFFF)
        elif op == 2:  # cut
            del data[at:]
        elif op == 3:  # insert random bytes
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif op == 4:  # delete a slice
            del data[at : at + int(rng.integers(1, 256))]
        elif op == 5:  # duplicate a slice (a record twice, a record moved)
            size = int(rng.integers(1, 2048))
            data[at:at] = data[at : at + size]
        elif op == 6:  # trailing junk, sometimes a run of magics
            junk = b"LFQR" * int(rng.integers(1, 4096)) if rng.random() < 0.3 else rng.bytes(int(rng.integers(1, 4096)))
            data += junk
        else:  # splice another seed's tail
            other = corpus[rng.integers(len(corpus))]
            data = data[:at] + other[int(rng.integers(max(1, len(other)))) :]
    if rng.random() < 0.7:
        data = fix_checksums(data)
    return bytes(data)


# --- the target, in a worker process --------------------------------------------------------------------------


def _reason(exc: Exception) -> str:
    """A refusal's message with its numbers taken out: which check refused the input."""
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "N", str(exc))[:80]


def _target(data: bytes, models: dict, decoder, tmp: Path) -> tuple[str, str]:
    from lfqcodec.codec.adapt import DecoderUpdate
    from lfqcodec.format.container import LfqReader
    from lfqcodec.codec.decoding import check_size
    from lfqcodec.base.errors import LfqError, ModelError
    from lfqcodec.codec.fileinfo import read_info
    from lfqcodec.format.salvage import SalvageLog

    outcome, reasons = [], []
    for salvage in (False, True):
        mode = "salvage" if salvage else "reader"
        try:
            reader = LfqReader(io.BytesIO(data), salvage=salvage)
            reader.entropy_model = models.get(reader.header.entropy_id)
            check_size(reader.header, MAX_PIXELS)
            if salvage:
                SalvageLog(reader, 0, max(1, reader.header.frame_count))
            for position in range(len(reader.chunks)):
                try:
                    update = reader.update_for_chunk(reader.chunks[position].index)
                    if update is not None:
                        DecoderUpdate.from_bytes(update[1], decoder)
                    for _ in reader.iter_chunk(position):
                        pass
                except (LfqError, ModelError):
                    if not salvage:
                        raise
            if not salvage:
                tmp.write_bytes(data)
                read_info(tmp)
            outcome.append(f"{mode} accepted")
        except LfqError as exc:
            if "\n" in str(exc):
                raise AssertionError(f"a refusal of more than one line: {str(exc)[:200]!r}") from None
            outcome.append(f"{mode} refused")
            reasons.append(f"{mode}: {_reason(exc)}")
    return ", ".join(outcome), "\n".join(reasons)


def worker(conn, tmp: str) -> None:
    from lfqcodec.model.checkpoint import load_model
    from lfqcodec.entropy.store import load_entropy_model

    loaded = load_model(ROOT / "models" / "lfq-base.safetensors")
    entropy = load_entropy_model(ROOT / "models" / "lfq-base.entropy")
    models = {entropy.model_id: entropy, entropy.base_id: entropy.base()}
    conn.send("ready")
    while True:
        data = conn.recv()
        if data is None:
            return
        started = time.time()
        try:
            result = _target(data, models, loaded.tokenizer.decoder, Path(tmp))
        except Exception:
            result = ("traceback", traceback.format_exc(limit=8))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        conn.send((*result, time.time() - started, rss))


def _rss_mib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return 0


class Worker:
    def __init__(self, tmp: str):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker, args=(child, tmp), daemon=True)
        self.process.start()
        assert self.conn.recv() == "ready"

    def run(self, data: bytes, hang: float, max_rss: int) -> tuple[str, str, float, int]:
        self.conn.send(data)
        deadline = time.time() + hang
        while not self.conn.poll(0.05):
            rss = _rss_mib(self.process.pid)
            if rss > max_rss:
                return "over-allocation", f"RSS {rss} MiB", 0.0, rss
            if time.time() > deadline or not self.process.is_alive():
                return ("hang" if self.process.is_alive() else "crash"), "", hang, rss
        return self.conn.recv()

    def stop(self) -> None:
        self.process.kill()
        self.process.join()


def _cpu() -> dict:
    info = {"processor": platform.processor(), "cores": os.cpu_count(), "flags": []}
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name") and "model" not in info:
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                info["flags"] = line.split(":", 1)[1].split()
                break
    return info


def _result(args, corpus: list[bytes], counts: dict, refusals: dict, failures: list, slowest: float, peak: int,
            done: int, seconds: float) -> dict:
    import constriction
    import torch
    import zstandard

    return {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu()},
        "versions": {"numpy": np.__version__, "zstandard": zstandard.__version__, "torch": torch.__version__,
                     "constriction": getattr(constriction, "__version__", "0.5.0 (pinned)")},  # fmt: skip
        "seeds": len(corpus),
        "executions": done,
        "complete": done == args.executions,
        "workers": args.workers,
        "structured_share": args.structured,
        "seconds": round(seconds, 1),
        "counts": counts,
        "slowest_input_seconds": round(slowest, 2),
        "peak_worker_rss_mib": peak,
        "limits": {"hang_seconds": args.hang_seconds, "max_rss_mib": args.max_rss_mib, "max_pixels": MAX_PIXELS},
        "refusals": dict(sorted(refusals.items(), key=lambda item: -item[1])),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-frames", type=int, default=5,
                        help="frames of the test clip to encode as a seed (0: none)")  # fmt: skip
    parser.add_argument("--hang-seconds", type=float, default=10.0)
    parser.add_argument("--max-rss-mib", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes run in parallel; the inputs are the same for any count")  # fmt: skip
    parser.add_argument("--structured", type=float, default=0.5,
                        help="share of inputs made by changing whole records and rebuilding the index (the rest: bytes)")  # fmt: skip
    parser.add_argument("--checkpoint-every", type=int, default=5000,
                        help="write the results so far (complete: false) every this many executions")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz-reader.json")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    failures_dir = args.out.with_suffix("")
    counts = {"traceback": 0, "hang": 0, "over-allocation": 0, "crash": 0}  # and each "reader ..., salvage ..." pair
    failures: list[dict] = []
    refusals: dict[str, int] = {}  # which check refused how many inputs, reader and salvage apart
    state = {"next": 0, "done": 0, "slowest": 0.0, "peak": 0}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = seeds(args.real_frames, Path(tmp))
        parts = [split(data) for data in corpus]
        started = time.time()

        def take() -> tuple[int, bytes] | None:
            with lock:  # inputs are drawn in order from one generator: the same inputs for any worker count
                i = state["next"]
                if i >= args.executions:
                    return None
                state["next"] += 1
                if i < len(corpus):
                    return i, corpus[i]
                structured = rng.random() < args.structured
                return i, (mutate_records(parts, rng) if structured else mutate(corpus, rng))

        def record(i: int, data: bytes, outcome: str, detail: str, seconds: float, rss: int) -> None:
            counts[outcome] = counts.get(outcome, 0) + 1
            state["slowest"], state["peak"] = max(state["slowest"], seconds), max(state["peak"], rss)
            ran = outcome.startswith("reader")
            if ran:
                for reason in filter(None, detail.split("\n")):
                    refusals[reason] = refusals.get(reason, 0) + 1
            if not ran or rss > args.max_rss_mib:
                if ran:
                    counts["over-allocation"] += 1
                name = hashlib.sha256(data).hexdigest()[:16] + ".lfq"
                failures_dir.mkdir(parents=True, exist_ok=True)
                (failures_dir / name).write_bytes(data)
                failures.append({"execution": i, "outcome": outcome, "input": str(failures_dir / name),
                                 "detail": detail[-2000:]})  # fmt: skip
            state["done"] += 1
            done = state["done"]
            if done % 500 == 0:
                print(f"{done} executions, {time.time() - started:.0f} s, {counts}", file=sys.stderr, flush=True)
            if args.checkpoint_every and done % args.checkpoint_every == 0 and done < args.executions:
                partial = _result(args, corpus, counts, refusals, failures, state["slowest"], state["peak"], done,
                                  time.time() - started)  # fmt: skip
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(partial, indent=1) + "\n")

        def drive(index: int) -> None:
            current = Worker(str(Path(tmp) / f"input-{index}.lfq"))
            while (item := take()) is not None:
                i, data = item
                outcome, detail, seconds, rss = current.run(data, args.hang_seconds, args.max_rss_mib)
                with lock:
                    record(i, data, outcome, detail, seconds, rss)
                if outcome in ("hang", "over-allocation", "crash") or rss > args.max_rss_mib // 2:
                    current.stop()
                    current = Worker(str(Path(tmp) / f"input-{index}.lfq"))
            current.stop()

        threads = [threading.Thread(target=drive, args=(k,)) for k in range(max(1, args.workers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    failures.sort(key=lambda failure: failure["execution"])
    result = _result(args, corpus, counts, refusals, failures, state["slowest"], state["peak"], state["done"],
                     time.time() - started)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "failures", "refusals")}))


if __name__ == "__main__":
    main()
