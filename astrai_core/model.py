"""The AstrAI decoder-only transformer, top to bottom in one file.

RMSNorm -> grouped-query attention (rotary positions, optional QK-norm and q/k/v bias,
``scaled_dot_product_attention``) -> RMSNorm -> SwiGLU MLP, repeated, then a final norm
and the output head (tied to the embedding or not).

Parameter names match the published AstrAI checkpoint layout, so ``state_dict()`` keys are
``embed_tokens.weight``, ``layers.{i}.attention.q_proj.weight``, ``layers.{i}.input_norm.weight``,
``layers.{i}.mlp.gate_proj.weight``, ``norm.weight``, ``lm_head.weight`` and so on.
The same code runs on CPU and CUDA; nothing here names a device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from astrai_core.config import ModelConfig


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension: one fused op (normalises in float32 internally, returns the
    input dtype)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.rms_norm = rms_norm  # Transformer.fuse_for_inference may set a compiled one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rms_norm(x, self.weight, self.eps)


def rope_cos_sin(config: ModelConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for the given integer positions, shape (T, head_dim), float32."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, device=positions.device, dtype=torch.float32) / hd))
    pos = positions.to(torch.float32)
    if config.rope_scaling is not None:
        pos = pos / config.rope_scaling  # linear position interpolation
    freqs = torch.outer(pos, inv_freq)  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd): "rotate half" layout, as HF Llama/Qwen2
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) by position; cos/sin are (T, hs) or (B, T, hs) in x's dtype.

    ``sin`` is the *signed* table from :meth:`Transformer.rope_tables` (first half negated), so the
    "rotate half" of HF Llama/Qwen2 becomes one ``roll``: x*cos + roll(x, hs/2)*sin.
    """
    if cos.dim() == 3:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Grouped-query attention of q (B, nh, T, hs) over k, v (B, nkv, S, hs) -> (B, nh, T, hs).

    ``mask``: boolean or additive, broadcastable to (B, nh, T, S); None means causal with the T queries
    at the last T of the S positions (a prompt, or the next chunk of one after a cached past).
    """
    T, S = q.shape[2], k.shape[2]
    if mask is None and 1 < T < S:
        mask = torch.arange(S, device=q.device)[None, :] <= torch.arange(S - T, S, device=q.device)[:, None]
    gqa = k.shape[1] != q.shape[1]
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.qkv_proj: nn.Module | None = None  # set by fuse() for inference
        self.n_heads = config.num_heads
        self.n_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        h, hd = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(h, self.n_heads * hd, bias=config.attention_bias)
        self.k_proj = nn.Linear(h, self.n_kv_heads * hd, bias=config.attention_bias)
        self.v_proj = nn.Linear(h, self.n_kv_heads * hd, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * hd, h, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(hd, config.norm_eps)
            self.k_norm = RMSNorm(hd, config.norm_eps)
        else:
            self.q_norm = self.k_norm = None

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace q/k/v projections by one matmul (inference only: the fused module's
        state_dict holds ``qkv_proj`` instead of ``q_proj``/``k_proj``/``v_proj``)."""
        if self.qkv_proj is not None:
            return
        projs = (self.q_proj, self.k_proj, self.v_proj)
        w = torch.cat([p.weight for p in projs])
        fused = nn.Linear(w.shape[1], w.shape[0], bias=self.q_proj.bias is not None, device=w.device, dtype=w.dtype)
        fused.weight = nn.Parameter(w, requires_grad=False)
        if fused.bias is not None:
            fused.bias = nn.Parameter(torch.cat([p.bias for p in projs]), requires_grad=False)
        del self.q_proj, self.k_proj, self.v_proj
        self.qkv_proj = fused

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        kv_cache=None,
        input_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        if self.qkv_proj is not None:
            nq, nkv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
            q, k, v = self.qkv_proj(x).split([nq, nkv, nkv], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_heads, self.head_dim)  # (B, T, nh, hs)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, nkv, hs)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh|nkv, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:  # writes k, v into the cache and attends over the past too
            y = kv_cache.attend(input_pos, q, k, v, mask)
        else:
            y = attention(q, k, v, mask)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, nh*hs)
        return self.o_proj(y)


