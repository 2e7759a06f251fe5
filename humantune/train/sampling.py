"""What every training step reads, as a function of the run's seed alone: which samples (:class:`StepBatches`) and
the random numbers drawn for each of them (:class:`BatchRandom`).

Both depend on a sample's *global position* in the run's endless sample stream, never on how the stream is cut
into micro-batches and processes. One process with micro-batch 2b and two processes with micro-batch b therefore
read the same samples at every step and draw the same noise, timesteps, crops and caption dropout for each of them,
and a run resumed from step s continues exactly where the uninterrupted run would have been.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from humantune.errors import HumantuneError


class StepBatches:
    """Indices of every micro-batch from ``start_step`` on, for one process, in the engine's fixed order.

    Position ``p`` of the endless sample stream is sample ``perm_e[p mod N]`` of epoch ``e = p div N``, with
    ``perm_e = default_rng([seed, e]).permutation(N)``. Optimizer step ``s``, micro-batch ``a``, process ``r``
    reads positions ``g·B … g·B + B − 1`` with ``g = (s·A + a)·P + r``; every step reads positions
    ``s·A·P·B … (s + 1)·A·P·B − 1``, however they are split.
    """

    def __init__(self, n: int, batch_size: int, accumulation: int, processes: int, process: int, seed: int,
                 start_step: int, max_steps: int) -> None:
        if n < 1:
            raise HumantuneError("the training dataset is empty")
        self.n, self.b, self.a, self.p, self.r, self.seed = n, batch_size, accumulation, processes, process, seed
        self.start, self.stop = start_step, max_steps
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def positions(self, step: int, micro: int) -> range:
        """Stream positions of this process's micro-batch ``micro`` of optimizer step ``step``."""
        g = (step * self.a + micro) * self.p + self.r
        return range(g * self.b, (g + 1) * self.b)

    def indices(self, step: int, micro: int) -> list[int]:
        return [int(self._perm(pos // self.n)[pos % self.n]) for pos in self.positions(step, micro)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            for micro in range(self.a):
                yield self.indices(step, micro)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.a


def sample_seed(seed: int, position: int) -> int:
    """The seed of the generator of the sample at stream ``position``: distinct for every position."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1, np.uint64)[0]) >> 1


class BatchRandom:
    """Random draws for a batch whose row ``i`` belongs to the sample at stream position ``positions[i]``.

    Each sample has its own ``torch.Generator`` seeded by ``(seed, position)``; ``randn``/``rand``/``randint`` of
    shape ``(R, …)`` draw row ``i`` from the generator of sample ``i mod B`` (B = the batch's samples), so the draws
    of a sample do not depend on which other samples share its micro-batch or process. ``R`` may be a multiple of B:
    a batch stacked as k blocks of the same samples (DreamBooth's [instance; class] halves) gives row ``i`` of block
    ``j`` the ``j``-th draw of sample ``i``. Draws are made on the CPU; move them to the batch's device.
    """

    def __init__(self, seed: int, positions: Sequence[int]) -> None:
        self.positions = list(positions)
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, p)) for p in self.positions]

    def __len__(self) -> int:
        return len(self.generators)

    def _rows(self, shape, draw: Callable[[torch.Generator, tuple], torch.Tensor]) -> torch.Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        n = len(self.generators)
        if not shape or shape[0] % n:
            raise ValueError(f"a batch of {n} samples draws rows in multiples of {n}, asked for shape {shape}")
        return torch.stack([draw(self.generators[i % n], shape[1:]) for i in range(shape[0])])

    def randn(self, shape) -> torch.Tensor:
        """Standard normal draws of ``shape`` (float32)."""
        return self._rows(shape, lambda g, s: torch.randn(s, generator=g))

    def rand(self, shape) -> torch.Tensor:
        """Uniform draws in [0, 1) of ``shape`` (float32)."""
        return self._rows(shape, lambda g, s: torch.rand(s, generator=g))

    def randint(self, low: int, high: int, shape) -> torch.Tensor:
        """Integers in [low, high) of ``shape`` (int64)."""
        return self._rows(shape, lambda g, s: torch.randint(low, high, s, generator=g))


class GeneratorDraws:
    """The :class:`BatchRandom` interface on one ``torch.Generator``: the draws ``torch.randn(shape,
    generator=g)`` etc. would make (for losses used outside the engine, and the tests that check them draw for
    draw)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator)

    def rand(self, shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def randint(self, low: int, high: int, shape) -> torch.Tensor:
        return torch.randint(low, high, (shape,) if isinstance(shape, int) else shape, generator=self.generator)


def draws(source: BatchRandom | GeneratorDraws | torch.Generator) -> BatchRandom | GeneratorDraws:
    """``source`` as an object with ``randn``/``rand``/``randint``: a ``torch.Generator`` is wrapped."""
    return GeneratorDraws(source) if isinstance(source, torch.Generator) else source
