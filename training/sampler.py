"""A seeded, resumable sampler that shards each epoch across data-parallel ranks.

Each epoch is one permutation drawn from ``seed + epoch`` (identical on every rank); rank ``r`` of
``w`` takes ``perm[r::w]``, so ranks never overlap and together cover the epoch. With ``drop_last``
the permutation is first cut to a multiple of ``w`` so every rank runs the same number of steps
(what DDP needs). The state is just ``(epoch, position)``, so resuming restarts at the exact sample.
"""

from __future__ import annotations

import numpy as np
import torch

from astrai_core.errors import ConfigError


class ResumableSampler:
    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        if num_samples <= 0:
            raise ConfigError(f"cannot sample from an empty dataset (num_samples={num_samples})")
        if drop_last and num_samples < world_size:
            raise ConfigError(f"{num_samples} samples cannot be split across {world_size} ranks")
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0  # samples of this epoch already handed out on this rank
        self._cache: tuple[int, np.ndarray] | None = None

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch``, in order."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if self.shuffle:
            perm = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch)).numpy()
        else:
            perm = np.arange(self.num_samples)
        if self.drop_last:
            perm = perm[: self.num_samples // self.world_size * self.world_size]
        mine = perm[self.rank:: self.world_size]
        self._cache = (epoch, mine)
        return mine

    def __len__(self) -> int:
        """Samples per epoch on this rank."""
        return len(self.epoch_indices(self.epoch))

    def take(self, k: int) -> list[int]:
        """The next ``k`` indices, rolling over into the next epoch when this one runs out."""
        out: list[int] = []
        while len(out) < k:
            idx = self.epoch_indices(self.epoch)
            chunk = idx[self.position: self.position + k - len(out)]
            out.extend(int(i) for i in chunk)
            self.position += len(chunk)
            if self.position >= len(idx):
                self.epoch += 1
                self.position = 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_samples": self.num_samples, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if state["num_samples"] != self.num_samples or state["world_size"] != self.world_size:
            raise ConfigError(f"sampler state is for {state['num_samples']} samples on {state['world_size']} ranks, "
                             f"this run has {self.num_samples} on {self.world_size}")
        self.seed = state["seed"]
        self.epoch = state["epoch"]
        self.position = state["position"]
