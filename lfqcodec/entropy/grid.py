"""The checkerboard geometry of the context model (``docs/FORMAT.md``, "Context model"): inside a
latent frame of ``h x w`` tokens, pass 0 holds the positions with ``(y + x) % 2 == 0`` and pass 1 the
others, each in raster order; every direct neighbour of a position is in the other pass."""

from __future__ import annotations

from typing import ClassVar

import numpy as np


def neighbour_copies(padded: np.ndarray, phase: int, out: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Even widths, where row ``y`` of pass ``p`` holds columns ``(y + p) % 2 + 2 i``: the copies that
    fill ``out`` (``4 x h x w / 2``: up, down, left, right) with the direct neighbours of pass
    ``phase``'s positions, all of the other pass, from ``padded`` (``(h + 2) x (w / 2 + 2)``: the other
    pass's value of ``(y, i)`` at ``[1 + y, 1 + i]``, "outside" around). Up and down keep ``i``; left
    and right are ``i - 1, i`` in the rows where ``(y + phase)`` is even, else ``i, i + 1``."""
    h, half = out.shape[1:]
    copies = [(out[0], padded[0:h, 1 : half + 1]), (out[1], padded[2 : h + 2, 1 : half + 1])]
    for row in (0, 1):
        rows, lag = padded[1 + row : 1 + h : 2], (row + phase) % 2 == 0
        copies.append((out[2][row::2], rows[:, 0:half] if lag else rows[:, 1 : half + 1]))
        copies.append((out[3][row::2], rows[:, 1 : half + 1] if lag else rows[:, 2 : half + 2]))
    return copies


class Grid:
    """Positions of the two checkerboard passes of a ``h x w`` grid and, for each second-pass
    position, where its 4 direct neighbours are among the first-pass symbols (``n0`` = outside)."""

    SLICING: ClassVar[bool] = True  # even widths count neighbours by slicing (tests compare with gathering)

    def __init__(self, h: int, w: int):
        yy, xx = np.mgrid[0:h, 0:w]
        parity = ((yy + xx) % 2).reshape(-1)
        self.h, self.w = h, w
        self.positions = [np.flatnonzero(parity == 0), np.flatnonzero(parity == 1)]
        self.neighbours = [self._neighbours(phase) for phase in (0, 1)]
        self.count_buffer = [np.zeros(idx.size + 1, dtype=np.int8) for idx in self.positions]  # per pass + "outside"
        self.even = self.SLICING and w % 2 == 0
        if self.even:  # neighbours by slicing: each pass's values as h x w / 2, padded with zeros ("outside")
            self.count_grid = [np.zeros((h + 2, w // 2 + 2), dtype=np.int8) for _ in (0, 1)]
            self.count_near = [np.empty((4, h, w // 2), dtype=np.int8) for _ in (0, 1)]
            self.count_copies = [neighbour_copies(self.count_grid[1 - phase], phase, self.count_near[phase]) for phase in (0, 1)]

    def _neighbours(self, phase: int) -> np.ndarray:
        """For each position of ``phase``: where its 4 direct neighbours (all of the other pass) are
        among the other pass's values, ``4 x n_phase``; outside the grid -> ``n_other`` (a 0)."""
        other = self.positions[1 - phase]
        rank = np.zeros(self.h * self.w, dtype=np.int64)
        rank[other] = np.arange(other.size)
        y0, x0 = np.divmod(self.positions[phase], self.w)
        neighbours = []
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            y, x = y0 + dy, x0 + dx
            inside = (y >= 0) & (y < self.h) & (x >= 0) & (x < self.w)
            flat = np.clip(y, 0, self.h - 1) * self.w + np.clip(x, 0, self.w - 1)
            neighbours.append(np.where(inside, rank[flat], other.size))
        return np.stack(neighbours)

    def split(self, plane: np.ndarray) -> list[np.ndarray]:
        """``... x h x w`` -> the two passes' values, ``... x n_phase``."""
        flat = plane.reshape(*plane.shape[:-2], -1)
        return [flat[..., idx] for idx in self.positions]

    def pn(self, prev: np.ndarray | None, bits: int) -> list[np.ndarray]:
        """``P * 9 + N`` per plane and pass (uint8 ``bits x n_phase``) from the previous latent
        frame (bool ``bits x h x w``, or ``None`` in the first latent frame: ``P = 2, N = 0``)."""
        if prev is None:
            return [np.full((bits, idx.size), 18, dtype=np.uint8) for idx in self.positions]
        padded = np.zeros((bits, self.h + 2, self.w + 2), dtype=np.uint8)  # values stay under 27
        padded[:, 1:-1, 1:-1] = prev
        n8 = padded[:, 1:-1, 1:-1] * np.uint8(8)  # P * 9 + N = 8 P + (the 3 x 3 sum, P included)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                n8 += padded[:, dy : dy + self.h, dx : dx + self.w]
        return self.split(n8)

    def count(self, phase: int, other: np.ndarray) -> np.ndarray:
        """How many of the 4 neighbours of each ``phase`` position are set in ``other`` (values of
        the other pass, ``n_other``)."""
        if self.even:
            np.copyto(self.count_grid[1 - phase][1:-1, 1:-1], other.reshape(self.h, -1), casting="unsafe")
            for destination, view in self.count_copies[phase]:
                np.copyto(destination, view)
            near = self.count_near[phase]
            return (near[0] + near[1] + near[2] + near[3]).reshape(-1)  # int8: at most 4
        padded = self.count_buffer[1 - phase]
        np.copyto(padded[:-1], other, casting="unsafe")  # the last slot stays 0: "outside"
        near = np.take(padded, self.neighbours[phase])
        return (near[0] + near[1] + near[2] + near[3]).astype(np.int32)

    def count_planes(self, phase: int, other: np.ndarray) -> np.ndarray:
        """:meth:`count` for every plane at once: ``other`` is ``planes x n_other``; int32 ``planes x n_phase``."""
        padded = np.zeros((other.shape[0], other.shape[1] + 1), dtype=np.int8)
        padded[:, :-1] = other
        near = np.take(padded, self.neighbours[phase], axis=1)  # planes x 4 x n_phase
        return near.sum(axis=1, dtype=np.int32)
