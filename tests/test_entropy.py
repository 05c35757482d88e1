"""The context model and range coder: round trips, bit-exactness, fitting, model files."""

import io

import numpy as np
import pytest
import torch
from test_container import HEADER, _persistent_chunks, entropy_model

from lfqcodec.format.container import LfqReader, LfqWriter
from lfqcodec.entropy.coder import CONTEXTS, FittedModel, _State, decode_bits, encode_bits, sigmoid_table
from lfqcodec.training.entropy_fit import chunk_samples, fit_model
from lfqcodec.entropy.store import find_by_id, find_for_tokenizer, load_entropy_model, save_entropy_model
from lfqcodec.base.errors import ModelError


def _roundtrip(bits: np.ndarray, model: FittedModel) -> bytes:
    payload = encode_bits(bits, model)
    frames = list(decode_bits(payload, bits.shape, model))
    assert len(frames) == bits.shape[1]
    if frames:
        assert np.array_equal(np.stack(frames, axis=1), bits)
    return payload


@pytest.mark.parametrize("shape", [(6, 3, 5, 7), (6, 1, 1, 1), (3, 2, 1, 9), (6, 9, 2, 2), (1, 4, 6, 5), (2, 0, 3, 3)])
def test_roundtrip_random_bits(shape):
    rng = np.random.default_rng(sum(shape))
    _roundtrip(rng.random(shape) > rng.random(), entropy_model())


def test_roundtrip_extreme_tables_and_fewer_planes():
    """Saturated logits (every clamp taken) still code exactly; a 6-plane model codes 1..6 bits."""
    extreme = FittedModel(np.full((6, CONTEXTS), 8192, np.int32), np.tril(np.full((6, 6), -4096, np.int32), -1),
                          sigmoid_table(), bytes(16))  # fmt: skip
    bits = _persistent_chunks(1)[0]
    _roundtrip(bits, extreme)
    for b in (1, 3, 6):
        _roundtrip(bits[:b], entropy_model())
    with pytest.raises(ValueError, match="bit planes"):
        encode_bits(np.zeros((7, 1, 2, 2), bool), entropy_model())


@pytest.mark.parametrize("shape", [(6, 4, 5, 7), (6, 3, 4, 6), (3, 2, 1, 9), (6, 2, 1, 1)])
def test_encoder_whole_frame_logits_are_the_decoders(shape):
    """The encoder computes the tables' logits of a latent frame at once; the decoder plane by plane
    and pass by pass. Both give the same integers (extreme weights included)."""
    rng = np.random.default_rng(sum(shape))
    bits = rng.random(shape) > 0.5
    bits[:, 1:] = bits[:, :1] ^ (rng.random((shape[0], shape[1] - 1, *shape[2:])) < 0.2)
    extreme = FittedModel(rng.integers(-8192, 8193, (6, CONTEXTS), dtype=np.int32),
                          np.tril(rng.integers(-4096, 4097, (6, 6), dtype=np.int32), -1), sigmoid_table(), bytes(16))  # fmt: skip
    for model in (entropy_model(), extreme):
        whole, passes = _State(model, (shape[0], *shape[2:])), _State(model, (shape[0], *shape[2:]))
        for t in range(shape[1]):
            frame = whole.grid.split(bits[:, t].astype(np.uint8))
            z = whole.frame_logits(frame)
            for k in range(shape[0]):
                for phase in (0, 1):
                    passes.pairs_for(k, phase)
                    assert np.array_equal(passes.last[0], z[phase][k])
                    passes.cur[phase][k] = frame[phase][k]
            whole.cur, whole.logits = frame, passes.logits  # the adaptation's input, shown equal above
            assert np.array_equal(whole.end_frame(), passes.end_frame())
            assert np.array_equal(whole.choice, passes.choice)


def test_adaptation_lookup_is_the_tables_row_at_every_gain():
    """The adaptation reads code lengths from one table per gain, after clamping logits to
    +-Z_SATURATED: the same numbers as the cost table at each logit's row, far beyond the clamp too."""
    from lfqcodec.entropy.coder import GAINS, Z_SATURATED, _gain_costs, _table_row, cost_table

    cost = cost_table(sigmoid_table())
    z = np.concatenate([np.arange(-7000, 7001), [-(2**20), 2**20, -(2**23), 2**23]]).astype(np.int32)
    y = np.arange(z.size) % 2
    lookup = _gain_costs(cost)
    at = (np.clip(z, -Z_SATURATED, Z_SATURATED) + Z_SATURATED) * 2 + y
    for g, gain in enumerate(GAINS):
        assert np.array_equal(lookup[g, at], cost[_table_row(z, gain), y])