def swiglu(gu: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gu = [gate | up] on the last dimension (the fused gate/up output)."""
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.gate_up_proj: nn.Module | None = None  # set by fuse() for inference
        self.swiglu = swiglu

    @torch.no_grad()
    def fuse(self, swiglu=None) -> None:
        """Replace gate/up projections by one matmul (inference only, like ``Attention.fuse``);
        ``swiglu`` maps its output [gate | up] to silu(gate) * up (a fused kernel, if given)."""
        if swiglu is not None:
            self.swiglu = swiglu
        if self.gate_up_proj is not None:
            return
        w = torch.cat([self.gate_proj.weight, self.up_proj.weight])
        fused = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
        fused.weight = nn.Parameter(w, requires_grad=False)
        del self.gate_proj, self.up_proj
        self.gate_up_proj = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            return self.down_proj(self.swiglu(self.gate_up_proj(x)))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.attention = Attention(config)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, input_pos=None) -> torch.Tensor:
        x = x + self.attention(self.input_norm(x), cos, sin, mask, kv_cache, input_pos)
        return x + self.mlp(self.post_attention_norm(x))


class Transformer(nn.Module):
    """Decoder-only LM. ``__init__`` only builds modules; loading lives in :mod:`astrai_core.checkpoint`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # cos/sin for positions 0..n-1, built on first use (not a buffer: models are built on
        # the meta device and loaded with assign=True, which would leave a buffer on meta).
        self._rope_table: tuple[torch.Tensor, torch.Tensor] | None = None

    def fuse_for_inference(self, swiglu=None, rms_norm=None) -> None:
        """Fuse q/k/v and gate/up projections into single matmuls (fewer, larger kernels per token);
        ``swiglu``: a fused silu(gate) * up of the gate/up output, ``rms_norm``: a
        ``rms_norm(x, weight, eps)`` for every RMSNorm, if the caller has them (compiled kernels)."""
        for layer in self.layers:
            layer.attention.fuse()
            layer.mlp.fuse(swiglu)
        if rms_norm is not None:
            for m in self.modules():
                if isinstance(m, RMSNorm):
                    m.rms_norm = rms_norm

    def rope_tables(self, n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin) tables (n', head_dim), n' >= max(n, max_position_embeddings), cached.

        Built in float32 and rounded once to ``dtype``: rotation then runs in the activation dtype,
        as in HF Llama/Qwen2.
        """
        table = self._rope_table
        if table is None or table[0].shape[0] < n or table[0].device != device or table[0].dtype != dtype:
            size = max(n, self.config.max_position_embeddings)
            # plain tensors even when first built under inference_mode, so training can reuse them
            with torch.inference_mode(False), torch.no_grad():
                cos, sin = rope_cos_sin(self.config, torch.arange(size, device=device))
                half = sin.shape[-1] // 2
                sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
                table = (cos.to(dtype), sin.to(dtype))
            self._rope_table = table
        return table

    def init_weights(self, seed: int | None = None, std: float = 0.02) -> None:
        """Random initialisation for training from scratch (normal std, scaled residual outputs)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                s = std / (2 * self.config.num_layers) ** 0.5 if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * s)

    def forward(
        self,
        tokens: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        kv_caches=None,
        mask: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab) in float32-or-model dtype.

        ``input_pos`` (T,) or (B, T) gives absolute positions (default ``0..T-1``); ``kv_caches`` is a
        per-layer sequence of caches with ``attend(input_pos, q, k, v, mask)`` (write k, v, attend over
        everything cached: :class:`~astrai_core.generation.cache.LayerCache`); ``mask`` is an additive or boolean
        attention mask broadcastable to (B, nh, T, S). With ``return_hidden`` the final normed hidden
        states (B, T, hidden) are returned instead of logits.
        """
        B, T = tokens.shape
        if input_pos is None:
            input_pos = torch.arange(T, device=tokens.device)
        # Index a cached table instead of recomputing trig per call (matters per decoded token).
        x = self.embed_tokens(tokens)  # (B, T, C)
        cos_t, sin_t = self.rope_tables(T, tokens.device, x.dtype)
        flat_pos = input_pos.reshape(-1)
        cos, sin = cos_t[flat_pos], sin_t[flat_pos]
        if input_pos.dim() == 2:
            cos, sin = cos.view(B, T, -1), sin.view(B, T, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, None if kv_caches is None else kv_caches[i], input_pos)
        x = self.norm(x)
        if return_hidden:
            return x
        return self.lm_head(x)  # (B, T, vocab)
