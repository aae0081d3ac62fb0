"""The data position: one deterministic walk over every train row, shared by every rank.

It is global (the same on every rank; rank r uses its slice of each step's prompts), so a
checkpoint resumes exactly with any worker count: that is what lets the elastic loop shrink
and grow a running job.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DataCursor:
    """A deterministic walk over `n` rows: a fresh permutation per epoch from (seed, epoch).

    Its state is two integers, so a resumed run draws exactly the prompts the uninterrupted
    run would have drawn next.
    """

    n: int
    seed: int
    epoch: int = 0
    pos: int = 0

    def _perm(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        perm = self._perm()
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                perm = self._perm()
            take = min(k - len(out), self.n - self.pos)
            out.extend(perm[self.pos : self.pos + take])
            self.pos += take
        return out

    def take_slice(self, k: int, rank: int, world: int) -> list[int]:
        """Rank `rank`'s share of the next `k` rows (every rank advances by all `k`)."""
        per_rank = k // world
        return self.take(k)[rank * per_rank : (rank + 1) * per_rank]

    @property
    def seen(self) -> int:
        return self.epoch * self.n + self.pos

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}