def test_persistent_bits_code_smaller_than_their_entropy_without_context():
    bits = np.concatenate(_persistent_chunks(2, [33, 33]), axis=1)
    model = fit_model([bits], bytes(16), max_tokens=10_000, iterations=10)
    payload = _roundtrip(bits, model)
    assert len(payload) * 8 < 0.5 * bits.size  # 5 % flips per latent frame: ~0.3 bit per bit


def test_golden_payload():
    """Pins the coder and the context model's integer rules (FORMAT.md, "Context model")."""
    import hashlib

    payload = encode_bits(_persistent_chunks(7, [33])[0], entropy_model())
    assert hashlib.sha256(payload).hexdigest()[:16] == GOLDEN_PAYLOAD


def test_same_bits_with_any_torch_thread_count():
    """Nothing in the coder depends on threads (numpy integer work; torch's thread count is irrelevant
    but checked, as the issue asks), so 1 and 2 threads give identical payloads and tokens."""
    bits = _persistent_chunks(3, [33])[0]
    model = entropy_model()
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            payload = encode_bits(bits, model)
            results.append((payload, np.stack(list(decode_bits(payload, bits.shape, model)), axis=1)))
    finally:
        torch.set_num_threads(threads)
    assert results[0][0] == results[1][0] and np.array_equal(results[0][1], results[1][1])


def test_fit_uses_the_coders_own_contexts():
    bits = _persistent_chunks(4, [9])[0]
    contexts, tokens = chunk_samples(bits)
    assert contexts.shape == tokens.shape == (bits[0].size, 6) and contexts.max() < CONTEXTS
    assert tokens.sum() == bits.sum()
    first = contexts[: 7 * 13]  # latent frame 0: P = 2, N = 0 -> ctx // 216 == 2
    assert (first // 216 == 2).all() and (contexts[7 * 13 :] // 216 < 2).all()


def test_entropy_files(tmp_path):
    model = fit_model(_persistent_chunks(5), bytes(range(16)), "fit-test", iterations=5)
    path = save_entropy_model(tmp_path / "tiny.entropy", model, ["clip.mp4"])
    loaded = load_entropy_model(path)
    assert loaded.model_id == model.model_id and np.array_equal(loaded.table, model.table)
    assert find_for_tokenizer(bytes(range(16)), tmp_path).model_id == model.model_id
    assert find_for_tokenizer(bytes(16), tmp_path) is None
    assert find_by_id(model.model_id, tmp_path).name == "fit-test"
    with pytest.raises(ModelError, match="not installed"):
        find_by_id(bytes(16), tmp_path)
    retired = tmp_path / "models"
    (retired / "retired").mkdir(parents=True)
    save_entropy_model(retired / "retired" / "old.entropy", model)  # decodes files that name it, codes none
    assert find_by_id(model.model_id, retired).name == "fit-test"
    assert find_for_tokenizer(bytes(range(16)), retired) is None
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the tensors
    (tmp_path / "bad.entropy").write_bytes(bytes(data))
    with pytest.raises(ModelError):
        load_entropy_model(tmp_path / "bad.entropy")


def test_container_file_identical_with_one_and_two_threads():
    chunks = _persistent_chunks(6)
    outputs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            buf = io.BytesIO()
            writer = LfqWriter(buf, HEADER, entropy_model=entropy_model())
            for bits, frames in zip(chunks, (9, 9, 3)):
                writer.write_chunk(bits, frames)
            writer.close()
            reader = LfqReader(io.BytesIO(buf.getvalue()), entropy_model=entropy_model())
            outputs.append((buf.getvalue(), [reader.read_chunk(i) for i in range(3)]))
    finally:
        torch.set_num_threads(threads)
    assert outputs[0][0] == outputs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(outputs[0][1], chunks))


GOLDEN_PAYLOAD = "4d556d578f37f0b3"
