"""Coder 2: the context model's residual network (round trips, exactness, golden bytes, model files,
fitting, and files of the tables alone still decoding)."""

import hashlib
import io
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import replace

import numpy as np
import pytest
from test_container import HEADER, _persistent_chunks, net_model

from lfqcodec.entropy import grid as entropy_grid, net as entropy_net
from lfqcodec.format.container import LfqReader, LfqWriter
from lfqcodec.entropy.coder import coded_logits, decode_bits, encode_bits
from lfqcodec.training.entropy_fit import fit_model
from lfqcodec.entropy.net import NetState, ResidualNet
from lfqcodec.entropy.netfit import fit_net
from lfqcodec.entropy.store import find_by_id, load_entropy_model, save_entropy_model
from lfqcodec.base.errors import FormatError, ModelError
from lfqcodec.format.records import RECORD


def _roundtrip(bits, model) -> bytes:
    payload = encode_bits(bits, model)
    assert np.array_equal(np.stack(list(decode_bits(payload, bits.shape, model)), axis=1), bits)
    return payload


@pytest.mark.parametrize("shape", [(6, 3, 5, 7), (6, 1, 1, 1), (3, 2, 1, 9), (6, 9, 2, 2), (1, 4, 6, 5)])
def test_roundtrip_random_bits(shape):
    rng = np.random.default_rng(sum(shape))
    _roundtrip(rng.random(shape) > rng.random(), net_model())


def test_roundtrip_saturated_network():
    """Weights at the exactness bounds (every clamp of the hidden layer taken) still code exactly."""
    model = net_model()
    net = model.net
    big = replace(net, w_prev=np.full_like(net.w_prev, 20000), w_cur=np.full_like(net.w_cur, -20000),
                  w_logit=np.full_like(net.w_logit, 1000), out=np.full_like(net.out, 120), shifts=np.array([3, 0], np.int32))  # fmt: skip
    assert big.problems() is None
    _roundtrip(_persistent_chunks(2, [33])[0], replace(model, net=big))
    over = replace(big, w_logit=np.full_like(net.w_logit, 4000))
    assert "too large" in over.problems()


@pytest.mark.parametrize("shape", [(6, 4, 6, 8), (6, 3, 5, 10), (6, 3, 1, 2), (3, 2, 7, 4)])
def test_even_widths_slice_as_the_general_path_gathers(shape, monkeypatch):
    """Grids of even width take the network's 3 x 3 windows by slicing; the bytes are those of the
    general (gathering) path, and do not depend on the bands the previous frame is worked in."""
    rng = np.random.default_rng(sum(shape))
    bits = rng.random(shape) > 0.5
    bits[:, 1:] = bits[:, :1] ^ (rng.random((shape[0], shape[1] - 1, *shape[2:])) < 0.1)
    sliced = _roundtrip(bits, net_model())
    monkeypatch.setattr(NetState, "SLICING", False)
    monkeypatch.setattr(entropy_grid.Grid, "SLICING", False)
    assert encode_bits(bits, net_model()) == sliced
    monkeypatch.setattr(entropy_net, "BAND", 64)  # the previous frame's product in many small bands
    assert encode_bits(bits, net_model()) == sliced
    monkeypatch.setattr(NetState, "SLICING", True)
    monkeypatch.setattr(entropy_grid.Grid, "SLICING", True)
    assert encode_bits(bits, net_model()) == sliced


def test_tables_chosen_where_the_network_is_wrong():
    """A network that always says "1" loses to the tables: the stream's mode symbol picks the tables
    for latent frames 0 and 1, the planes keep choosing them (the decoder then evaluates the network
    only where the adaptation counts), and the payload stays near the tables' own (within 15 % on
    this 7 x 13 grid, where coder 2's adaptation counts only a quarter of 91 tokens per latent frame)."""
    model = net_model()
    wrong = replace(model, net=replace(model.net, out=np.zeros_like(model.net.out),
                                       out_bias=np.full_like(model.net.out_bias, 1 << 20), shifts=np.array([6, 0], np.int32)))  # fmt: skip
    assert wrong.net.problems() is None
    bits = _persistent_chunks(8, [33])[0]
    coded = _roundtrip(bits, wrong)
    assert len(coded) <= 1.15 * len(encode_bits(bits, model.base()))


def test_golden_payload():
    """Pins coder 2's integer rules (FORMAT.md, "Coder 2")."""
    payload = encode_bits(_persistent_chunks(7, [33])[0], net_model())
    assert hashlib.sha256(payload).hexdigest()[:16] == GOLDEN_NET_PAYLOAD


def test_same_payload_with_one_and_two_blas_threads():
    """The network's float32 products are exact integer sums, so the BLAS thread count (and the
    machine) cannot change a probability: a fresh process with 1 and with 2 threads gives the same
    bytes as this one."""
    code = ("import hashlib, sys; sys.path.insert(0, 'tests'); from test_container import net_model, _persistent_chunks;"
            "from lfqcodec.entropy.coder import encode_bits;"
            "print(hashlib.sha256(encode_bits(_persistent_chunks(7, [33])[0], net_model())).hexdigest()[:16])")  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == GOLDEN_NET_PAYLOAD


