"""The residual network of coder 2 (``docs/FORMAT.md``, "Context model", "Coder 2"): a one-hidden-layer
integer network that corrects the fitted tables' logit of each bit from a wider context.

For bit ``(k, t, y, x)`` in pass ``p`` it sees, as signs (``+1`` for a 1, ``-1`` for a 0, ``0`` for
unknown or outside the grid):

- every known plane ``j < b`` of the previous latent frame in the 3 x 3 around ``(y, x)``,
- the current latent frame's planes ``j < k`` (decoded) in the 3 x 3 around ``(y, x)``,
- in pass 1, plane ``k``'s 4 direct neighbours (decoded in pass 0),
- the fitted tables' logit ``z0`` (clamped to ``+-4096``), and a bias per plane, pass and
  first-latent-frame flag.

Every weight is an integer and so is every input, so each sum is an integer; the file's bounds keep
each partial sum under ``2^24`` in magnitude, where float32 is exact, so the big products run as
float32 BLAS matrix products and still give the same integers on every machine and thread count
(the hidden layer's weights are pre-scaled by ``2^-S``: a power of two keeps every value exact).
The hidden layer is ``clamp(floor(a / 2^S), 0, 2047)``, the correction ``floor((out[k] . h +
out_bias[k]) / 2^P)`` in 1/256 nat.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .grid import neighbour_copies

EXACT = 1 << 24  # float32 represents every integer of smaller magnitude
BAND = 1 << 22  # values (16 MiB) of the previous latent frame's per-offset sums (9 H x positions) per band
HIDDEN_MAX = 2047
Z_INPUT = 4096  # |z0| fed to the network is clamped to this
OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # 3 x 3 order: d = (dy + 1) * 3 + dx + 1
NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # own-plane inputs in pass 1: up, down, left, right


@dataclass(frozen=True)
class ResidualNet:
    """Integer parameters (FORMAT.md, "Coder 2"). ``H`` hidden units, ``B`` planes."""

    w_prev: np.ndarray  # int16 H x B x 9
    w_cur: np.ndarray  # int16 H x B x 9
    w_own: np.ndarray  # int16 H x 4
    w_logit: np.ndarray  # int32 H
    bias: np.ndarray  # int32 B x 2 x 2 x H (plane, pass, first latent frame)
    out: np.ndarray  # int16 B x H
    out_bias: np.ndarray  # int32 B
    shifts: np.ndarray  # int32 [S, P]

    ARRAYS: ClassVar[tuple[str, ...]] = ("w_prev", "w_cur", "w_own", "w_logit", "bias", "out", "out_bias", "shifts")
    DTYPES: ClassVar[dict] = {"w_prev": np.int16, "w_cur": np.int16, "w_own": np.int16, "w_logit": np.int32, "bias": np.int32,
              "out": np.int16, "out_bias": np.int32, "shifts": np.int32}  # fmt: skip

    @property
    def hidden(self) -> int:
        return self.w_own.shape[0]

    @property
    def bits(self) -> int:
        return self.out.shape[0]

    def problems(self) -> str | None:
        """Why these arrays are not a valid network (shapes, types, the exactness bounds), or ``None``."""
        h, b = self.hidden, self.bits
        shapes = {"w_prev": (h, b, 9), "w_cur": (h, b, 9), "w_own": (h, 4), "w_logit": (h,), "bias": (b, 2, 2, h),
                  "out": (b, h), "out_bias": (b,), "shifts": (2,)}  # fmt: skip
        for name, shape in shapes.items():
            array = getattr(self, name)
            if array.shape != shape or array.dtype != self.DTYPES[name]:
                return f"{name} has shape {array.shape} {array.dtype}, expected {shape} {np.dtype(self.DTYPES[name])}"
        if not 1 <= h <= 256:
            return f"{h} hidden units (1..256)"
        s, p = (int(v) for v in self.shifts)
        if not (0 <= s <= 30 and 0 <= p <= 30):
            return f"shifts {s}, {p} out of range 0..30"
        l1 = (np.abs(self.w_prev.astype(np.int64)).sum(axis=(1, 2)) + np.abs(self.w_cur.astype(np.int64)).sum(axis=(1, 2))
              + np.abs(self.w_own.astype(np.int64)).sum(axis=1) + Z_INPUT * np.abs(self.w_logit.astype(np.int64))
              + np.abs(self.bias.astype(np.int64)).max(axis=(0, 1, 2)))  # fmt: skip
        if l1.max() >= EXACT:
            return "hidden-unit weights too large for exact float32 sums"
        if (np.abs(self.out.astype(np.int64)).sum(axis=1) * HIDDEN_MAX + np.abs(self.out_bias.astype(np.int64))).max() >= EXACT:
            return "output weights too large for exact float32 sums"
        return None

    def digest(self, base_id: bytes) -> bytes:
        """The coder-2 model id: SHA-256 over the base model's id and these arrays (FORMAT.md)."""
        digest = hashlib.sha256(base_id)
        for name in self.ARRAYS:
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
            digest.update(array.astype(array.dtype.newbyteorder("<")).tobytes())
        return digest.digest()[:16]


