"""Sampling as small pure functions over one row of logits (vocab,), float32.

None of these modify their inputs. ``next_token`` composes them in the usual order:
repetition penalty -> (greedy | temperature -> top-k -> top-p -> draw).

The filters work on *candidates*: a pair (logits, token ids) that starts as the whole vocabulary
(ids None: a logit's position is its id) and only ever shrinks, so nothing after a filter touches
the tokens it dropped. Neither sorts the whole vocabulary (a sort of 49k logits took ~3.4 ms here)
and the draw is an inverse-CDF lookup of one uniform number (``torch.multinomial`` over 49k
probabilities took ~1 ms per token).

Where the compiled kernels are built, ``next_token`` makes the same choice in one C call
(:func:`~astrai_core.generation.kernels.sample`): between two decode tokens every torch op runs with
the caches cold, and the ~20 ops here took ~1 ms of a ~9 ms SmolLM2 token. These functions remain
its reference (the tests compare the two) and the path where the kernels are not built.
"""

from __future__ import annotations

import torch

from astrai_core.generation.kernels import argmax, sample

Candidates = tuple[torch.Tensor, "torch.Tensor | None"]  # (logits (n,), their token ids (n,) int64, or None)


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make already-seen tokens less likely (CTRL-style: divide positive logits, multiply negative)."""
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    seen = logits.gather(0, previous)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(0, previous, seen)


def all_tokens(logits: torch.Tensor) -> Candidates:
    """Every token of the vocabulary as candidates."""
    return logits, None


def _ids(ids: torch.Tensor | None, picked: torch.Tensor) -> torch.Tensor:
    return picked if ids is None else ids[picked]


def top_k_filter(cands: Candidates, k: int) -> Candidates:
    """The ``k`` candidates with the largest logits, largest first; k <= 0 = off."""
    logits, ids = cands
    if k <= 0 or k >= logits.shape[0]:
        return cands
    top, order = torch.topk(logits, k)
    return top, _ids(ids, order)


def top_p_filter(cands: Candidates, p: float) -> Candidates:
    """Nucleus filter: the smallest set of top candidates whose probability mass reaches ``p``
    (probabilities renormalized over the candidates), largest first."""
    logits, ids = cands
    if p >= 1.0:
        return cands
    probs = logits.softmax(-1)
    n = probs.shape[0]
    # A language model's nucleus is usually a few dozen tokens: rank only the top k and widen k when
    # their mass falls short of p.
    k = min(64, n)
    while True:
        top, order = torch.topk(probs, k)  # descending
        cum = top.cumsum(-1)
        if cum[-1] >= p or k == n:
            break
        k = min(n, k * 8)
    keep = order[cum - top < p]  # mass before a token still short of p
    return logits[keep], _ids(ids, keep)


def draw(cands: Candidates, u: float) -> int:
    """The token of the uniform number ``u`` in [0, 1) under probabilities softmax(logits): the first
    candidate whose cumulative probability passes u (never a zero-probability one)."""
    logits, ids = cands
    cdf = logits.double().softmax(-1).cumsum(-1)
    i = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64), right=True))
    if i >= cdf.shape[0]:  # u * total rounded up to the total
        i = int((cdf < cdf[-1]).sum())  # the last token that adds mass
    return i if ids is None else int(ids[i])


def next_token(logits: torch.Tensor, previous: torch.Tensor, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, repetition_penalty: float = 1.0,
               generator: torch.Generator | None = None) -> int:
    """Choose the next token id from one row of logits; temperature 0 means greedy. A sampled token takes
    one uniform number from ``generator``, on either path (a seed reproduces a run)."""
    if temperature <= 0.0 and repetition_penalty == 1.0:
        return argmax(logits)
    u = float(torch.rand((), generator=generator)) if temperature > 0.0 else 0.0
    tok = sample(logits, previous, temperature, top_k, top_p, repetition_penalty, u)
    if tok is not None:
        return tok
    logits = apply_repetition_penalty(logits.float(), previous, repetition_penalty)
    if temperature <= 0.0:
        return argmax(logits)
    cands = all_tokens(logits / max(temperature, 1e-5))
    return draw(top_p_filter(top_k_filter(cands, top_k), top_p), u)