def test_hostile_payload_with_valid_checksums():
    """Random words in place of a coder-2 chunk, with its checksums made valid, give bounded garbage
    bits or a one-line FormatError: never another exception, never more work than the header says."""
    chunks = _persistent_chunks(5)
    model = net_model()
    buf = io.BytesIO()
    writer = LfqWriter(buf, HEADER, entropy_model=model)
    for bits, frames in zip(chunks, (9, 9, 3)):
        writer.write_chunk(bits, frames)
    writer.close()
    data = buf.getvalue()
    entry = LfqReader(io.BytesIO(data), entropy_model=model).chunks[0]
    rng = np.random.default_rng(3)
    outcomes = set()
    for _ in range(20):
        fields = list(RECORD.unpack_from(data, entry.offset))
        payload = rng.integers(0, 2**32, fields[-2] // 4, dtype=np.uint64).astype("<u4").tobytes()
        fields[-1] = zlib.crc32(payload)
        head = RECORD.pack(*fields)
        head += struct.pack("<I", zlib.crc32(head))
        damaged = data[: entry.offset] + head + payload + data[entry.offset + len(head) + len(payload) :]
        reader = LfqReader(io.BytesIO(damaged), entropy_model=model)
        try:
            outcomes.add(reader.read_chunk(0).shape)
        except FormatError as exc:
            assert "range-coded payload is invalid" in str(exc)
            outcomes.add("refused")
    assert outcomes <= {(6, 3, 7, 13), "refused"}


def test_file_2_1_and_older_files_with_the_same_tables(tmp_path):
    """A model with a network writes 2.1 (coder 2); its file also serves 2.0 files coded with its
    tables alone, found by the tables' id."""
    chunks = _persistent_chunks(5)
    model = net_model()
    files = {}
    for name, coder_model in (("2.1", model), ("2.0", model.base())):
        buf = io.BytesIO()
        writer = LfqWriter(buf, HEADER, entropy_model=coder_model)
        for bits, frames in zip(chunks, (9, 9, 3)):
            writer.write_chunk(bits, frames)
        writer.close()
        files[name] = buf.getvalue()
    save_entropy_model(tmp_path / "m.entropy", model, ["clip.mp4"])
    for name, data in files.items():
        reader = LfqReader(io.BytesIO(data))
        assert reader.version == name and reader.header.coder == (2 if name == "2.1" else 1)
        reader.entropy_model = find_by_id(reader.header.entropy_id, tmp_path)
        assert {c.coder for c in reader.chunks} == {2 if name == "2.1" else 1}
        assert all(np.array_equal(reader.read_chunk(i), bits) for i, bits in enumerate(chunks))
    reader = LfqReader(io.BytesIO(files["2.1"]), entropy_model=model.base())
    with pytest.raises(ModelError, match="needs entropy model"):
        reader.read_chunk(0)


def test_entropy_file_v2(tmp_path):
    model = net_model()
    path = save_entropy_model(tmp_path / "net.entropy", model)
    loaded = load_entropy_model(path)
    assert loaded.model_id == model.model_id != model.base_id == loaded.base_id
    assert all(np.array_equal(getattr(loaded.net, n), getattr(model.net, n)) for n in ResidualNet.ARRAYS)
    assert find_by_id(model.base_id, tmp_path).net is None
    bad = replace(model, net=replace(model.net, w_logit=np.full_like(model.net.w_logit, 4096)))
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    tensors["net.w_logit"] = bad.net.w_logit
    with safe_open(str(path), framework="np") as handle:
        metadata = handle.metadata()
    save_file(tensors, str(tmp_path / "bad.entropy"), metadata=metadata)
    with pytest.raises(ModelError, match="residual network invalid"):
        load_entropy_model(tmp_path / "bad.entropy")


def test_fit_net_codes_smaller_than_the_tables_alone():
    """On a pan (each latent frame is the previous one moved one token to the right: what the 3 x 3
    inputs see and the tables' neighbour count does not), the fitted network beats its tables."""
    rng = np.random.default_rng(11)
    chunks = []
    for _ in range(3):
        bits = np.empty((6, 9, 12, 16), dtype=bool)
        bits[:, 0] = rng.random((6, 12, 16)) > 0.5
        for t in range(1, 9):
            bits[:, t] = np.roll(bits[:, t - 1], 1, axis=2) ^ (rng.random((6, 12, 16)) < 0.03)
            bits[:, t, :, 0] = rng.random((6, 12)) > 0.5
        chunks.append(bits)
    tables = fit_model(chunks[:2], bytes(16), max_tokens=10_000, iterations=10)
    model = fit_net(chunks[:2], tables, hidden=8, epochs=40, samples_per_chunk=20_000, qualities=(6,))
    assert model.net.problems() is None
    with_net = len(_roundtrip(chunks[2], model))
    assert with_net < 0.75 * len(encode_bits(chunks[2], tables))


GOLDEN_NET_PAYLOAD = "d024b67d2b8071f5"


@pytest.mark.parametrize("coder", [1, 2])
def test_coded_logits_give_the_payloads_code_length(coder):
    model = net_model(bits=6)
    model = model if coder == 2 else model.base()
    bits = _persistent_chunks(3)[0]
    z = coded_logits(bits, model)
    assert z.shape == bits.shape and z.dtype == np.int32
    ideal = model.cost[z + 4096, bits.astype(np.int64)].sum() / 256 / 8  # cost: 1/256 bit per (row, bit)
    assert abs(len(encode_bits(bits, model)) - ideal) <= 8 + 0.002 * ideal  # the coder's end words