def _window_index(h: int, w: int, positions: np.ndarray) -> np.ndarray:
    """Where the 3 x 3 around each position lies in the zero-padded ``(h + 2) x (w + 2)`` grid,
    flattened: ``9 x n``."""
    y, x = np.divmod(positions, w)
    return np.stack([(y + 1 + dy) * (w + 2) + x + 1 + dx for dy, dx in OFFSETS])


class NetState:
    """The network's running sums for one chunk: the previous latent frame's part of every hidden
    unit (per pass) and the decoded planes' part, grown plane by plane."""

    SLICING: ClassVar[bool] = True  # even widths take windows by slicing (tests compare with gathering)

    def __init__(self, net: ResidualNet, bits: int, positions: list[np.ndarray], neighbours: np.ndarray, shape: tuple[int, int]):
        self.net, self.bits, self.positions, self.shape = net, bits, positions, shape
        h, w = shape
        hidden = net.hidden
        self.split = positions[0].size
        self.even = self.SLICING and w % 2 == 0  # rows hold w / 2 positions of each pass: windows by slicing
        if not self.even:  # where each position's 3 x 3 window lies in the padded grid, both passes
            self.windows = [_window_index(h, w, idx) for idx in positions]
            self.window = np.concatenate(self.windows, axis=1)
        self.padded = np.zeros((bits, (h + 2) * (w + 2)), dtype=np.float32)  # signs, zero border
        self.interior = self.padded.reshape(bits, h + 2, w + 2)[:, 1:-1, 1:-1]
        if self.even:
            self.plane_windows, self.window_copies = self._pass_windows(self.padded[0].reshape(h + 2, w + 2))
        scale = np.float32(2.0 ** -int(net.shifts[0]))  # a / 2^S is exact in float32: weights come pre-scaled
        # the previous frame's weights by offset: row d * H + u, column j = w_prev[u, j, d] / 2^S
        self.w_spread = np.ascontiguousarray(net.w_prev[:, :bits].transpose(2, 0, 1).reshape(9 * hidden, bits), dtype=np.float32) * scale
        self.w_cur = net.w_cur.astype(np.float32) * scale
        # per plane, pass and first-frame flag: [w_logit, bias, w_own] against inputs [z0, 1, own signs]
        self.w_small = np.zeros((bits, 2, 2, hidden, 6), dtype=np.float32)
        self.w_small[..., 0] = net.w_logit
        self.w_small[..., 1] = net.bias[:bits]
        self.w_small[:, 1, :, :, 2:] = net.w_own
        self.w_small *= scale
        self.w_small = [[[np.ascontiguousarray(self.w_small[k, p, f, :, : 2 + 4 * p]) for f in (0, 1)] for p in (0, 1)]
                        for k in range(bits)]  # fmt: skip
        self.inputs = [np.ones((2 + 4 * phase, idx.size), dtype=np.float32) for phase, idx in enumerate(positions)]
        self.neighbours = neighbours  # pass-1 positions' 4 direct neighbours among pass 0 (n0: outside)
        self.own = np.zeros(positions[0].size + 1, dtype=np.float32)
        if self.even:  # the own-plane inputs by slicing: pass 0's signs padded with zeros
            self.own_grid = np.zeros((h + 2, w // 2 + 2), dtype=np.float32)
            self.own_copies = neighbour_copies(self.own_grid, 1, self.inputs[1][2:].reshape(4, h, w // 2))
        self.out = net.out.astype(np.float32)
        self.out_bias = net.out_bias.astype(np.float32)
        self.out_scale = np.float32(2.0 ** -int(net.shifts[1]))
        self.first = True
        self.all_sums = np.zeros((hidden, h * w), dtype=np.float32)
        self.sums = [self.all_sums[:, : self.split], self.all_sums[:, self.split :]]  # views per pass
        self.work = [np.zeros((hidden, idx.size), dtype=np.float32) for idx in positions]
        self.product = np.empty((hidden, h * w), dtype=np.float32)

    def _pass_windows(self, grid: np.ndarray) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
        """For even widths (row ``y`` of pass ``p`` holds columns ``x = (y + p) % 2, + 2, ...``): the
        3 x 3 windows of each pass's positions in the padded plane ``grid`` (float32 ``9 x h * w / 2``
        per pass, to be filled) and the copies that fill them from ``grid``: one per pass and row
        parity, whose windows are one strided view of ``grid``."""
        (h, w), half = self.shape, self.shape[1] // 2
        s1, s2 = grid.strides
        out = [np.empty((3, 3, h, half), dtype=np.float32) for _ in (0, 1)]
        copies = []
        for phase in (0, 1):
            for row in (0, 1):
                corner = grid[row:, (row + phase) % 2 :]  # window (dy, dx) of (y, x) at [y + dy + 1, x + dx + 1]
                view = as_strided(corner, (3, 3, len(range(row, h, 2)), half), (s1, s2, 2 * s1, 2 * s2), writeable=False)
                copies.append((out[phase][:, :, row::2], view))
        return [part.reshape(9, -1) for part in out], copies

    def _signs(self, planes: np.ndarray, count: int) -> np.ndarray:
        """Writes bool ``count x h x w`` planes as signs into the padded buffer; returns its rows."""
        interior = self.interior[:count]
        np.multiply(planes, 2, out=interior, casting="unsafe")
        interior -= 1
        return self.padded[:count]

    def begin_frame(self, prev: np.ndarray | None) -> None:
        """``prev``: the previous latent frame (bool ``bits x h x w``), ``None`` in the first."""
        self.first = prev is None
        if prev is None:
            self.all_sums.fill(0)
            return
        (h, w), hidden = self.shape, self.net.hidden
        padded = self._signs(prev, self.bits).reshape(self.bits, h + 2, w + 2)
        rows = max(1, BAND // (9 * hidden * (w + 2)) - 2)  # bands of rows: memory stays small whatever the size
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            # every offset's weighted sum over the planes at every padded position of the band, then
            # each position's 3 x 3 of them: (9 H x planes) @ (planes x positions), not 9 x planes windows
            spread = (self.w_spread @ padded[:, y0 : y1 + 2].reshape(self.bits, -1)).reshape(3, 3, hidden, -1, w + 2)
            total = spread[0, 0, :, : y1 - y0, :w].copy()
            for a, b in OFFSETS[1:]:
                total += spread[a + 1, b + 1, :, a + 1 : a + 1 + y1 - y0, b + 1 : b + 1 + w]
            total = total.reshape(hidden, -1)
            for phase, idx in enumerate(self.positions):
                lo, hi = np.searchsorted(idx, [y0 * w, y1 * w])
                np.take(total, idx[lo:hi] - y0 * w, axis=1, out=self.sums[phase][:, lo:hi])

    def plane_done(self, j: int, passes: list[np.ndarray]) -> None:
        """Plane ``j`` of the current latent frame is decoded (its two passes' bits, uint8): add its part."""
        padded = self.padded[0]  # the previous frame's signs are no longer needed
        if self.even:
            h, w = self.shape
            interior = self.interior[0]
            for phase, bits in enumerate(passes):
                bits = bits.reshape(h, w // 2)
                for row in (0, 1):
                    np.multiply(bits[row::2], 2, out=interior[row::2, (row + phase) % 2 :: 2], casting="unsafe")
            interior -= 1
            for destination, view in self.window_copies:
                np.copyto(destination, view)
            for windows, at in zip(self.plane_windows, (0, self.split)):
                np.matmul(self.w_cur[:, j], windows, out=self.product[:, at : at + windows.shape[1]])
        else:
            for window, bits in zip(self.windows, passes):
                padded[window[4]] = bits * np.float32(2) - 1  # window[4]: the position itself
            np.matmul(self.w_cur[:, j], np.take(padded, self.window), out=self.product)
        self.all_sums += self.product

    def correction(self, k: int, phase: int, z0: np.ndarray, pass0: np.ndarray | None, step: int = 1) -> np.ndarray:
        """The correction (int32, 1/256 nat) of plane ``k``'s ``phase`` symbols, of every ``step``-th
        one (where only the adaptation needs it); ``pass0``: plane ``k``'s pass-0 bits (uint8),
        needed in pass 1."""
        inputs, a = self.inputs[phase][:, ::step], self.work[phase][:, : -(-z0.size // step)]
        np.minimum(z0[::step], Z_INPUT, out=inputs[0], casting="unsafe")  # exact: |z0| < 2^24
        np.maximum(inputs[0], np.float32(-Z_INPUT), out=inputs[0])
        if phase and self.even:  # every position's inputs (cheap by slicing); the product takes every step-th
            interior = self.own_grid[1:-1, 1:-1]
            np.multiply(pass0.reshape(interior.shape), 2, out=interior, casting="unsafe")
            interior -= 1
            for destination, view in self.own_copies:
                np.copyto(destination, view)
        elif phase:
            np.multiply(pass0, 2, out=self.own[:-1], casting="unsafe")
            self.own[:-1] -= 1
            np.take(self.own, self.neighbours[:, ::step], out=inputs[2:])
        np.matmul(self.w_small[k][phase][int(self.first)], inputs, out=a)
        a += self.sums[phase][:, ::step]
        np.floor(a, out=a)
        np.clip(a, np.float32(0), np.float32(HIDDEN_MAX), out=a)  # one pass (float max/min are slow here)
        r = self.out[k] @ a
        r += self.out_bias[k]
        r *= self.out_scale
        return np.floor(r, out=r).astype(np.int32)
