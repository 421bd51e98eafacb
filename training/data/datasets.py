"""Datasets over a token store, and their collate functions.

Every item is a dict of 1-D int64 tensors; collate pads to the longest item of the batch (pad id 0,
mask 0) so the strategies see ``(B, T)`` tensors. Padding is on the right, so causal attention
never lets a real token see a pad.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from training.data.store import TokenStore
from training.data.text import DataError


class PTDataset:
    """Non-overlapping windows of ``seq_len + 1`` tokens over the document stream."""

    kind = "pt"

    def __init__(self, store: TokenStore, seq_len: int) -> None:
        self.tokens = store.require_kind("pt")["tokens"]
        self.seq_len = seq_len
        self.n = max(0, (len(self.tokens) - 1) // seq_len)
        if self.n == 0:
            raise DataError(f"{store.path}: {len(self.tokens)} tokens is too few for one window of {seq_len + 1}")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        w = self.tokens[i * self.seq_len: i * self.seq_len + self.seq_len + 1]
        return {"input_ids": torch.from_numpy(w.astype(np.int64))}


class SFTDataset:
    """Conversations truncated to ``seq_len + 1`` tokens; those with no assistant token left are skipped."""

    kind = "sft"

    def __init__(self, store: TokenStore, seq_len: int) -> None:
        self.store = store.require_kind("sft")
        self.seq_len = seq_len
        off = store["tokens_offsets"]
        mask = store["loss_mask"]
        keep = []
        for i in range(len(off) - 1):
            # targets are positions 1..seq_len of the window; a sample whose prompt fills the
            # window has nothing to learn from and would make a 0/0 loss.
            m = mask[off[i] + 1: min(off[i + 1], off[i] + seq_len + 1)]
            if m.any():
                keep.append(i)
        self.index = np.asarray(keep, dtype=np.int64)
        self.skipped = len(off) - 1 - len(keep)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.index[i])
        off = self.store["tokens_offsets"]
        a, b = off[j], min(off[j + 1], off[j] + self.seq_len + 1)
        return {"input_ids": torch.from_numpy(self.store["tokens"][a:b].astype(np.int64)),
                "loss_mask": torch.from_numpy(self.store["loss_mask"][a:b].astype(np.int64))}


class PairDataset:
    """(prompt, chosen, rejected) triples for DPO and the reward model.

    Each side is ``prompt + completion`` truncated to ``seq_len`` tokens, with a mask that is 1 on
    completion tokens only. Pairs whose prompt leaves no completion token inside the window are skipped.
    """

    kind = "pairs"

    def __init__(self, store: TokenStore, seq_len: int) -> None:
        self.store = store.require_kind("dpo", "rm")
        self.seq_len = seq_len
        p_off = store["prompt_offsets"]
        plen = np.diff(p_off)
        self.index = np.nonzero(plen < seq_len)[0].astype(np.int64)
        self.skipped = len(plen) - len(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def _side(self, prompt: np.ndarray, completion: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ids = np.concatenate([prompt, completion])[: self.seq_len].astype(np.int64)
        mask = np.concatenate([np.zeros(len(prompt), np.int64), np.ones(len(completion), np.int64)])[: self.seq_len]
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.index[i])
        prompt = self.store.seq("prompt", j)
        c_ids, c_mask = self._side(prompt, self.store.seq("chosen", j))
        r_ids, r_mask = self._side(prompt, self.store.seq("rejected", j))
        return {"chosen_ids": c_ids, "chosen_mask": c_mask, "rejected_ids": r_ids, "rejected_mask": r_mask}


class Subset:
    """A view of ``dataset`` restricted to ``indices`` (used for the held-out split)."""

    def __init__(self, dataset, indices: np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.kind = dataset.kind

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.dataset[int(self.indices[i])]


def split_holdout(dataset, fraction: float, seed: int) -> tuple[Subset, Subset | None]:
    """Split off a seeded random ``fraction`` of items as the evaluation set (at least one item)."""
    n = len(dataset)
    if fraction <= 0:
        return Subset(dataset, np.arange(n)), None
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).numpy()
    k = min(n - 1, max(1, int(round(n * fraction))))
    return Subset(dataset, np.sort(perm[k:])), Subset(dataset, np.sort(perm[:k]))


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad every field to the batch's longest; pairs pad chosen and rejected to one length."""
    keys = items[0].keys()
    if "chosen_ids" in keys:
        length = max(max(len(it["chosen_ids"]), len(it["rejected_ids"])) for it in items)
    else:
        length = max(len(it["input_ids"]) for it in items)
    out = {}
    for k in keys:
        batch = torch.zeros(len(items), length, dtype=torch.long)
        for r, it in enumerate(items):
            batch[r, : len(it[k])] = it[k]
        out[k] = batch
    return out


def dataset_for(kind: str, store: TokenStore, seq_len: int):
    """The dataset class a stage reads: ``pt``, ``sft``, ``dpo`` and ``rm``."""
    if kind == "pt":
        return PTDataset(store, seq_len)
    if kind == "sft":
        return SFTDataset(store, seq_len)
    if kind in ("dpo", "rm"):
        return PairDataset(store, seq_len)
    raise DataError(f"unknown stage kind {kind!r}")
