"""A static key/value cache: allocated once for a maximum length, written in place."""

from __future__ import annotations

import torch

from astrai_core.generation import kernels
from astrai_core.model import attention


class LayerCache:
    """One layer's view of a :class:`KVCache`; the model calls ``attend`` once per forward."""

    def __init__(self, parent: "KVCache", k: torch.Tensor, v: torch.Tensor) -> None:
        self.parent = parent
        self.k = k  # (B, nkv, S_max, hs)
        self.v = v

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` (B, nkv, T, hs) at slots ``parent.start ..`` and return the filled prefix.

        The write position is the parent's Python int, not ``input_pos``: positions may differ per row
        (left-padded batches) while slots are shared, and slicing by an int needs no device sync.
        Returning only the filled prefix keeps decode attention proportional to the real length.
        """
        start = self.parent.start
        end = start + k.shape[2]
        self.k[:, :, start:end].copy_(k)
        self.v[:, :, start:end].copy_(v)
        return self.k[:, :, :end], self.v[:, :, :end]

    def attend(self, input_pos: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Write ``k``/``v`` (B, nkv, T, hs) at slots ``parent.start ..``, then attention of ``q`` (B, nh, T, hs)
        over slots ``0 .. start + T``: causal (query t sees slots <= start + t) when ``mask`` is None, else
        as the mask says. A batch of one in float32 or bfloat16 takes the compiled prefill kernel where it
        applies (:func:`~astrai_core.generation.kernels.prefill_attention`), anything else SDPA."""
        k, v = self.update(input_pos, k, v)
        if mask is None:
            y = kernels.prefill_attention(q, self.k, self.v, self.parent.start)
            if y is not None:
                return y
        return attention(q, k, v, mask)


class KVCache:
    """Keys and values of every layer, (L, B, nkv, S_max, hs) each, preallocated.

    ``start`` is the slot the next forward writes to; the engine sets it before each call.
    """

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.layers = [LayerCache(self, self.k[i], self.v[i]) for i in range(num_layers)]
        self.start = 0

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()
