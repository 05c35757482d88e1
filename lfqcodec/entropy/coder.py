"""Context model and range coder for the token bits of a ``.lfq`` 2.0 chunk (``docs/FORMAT.md``,
"Context model"). Probabilities come from integer arithmetic only, so the encoder and every decoder
compute the same ones bit for bit on any machine; the coder is ``constriction``'s range coder.

Coding order inside a chunk of bits ``b x T' x gh x gw``: latent frame ``t`` by latent frame, inside
it bit plane ``k = 0 .. b-1``, inside it two checkerboard passes (``(y + x) % 2 == 0``, then ``== 1``),
inside a pass raster order. Each pass's probabilities are computed at once with numpy integer
operations from what the decoder already has:

- ``P``: the same bit in the previous latent frame (2 when ``t == 0``),
- ``N``: how many of its 8 neighbours there are 1,
- ``X``: evidence from the current latent frame's 4 direct neighbours: in the first latent frame,
  how many are 1 (second pass; 5 in the first pass); later, how many changed since the previous
  latent frame (second pass: bit ``k``; first pass: any lower bit; 5 for ``k = 0``),
- ``D``: how many of this token's lower bits (``j < k``) differ from the previous latent frame's
  token (at most 3; 0 when ``t == 0``),
- the lower bits themselves, through a fitted weight per pair ``(k, j)``.

The model, :class:`FittedModel`, is a logistic model with integer tables fitted by
``lfqcodec train-entropy`` and stored in a ``.entropy`` file bound to the tokenizer
(:mod:`lfqcodec.entropy.store`). The context of plane ``k`` only depends on planes ``<= k``, so one
model serves every quality (a file of ``b`` bits uses its first ``b`` planes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import constriction
import numpy as np

from .grid import Grid
from .net import NetState, ResidualNet

PROB_BITS = 16  # probabilities of a 1 are q / 2^16, q in 1 .. 2^16 - 1
Z_MAX = 4096  # logits in 1/256 nat, clamped to -Z_MAX .. Z_MAX before the sigmoid table
Z_SCALE = 256
CONTEXTS = 3 * 9 * 6 * 4  # P x N x X x D
_FREE = (1 << 24) - 2  # constriction's 24-bit precision minus one slot per symbol
GAINS = np.array([16, 12, 20, 24, 32, 40, 48, 64], dtype=np.int32)  # logit gains in 1/16, 1.0 first
SPENT_STRIDE = 4  # coder 2 adapts on every 4th symbol of each pass
Z_SATURATED = -(-Z_MAX * 16 // int(GAINS.min()))  # |z| beyond this gives the end row of the tables at every gain


def sigmoid_table() -> np.ndarray:
    """``q(z) = clamp(round(2^16 / (1 + exp(-z / 256))), 1, 2^16 - 1)`` for ``z = -Z_MAX .. Z_MAX``
    (uint16). Computed once when a model is fitted and stored in its file: decoders read it, they
    never recompute it, so no floating point is on the decoding path."""
    z = np.arange(-Z_MAX, Z_MAX + 1, dtype=np.float64) / Z_SCALE
    return np.clip(np.round(65536 / (1 + np.exp(-z))), 1, 65535).astype(np.uint16)


def cost_table(sigmoid: np.ndarray) -> np.ndarray:
    """``cost[z + Z_MAX, y]``: the code length of bit ``y`` at logit ``z``, ``-log2 P(y)`` in 1/256
    bit, rounded (uint16 ``(2 * Z_MAX + 1) x 2``). Like the sigmoid table, computed when a model is
    fitted and stored with it."""
    q = sigmoid.astype(np.float64) / 65536
    cost = np.stack([-np.log2(1 - q), -np.log2(q)], axis=1) * 256
    return np.clip(np.round(cost), 0, 65535).astype(np.uint16)


@dataclass(frozen=True)
class FittedModel:
    """Logistic context model with integer parameters (``docs/FORMAT.md``, "Fitted model").

    ``table``: int32 ``B x CONTEXTS`` (1/256 nat), ``weights``: int32 ``B x B`` (row ``k`` uses
    columns ``j < k``), ``sigmoid``: uint16 ``2 * Z_MAX + 1``, ``cost``: uint16 ``(2 * Z_MAX + 1) x 2``
    (:func:`cost_table`). ``tokenizer_id`` binds the model to the tokenizer whose tokens it was
    fitted on."""

    table: np.ndarray
    weights: np.ndarray
    sigmoid: np.ndarray
    tokenizer_id: bytes
    name: str = ""
    cost: np.ndarray | None = None  # derived from ``sigmoid`` when not given
    net: ResidualNet | None = None  # coder 2's residual network (FORMAT.md, "Coder 2")

    def __post_init__(self) -> None:
        if self.cost is None:
            object.__setattr__(self, "cost", cost_table(self.sigmoid))

    @property
    def bits(self) -> int:
        return self.table.shape[0]

    @property
    def model_id(self) -> bytes:
        """The id a file names: :attr:`base_id` without a network, else the network's digest over it."""
        return self.base_id if self.net is None else self.net.digest(self.base_id)

    @property
    def coder(self) -> int:
        """The record coder this model codes chunks with: 1 (tables) or 2 (tables and network)."""
        return 1 if self.net is None else 2

    def base(self) -> FittedModel:
        """The tables alone (coder 1), whose id is :attr:`base_id`."""
        return self if self.net is None else replace(self, net=None)

    @property
    def base_id(self) -> bytes:
        """First 16 bytes of the SHA-256 of the tables and the tokenizer id (FORMAT.md)."""
        digest = hashlib.sha256(self.tokenizer_id)
        for name in ("cost", "sigmoid", "table", "weights"):
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
            digest.update(array.tobytes())
        return digest.digest()[:16]


EntropyModel = FittedModel  # the one kind in format 2.0


class _State:
    """Coding state of one chunk: the previous latent frame and the current one, pass by pass."""

    def __init__(self, model: EntropyModel, shape: tuple[int, int, int]):
        self.bits, h, w = shape
        self.model = model
        self.grid = Grid(h, w)
        if model.bits < self.bits:
            raise ValueError(f"entropy model of {model.bits} bit planes for tokens of {self.bits} bits")
        self.table = model.table.astype(np.float32)
        self.weights = model.weights.astype(np.float32)
        self.pairs = _coder_probabilities(model.sigmoid)
        self.cost_flat = model.cost.astype(np.int32).reshape(-1)  # cost[row, y] at row * 2 + y
        self.gain_costs = _gain_costs(model.cost)
        self.net = None if model.net is None else NetState(model.net, self.bits, self.grid.positions,
                                                            self.grid.neighbours[1], (h, w))  # fmt: skip
        modes = 1 if self.net is None else 2  # coder 2: the network's logit (mode 0) or the tables' (mode 1)
        self.choice = np.zeros(self.bits, dtype=np.int64)  # per plane: mode * len(GAINS) + gain index
        self.stride = 1 if self.net is None else SPENT_STRIDE  # coder 2 counts every 4th symbol of each pass
        self.spent = np.zeros((self.bits, modes * GAINS.size), dtype=np.int64)  # code length per choice
        # signs of the current frame's lower planes (row k - 1 is written before plane k reads rows < k)
        self.signs = [np.zeros((self.bits, idx.size), dtype=np.float32) for idx in self.grid.positions]
        self.prev: list[np.ndarray] | None = None
        self.begin_frame(None)

    def begin_frame(self, prev_spatial: np.ndarray | None) -> None:
        self.base = self.grid.pn(prev_spatial, self.bits)  # P * 9 + N
        self.prev = None if prev_spatial is None else self.grid.split(prev_spatial)
        self.cur = [np.zeros((self.bits, idx.size), dtype=np.uint8) for idx in self.grid.positions]
        self.diff = [np.zeros(idx.size, dtype=np.int32) for idx in self.grid.positions]
        self.logits: list[np.ndarray] = []  # per (k, phase): modes x counted symbols, logits before the gain
        if self.net is not None:
            self.net.begin_frame(prev_spatial)

    def contexts(self, k: int, phase: int) -> np.ndarray:
        """Context of each position of ``phase`` in plane ``k`` (FORMAT.md, "Contexts")."""
        if phase == 0 and k and self.prev is not None:
            for p in (0, 1):
                self.diff[p] += self.cur[p][k - 1] != self.prev[p][k - 1]
        if self.prev is None:  # first latent frame: X = 1s among the decoded neighbours
            x = 5 if phase == 0 else self.grid.count(1, self.cur[0][k])
        elif phase == 0:  # X = neighbours whose lower bits changed since the previous frame
            x = 5 if k == 0 else self.grid.count(0, self.diff[1] > 0)
        else:  # X = decoded neighbours whose bit k changed
            x = self.grid.count(1, self.cur[0][k] != self.prev[0][k])
        return (self.base[phase][k].astype(np.int32) * 6 + x) * 4 + np.minimum(self.diff[phase], 3)

    def pairs_for(self, k: int, phase: int) -> np.ndarray:
        """Coder weights (``n x 2`` float32) of the symbols of plane ``k``, ``phase`` (the decoder's path)."""
        z = np.take(self.table[k], self.contexts(k, phase))
        if k:  # sum_j w[k, j] * (2 * bit_j - 1): small integers, exact in float32
            signs = self.signs[phase]
            np.multiply(self.cur[phase][k - 1], 2, out=signs[k - 1], casting="unsafe")
            signs[k - 1] -= 1
            z += self.weights[k, :k] @ signs[:k]
        return np.take(self.pairs, self.rows_for(k, phase, z.astype(np.int32)), axis=0)

    def rows_for(self, k: int, phase: int, z: np.ndarray) -> np.ndarray:
        """The table rows that code plane ``k``'s ``phase`` symbols, from the tables' logits ``z``
        (int32) and, with coder 2, the network's; records what the adaptation counts and, in
        ``last``, the logits of each mode (``None`` where not computed)."""
        if self.net is not None and phase == 0 and k:
            self.net.plane_done(k - 1, [self.cur[0][k - 1], self.cur[1][k - 1]])
        mode, gain = divmod(int(self.choice[k]), GAINS.size)
        if self.net is None:
            self.last = [z]
            self.logits.append(z[None])
        elif mode == 0:  # the network codes this plane: its correction for every symbol
            self.last = [z + self.net.correction(k, phase, z, self.cur[0][k] if phase else None), z]
            self.logits.append(np.stack([logits[:: self.stride] for logits in self.last]))  # what the adaptation counts
        else:  # the tables code it: the network's logit only where the adaptation counts
            counted = z[:: self.stride]
            net = counted + self.net.correction(k, phase, z, self.cur[0][k] if phase else None, self.stride)
            self.last = [None, z]
            self.logits.append(np.stack([net, counted]))
        return _table_row(self.last[mode], GAINS[gain])

    def frame_logits(self, frame: list[np.ndarray]) -> list[np.ndarray]:
        """The tables' logits (int32 ``bits x n`` per pass) of a whole latent frame whose bits are all
        known (uint8 ``bits x n`` per pass), as the encoder has them: the integers :meth:`pairs_for`
        computes plane by plane and pass by pass."""
        bits = self.bits
        diff = [np.zeros(f.shape, dtype=np.int32) for f in frame]  # lower planes j < k that changed
        if self.prev is None:
            x = [np.full(frame[0].shape, 5, dtype=np.int32), self.grid.count_planes(1, frame[0])]
        else:
            changed = [f != p for f, p in zip(frame, self.prev)]
            for d, c in zip(diff, changed):
                np.cumsum(c[:-1], axis=0, out=d[1:])
            x = [np.full(frame[0].shape, 5, dtype=np.int32), self.grid.count_planes(1, changed[0])]
            x[0][1:] = self.grid.count_planes(0, diff[1][1:] > 0)
        lower = np.tril(self.weights[:bits, :bits], -1)  # row k: columns j < k
        z = []
        for phase in (0, 1):
            contexts = (self.base[phase].astype(np.int32) * 6 + x[phase]) * 4 + np.minimum(diff[phase], 3)
            logits = np.take_along_axis(self.table[:bits], contexts, axis=1)
            logits += lower @ (frame[phase].astype(np.float32) * 2 - 1)  # small integers, exact in float32
            z.append(logits.astype(np.int32))
        return z

    def code_lengths(self, rows: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """``cost[rows, bits]`` (int32, 1/256 bit): the code lengths of ``bits`` at those table rows."""
        rows *= 2
        rows += bits
        return np.take(self.cost_flat, rows)

    def end_frame(self) -> np.ndarray:
        """The finished latent frame (bool ``bits x h x w``); prepares the next."""
        frame = np.zeros((self.bits, self.grid.h * self.grid.w), dtype=bool)
        for phase, idx in enumerate(self.grid.positions):
            frame[:, idx] = self.cur[phase]
        if self.prev is not None and self.logits:  # adapt each plane's choice (FORMAT.md, "Context model")
            for k in range(self.bits):  # plane by plane: memory of one plane's logits
                z = np.concatenate(self.logits[2 * k : 2 * k + 2], axis=1)  # modes x n
                y = np.concatenate([self.cur[0][k, :: self.stride], self.cur[1][k, :: self.stride]])
                np.clip(z, -Z_SATURATED, Z_SATURATED, out=z)
                z += Z_SATURATED
                z *= 2
                z += y
                cost = np.take(self.gain_costs, z, axis=1)  # gains x modes x n
                self.spent[k] += cost.sum(axis=2, dtype=np.int64).T.reshape(-1)  # mode * 8 + gain
            self.choice = np.argmin(self.spent, axis=1)
        frame = frame.reshape(self.bits, self.grid.h, self.grid.w)
        self.begin_frame(frame)
        return frame


def _coder_probabilities(q: np.ndarray) -> np.ndarray:
    """``m x 2`` float32 weights that constriction quantises to exactly ``P(1) = q * 2^8 / 2^24``
    (FORMAT.md, "Range coder"): integers summing to ``2^24 - 2``, one slot added to each."""
    one = q.astype(np.int64) * 256 - 1
    return np.stack([_FREE - one, one], axis=1).astype(np.float32)


def _gain_costs(cost: np.ndarray) -> np.ndarray:
    """``out[g, (z + Z_SATURATED) * 2 + y] = cost[row(z, GAINS[g]), y]`` for ``|z| <= Z_SATURATED``
    (int32): the adaptation's code lengths at every gain by one lookup (logits clamped to
    ``+-Z_SATURATED`` first, which changes no row)."""
    z = np.arange(-Z_SATURATED, Z_SATURATED + 1, dtype=np.int32)
    rows = _table_row(z[None, :], GAINS[:, None])  # gains x z
    return cost[rows].astype(np.int32).reshape(GAINS.size, -1)


_HALF = _coder_probabilities(np.array([1 << 15]))  # the coder-2 mode symbol: P(1) = 1/2


def _table_row(z: np.ndarray, gain=GAINS[0]) -> np.ndarray:
    """``clamp(floor(z * gain / 16), -Z_MAX, Z_MAX) + Z_MAX`` (a new int32 array, ``gain`` may broadcast):
    the row of the sigmoid and cost tables for logits ``z`` at that gain (FORMAT.md, "Context model")."""
    if np.ndim(gain) == 0 and gain == 16:  # the plain logit (the usual case): no product needed
        row = np.maximum(z, -Z_MAX)
    else:
        row = z * gain
        row >>= 4
        np.maximum(row, -Z_MAX, out=row)  # two ufuncs: np.clip's wrapper costs more than the work here
    np.minimum(row, Z_MAX, out=row)
    row += Z_MAX
    return row


def _family():
    return constriction.stream.model.Categorical(perfect=False)


def _coded_rows(bits: np.ndarray, model: EntropyModel) -> tuple[_State, list[np.ndarray], list[np.ndarray], int | None]:
    """The table rows and symbols of every pass of a chunk's bits (bool ``b x T' x gh x gw``), in
    coding order (latent frame, plane, pass), and coder 2's mode of latent frames 0 and 1 (``None``
    for coder 1). Every bit is known here, so the tables' logits of each latent frame are computed at
    once (:meth:`_State.frame_logits`); the network runs pass by pass, as in the decoder."""
    b, latent, h, w = bits.shape
    state = _State(model, (b, h, w))
    rows, symbols, early = [], [], []  # early: coder 2's (candidate logits, bits) of latent frames 0 and 1
    for t in range(latent):
        frame = state.grid.split(bits[:, t].astype(np.uint8))
        z = state.frame_logits(frame)
        state.cur = frame
        for k in range(b):
            for phase in (0, 1):
                coded = state.rows_for(k, phase, z[phase][k])
                if state.net is not None and t <= 1:
                    early.append((state.last, frame[phase][k]))
                else:
                    rows.append(coded)
                    symbols.append(frame[phase][k])
        state.end_frame()
    mode = None
    if early:
        spent = [sum(int(state.code_lengths(_table_row(c[m]), y).sum()) for c, y in early) for m in (0, 1)]
        mode = int(spent[1] < spent[0])
        rows = [_table_row(c[mode]) for c, _ in early] + rows
        symbols = [y for _, y in early] + symbols
    return state, rows, symbols, mode


def encode_bits(bits: np.ndarray, model: EntropyModel) -> bytes:
    """Range-code a chunk's bits (bool ``b x T' x gh x gw``); returns the payload (32-bit words,
    little-endian). Coder 2 first codes the mode of latent frames 0 and 1, whichever of the network
    and the tables codes them in fewer bits (FORMAT.md, "Coder 2")."""
    state, rows, symbols, mode = _coded_rows(bits, model)
    pairs = np.take(state.pairs, np.concatenate(rows), axis=0) if rows else np.zeros((0, 2), np.float32)
    if mode is not None:
        pairs, symbols = np.concatenate([_HALF, pairs]), [np.array([mode], np.uint8)] + symbols
    encoder = constriction.stream.queue.RangeEncoder()
    if symbols:
        encoder.encode(np.concatenate(symbols).astype(np.int32), _family(), pairs)
    return encoder.get_compressed().astype("<u4").tobytes()


def coded_logits(bits: np.ndarray, model: EntropyModel) -> np.ndarray:
    """The logit (int32, 1/256 nat, after the gain and the clamp) with which :func:`encode_bits`
    codes each bit of ``bits`` (bool ``b x T' x gh x gw``), in the bits' layout: bit ``i`` costs
    about ``softplus(-z_i * (2 b_i - 1) / 256) / ln 2`` bits, and flipping it alone (its contexts
    fixed) changes that by ``z_i * (1 - 2 b_i) / (256 ln 2)``. For rate-aware encoder decisions."""
    b, latent, h, w = bits.shape
    state, rows, _, _ = _coded_rows(bits, model)
    out = np.zeros((b, latent, h * w), dtype=np.int32)
    passes = iter(rows)
    for t in range(latent):
        for k in range(b):
            for idx in state.grid.positions:
                out[k, t, idx] = next(passes) - Z_MAX
    return out.reshape(b, latent, h, w)


def decode_bits(payload: bytes, shape: tuple[int, int, int, int], model: EntropyModel) -> Iterator[np.ndarray]:
    """Inverse of :func:`encode_bits`, one latent frame at a time: yields bool ``b x gh x gw``
    ``T'`` times. Garbage in gives garbage bits, never more work than ``shape`` says.

    The payload must be exactly the stream :func:`encode_bits` makes of the bits it decodes to
    (FORMAT.md, "Payloads end where their stream ends"): the decoded symbols are coded again as they
    come, a payload shorter than that stream is refused as soon as it is known (the decoder would be
    reading zeros past its end), and one with other or further words before the last latent frame
    is given out."""
    b, latent, h, w = shape
    if len(payload) % 4:
        raise ValueError("range-coded payload is not a whole number of 32-bit words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    encoder = constriction.stream.queue.RangeEncoder()
    state = _State(model, (b, h, w))
    family = _family()

    def coded(pairs: np.ndarray) -> np.ndarray:
        symbols = np.asarray(decoder.decode(family, pairs), dtype=np.int32)
        encoder.encode(symbols, family, pairs)
        return symbols

    if state.net is not None and latent:
        state.choice[:] = int(coded(_HALF)[0]) * GAINS.size  # mode of latent frames 0 and 1
    for t in range(latent):
        for k in range(b):
            for phase in (0, 1):
                state.cur[phase][k] = coded(state.pairs_for(k, phase)).astype(np.uint8)
        if encoder.num_words() > len(words):
            raise ValueError("range-coded payload ends before its last symbol")
        frame = state.end_frame()
        if t == latent - 1:
            _check_stream_end(words, encoder.get_compressed())
        yield frame


def _check_stream_end(words: np.ndarray, stream: np.ndarray) -> None:
    """The payload's words must be the re-coded stream, no more, no fewer."""
    if len(stream) > len(words):
        raise ValueError("range-coded payload ends before its last symbol")
    if len(stream) < len(words) and np.array_equal(words[: len(stream)], stream):
        raise ValueError(f"range-coded payload has {4 * (len(words) - len(stream))} bytes after the end of its stream")
    if not np.array_equal(words, stream):
        raise ValueError("range-coded payload is not the stream of the bits it decodes to")
