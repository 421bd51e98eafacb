"""The generation engine: one loop (prefill in chunks, then token-by-token decode) with sync,
batch and streaming layers over it. See the package docstring for the public contract.
"""

from __future__ import annotations

import ctypes
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from astrai_core.checkpoint import LoadedModel
from astrai_core.errors import ConfigError, ContextLengthError, GenerationError
from astrai_core.generation.cache import KVCache
from astrai_core.generation.kernels import DecodeStep, rms_norm, swiglu
from astrai_core.generation.quantize import QUANT_MODES, quantize_model
from astrai_core.generation.sampling import next_token
from astrai_core.tokenizer import StreamDecoder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass
class GenerationConfig:
    """How to generate. ``temperature`` 0 means greedy; ``top_k`` 0 and ``top_p`` 1 mean off.

    Generation stops at the tokenizer's stop ids (EOS, ``<|im_end|>``), at the first occurrence of
    any string in ``stop`` (which is cut from the output), or after ``max_new_tokens``.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.temperature < 0:
            raise GenerationError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be >= 0, got {self.top_k!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.repetition_penalty <= 0:
            raise GenerationError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise GenerationError(f"stop must be a list of non-empty strings, got {self.stop!r}")


@dataclass
class GenerationResult:
    """One finished generation. ``token_ids`` are the generated ids (a final stop id excluded);
    ``prefill_tokens`` counts prompt tokens actually computed (fewer than ``prompt_tokens`` when a
    cached prefix was reused); ``timings`` has ``ttft_s``, ``prefill_s`` and ``decode_s``."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    prefill_tokens: int
    timings: dict[str, float]
    #: tokens proposed by lookup drafting and verified, and how many of them were generated as proposed
    drafted: int = 0
    accepted: int = 0


def native_bf16() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX).

    oneDNN reports bf16 "supported" on any AVX-512 CPU, but without these instructions it converts
    to float32 inside every matmul: measured on an AVX-512 (VNNI, no BF16) Xeon, bfloat16 decode was
    0.8x and prefill 0.3x of float32 (benchmarks/RESULTS.md), so such CPUs get float32.
    """
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str | None) -> torch.dtype:
    """The requested precision: None = bfloat16 where the CPU has native bf16 matmuls (see
    :func:`native_bf16`), else float32. (The engine then keeps float32 activations under bfloat16
    weights on CPUs without native bf16.)"""
    if dtype is None:
        return torch.bfloat16 if native_bf16() else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported; choose one of {sorted(DTYPES)} or None (auto)")
    return DTYPES[dtype]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def find_stop(text: str, stops: Sequence[str], start: int) -> int:
    """Index of the earliest stop string in ``text`` beginning at or after ``start``, or -1."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class _Lookup:
    """Lookup drafts ("prompt lookup decoding"): the tokens that followed the latest earlier occurrence
    of the sequence's last ``n`` tokens (the longest ``n`` in ``ngrams`` that occurred). Answers quote
    their sources and repeat the conversation's names, code and numbers; such a guess costs no model
    call, and the engine verifies it with the next token in one pass over the weights.

    How far to guess follows how often guesses from an ``n``-token match have been right in this
    request (a running rate per ``n``, updated by :meth:`hit`/:meth:`miss`, also for guesses not
    drafted) and what a step of ``t`` tokens costs (``cost(t)``, relative to one token): :meth:`length`
    picks the ``k`` that maximises the expected tokens per unit of time, (1 + a + ... + a^k) /
    cost(1 + k); with a low rate nothing is drafted."""

    NGRAMS = (3, 2, 1)  # the match lengths tried, longest first
    PRIOR = 0.5  # the rate a request starts from
    DECAY = 0.1  # weight of the latest outcome in the running rate

    def __init__(self, tokens: list[int], ngrams: tuple[int, ...], cost: Callable[[int], float]) -> None:
        self.seq: list[int] = []
        self.ngrams = ngrams
        self.cost = cost
        self.index: dict[tuple[int, ...], int] = {}  # n-gram -> where its latest continued occurrence ends
        self.rate = {n: self.PRIOR for n in ngrams}
        for tok in tokens:  # ~1 us a token
            self.push(tok)

    def push(self, tok: int) -> None:
        seq = self.seq
        seq.append(tok)
        end = len(seq) - 1  # the n-grams ending here now have a continuation: tok
        for n in self.ngrams:
            if end >= n:
                self.index[tuple(seq[end - n:end])] = end

    def guess(self, most: int) -> tuple[int, list[int]]:
        """(n, up to ``most`` tokens that followed the latest earlier occurrence of the last n), or (0, [])."""
        for n in self.ngrams:
            end = self.index.get(tuple(self.seq[-n:])) if len(self.seq) >= n else None
            if end is not None:
                return n, self.seq[end:end + most]
        return 0, []

    def length(self, rate: float, most: int) -> int:
        """How many tokens of a guess to draft at hit rate ``rate`` (at most ``most``)."""
        best, best_gain, expected, p = 0, 1.0, 1.0, 1.0
        for k in range(1, most + 1):
            p *= rate
            expected += p
            gain = expected / self.cost(1 + k)
            if gain > best_gain:
                best, best_gain = k, gain
        return best

    def hit(self, n: int) -> None:
        self.rate[n] += self.DECAY * (1.0 - self.rate[n])

    def miss(self, n: int) -> None:
        self.rate[n] -= self.DECAY * self.rate[n]


class _Row:
    """Per-prompt state of the loop: sampled ids, incremental text and the stop logic."""

    def __init__(self, prompt: list[int], config: GenerationConfig, engine: "Engine") -> None:
        self.prompt = prompt
        self.config = config
        self.stop_ids = engine.stop_ids
        seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**63)
        self.generator = torch.Generator().manual_seed(seed)
        self.decoder = StreamDecoder(engine.tokenizer)
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0  # chars of self.text already handed out
        self.finish: str | None = None
        self.history = torch.tensor(prompt, dtype=torch.long)  # for the repetition penalty

    def choose(self, logits: torch.Tensor) -> int:
        c = self.config
        previous = self.history if c.repetition_penalty != 1.0 else self.history[:0]
        tok = next_token(logits, previous, c.temperature, c.top_k, c.top_p, c.repetition_penalty, self.generator)
        if c.repetition_penalty != 1.0:
            self.history = torch.cat([self.history, torch.tensor([tok])])
        return tok

    def accept(self, tok: int) -> str:
        """Take one sampled token; return the text that is now safe to show."""
        if tok in self.stop_ids:
            return self.finish_with("stop")
        self.ids.append(tok)
        old_len = len(self.text)
        self.text += self.decoder.put(tok)
        if self._cut_stop(old_len):
            return self._release(len(self.text))
        if len(self.ids) >= self.config.max_new_tokens:
            return self.finish_with("length")
        return self._release(len(self.text) - held_back(self.text, self.config.stop))

    def finish_with(self, reason: str) -> str:
        old_len = len(self.text)
        self.text += self.decoder.flush()
        if not self._cut_stop(old_len):
            self.finish = reason
        return self._release(len(self.text))

    def _cut_stop(self, old_len: int) -> bool:
        stops = self.config.stop
        if not stops:
            return False
        idx = find_stop(self.text, stops, max(0, old_len - max(map(len, stops)) + 1))
        if idx < 0:
            return False
        self.text, self.finish = self.text[:idx], "stop"
        return True

    def _release(self, upto: int) -> str:
        delta = self.text[self.emitted:upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return delta


def release_freed_memory() -> None:
    """Hand the heap pages freed so far back to the OS (glibc's ``malloc_trim``; elsewhere nothing). glibc
    keeps freed memory for reuse, so the weights an engine frees while converting them (float32 as loaded
    -> bfloat16, packed, int8) stayed in the process: SmolLM2-135M's bfloat16 engine held 1027 MB of RSS
    after construction, 549 MB after a trim (unpacked bfloat16 827 -> 511)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass


class Engine:
    """KV-cached text generation over a loaded model.

    The engine takes over ``loaded.model``: it is converted in place to the activation dtype, its
    projections are fused, and low-precision weights replace its linears. One engine is used by
    one worker thread at a time; only :meth:`cancel` may be called from any thread.
    """

    def __init__(self, loaded: LoadedModel, dtype: str | None = None, quantize: str | None = None,
                 max_seq_len: int | None = None, prefill_chunk: int = 512, lookahead: int = 4) -> None:
        if quantize is not None and quantize not in QUANT_MODES:
            raise ConfigError(f"quantize={quantize!r} is not supported; choose one of {QUANT_MODES} or None")
        self.tokenizer = loaded.tokenizer
        self.config = loaded.config
        requested = resolve_dtype(dtype)
        # Without native bf16, "bfloat16" means bfloat16 weights under float32 activations: emulated
        # bf16 elementwise ops cost more than the bytes they save (see quantize.py). Quantized
        # linears round their own inputs for the kernel, so they follow the same rule.
        self.dtype = requested if requested == torch.float32 or native_bf16() else torch.float32
        #: how the linear weights are stored: "float32", "bfloat16", "int8" or "int4"
        self.weights = quantize or DTYPE_NAMES[requested]
        self.quantize = quantize
        ctx = self.config.max_position_embeddings
        if max_seq_len is not None and (not isinstance(max_seq_len, int) or max_seq_len < 2):
            raise ConfigError(f"max_seq_len must be an integer >= 2, got {max_seq_len!r}")
        self.max_seq_len = min(max_seq_len or ctx, ctx)
        self.prefill_chunk = prefill_chunk
        if not isinstance(lookahead, int) or not 0 <= lookahead < DecodeStep.ROWS:
            raise ConfigError(f"lookahead must be an integer in [0, {DecodeStep.ROWS - 1}], got {lookahead!r}")
        #: the most lookup-drafted tokens verified with each decode token (0: off)
        self.lookahead = lookahead
        # seconds per compiled decode step of t tokens (running averages, index t; None until measured)
        self._step_s: list[float | None] = [None] * (DecodeStep.ROWS + 1)
        model = loaded.model.to(dtype=self.dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.fuse_for_inference(swiglu, rms_norm)  # one C pass each (kernels.swiglu, kernels.rms_norm)
        # every linear, float32 and bfloat16 included, becomes one whose decode-sized calls run the
        # compiled matrix-vector kernel (quantize.py), ~1.5-2x PyTorch's one-row GEMM
        quantize_model(model, self.weights)
        self.model = model
        # every layer of a one-token, batch-1 step in one compiled call (None: PyTorch's ops)
        self._step = DecodeStep.build(model, self.dtype, self.max_seq_len)
        release_freed_memory()  # the weights as loaded were freed as they were converted
        self.device = next(model.parameters()).device
        self.stop_ids = frozenset(self.tokenizer.stop_ids)
        self._cancel = threading.Event()
        self._cache: KVCache | None = None  # the session cache (batch 1), allocated on first use
        self._cache_tokens: list[int] = []  # tokens whose keys/values are valid in _cache
        self.last_result: GenerationResult | None = None

    # ---- public API -----------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        """Most tokens (prompt + generated) one request may hold."""
        return self.max_seq_len

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def cancel(self) -> None:
        """Stop the running generation within one decode step (thread-safe)."""
        self._cancel.set()

    def generate(self, prompt: str | list[int], config: GenerationConfig | None = None) -> GenerationResult:
        """Generate a completion for one prompt and return the full text."""
        for _ in self.stream(prompt, config):
            pass
        assert self.last_result is not None
        return self.last_result

    def stream(self, prompt: str | list[int], config: GenerationConfig | None = None) -> Iterator[str]:
        """Yield text deltas; when exhausted, ``self.last_result`` holds the :class:`GenerationResult`."""
        loop = self._loop([self._encode(prompt)], [config or GenerationConfig()])
        while True:
            try:
                _, delta = next(loop)
            except StopIteration as done:
                self.last_result = done.value[0]
                return
            if delta:
                yield delta

    def generate_batch(self, prompts: Sequence[str | list[int]],
                       configs: GenerationConfig | Sequence[GenerationConfig] | None = None) -> list[GenerationResult]:
        """Generate for several prompts at once (each with its own config and stops)."""
        if not prompts:
            return []
        if configs is None or isinstance(configs, GenerationConfig):
            configs = [configs or GenerationConfig()] * len(prompts)
        if len(configs) != len(prompts):
            raise GenerationError(f"got {len(prompts)} prompts but {len(configs)} configs")
        loop = self._loop([self._encode(p) for p in prompts], list(configs))
        while True:
            try:
                next(loop)
            except StopIteration as done:
                return done.value

    def chat(self, messages: list[dict], config: GenerationConfig | None = None) -> GenerationResult:
        """Answer a conversation rendered with the tokenizer's chat template."""
        return self.generate(self.tokenizer.encode_chat(messages), config)

    def stream_chat(self, messages: list[dict], config: GenerationConfig | None = None) -> Iterator[str]:
        return self.stream(self.tokenizer.encode_chat(messages), config)

    # ---- the loop ---------------------------------------------------------------------------
    def _encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_bos=self.tokenizer.config.add_bos_token)
        if not all(isinstance(t, int) and 0 <= t < self.config.vocab_size for t in prompt):
            raise GenerationError(f"prompt token ids must be integers in [0, {self.config.vocab_size})")
        return list(prompt)

    def _check(self, prompt: list[int], config: GenerationConfig) -> None:
        config.validate()
        if not prompt:
            raise GenerationError("the prompt is empty")
        need = len(prompt) + config.max_new_tokens
        if need > self.max_seq_len:
            raise ContextLengthError(
                f"prompt of {len(prompt)} tokens + max_new_tokens={config.max_new_tokens} = {need} tokens "
                f"exceeds the context length of {self.max_seq_len}; shorten the prompt or lower max_new_tokens")

    def _new_cache(self, batch: int, max_len: int) -> KVCache:
        c = self.config
        with torch.inference_mode():
            return KVCache(c.num_layers, batch, c.num_kv_heads, max_len, c.head_dim, self.dtype, self.device)

    def _loop(self, prompts: list[list[int]], configs: list[GenerationConfig]):
        """The one generation loop. Yields ``(row, text_delta)``; returns the results list."""
        for p, c in zip(prompts, configs):
            self._check(p, c)
        t0 = time.perf_counter()
        self._cancel.clear()
        rows = [_Row(p, c, self) for p, c in zip(prompts, configs)]
        if len(rows) == 1:
            state = _SessionState(self, prompts[0])
        else:
            state = _BatchState(self, prompts, max(c.max_new_tokens for c in configs))
        logits = state.prefill(self._cancel)
        t_prefill = time.perf_counter()
        ttft = None
        while logits is not None:
            next_ids = []
            for b, row in enumerate(rows):
                if row.finish is None:
                    delta = row.accept(row.choose(logits[b]))
                    if delta:
                        yield b, delta
                next_ids.append(row.ids[-1] if row.ids else row.prompt[-1])
            if ttft is None:
                ttft = time.perf_counter() - t0
            if all(r.finish for r in rows) or self._cancel.is_set():
                break
            logits = state.decode(next_ids, min(r.config.max_new_tokens - len(r.ids) for r in rows) - 1)
        for b, row in enumerate(rows):
            if row.finish is None:
                delta = row.finish_with("cancelled")
                if delta:
                    yield b, delta
        state.close()
        t_end = time.perf_counter()
        timings = {"ttft_s": ttft if ttft is not None else t_end - t0,
                   "prefill_s": t_prefill - t0, "decode_s": t_end - t_prefill}
        return [GenerationResult(r.text, list(r.ids), r.finish, len(r.prompt), len(r.ids), state.prefilled[b],
                                 dict(timings), state.drafted, state.accepted) for b, r in enumerate(rows)]

    @torch.inference_mode()
    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, start: int,
                 mask: torch.Tensor | None) -> torch.Tensor:
        """Run ``tokens`` (B, T) through the model writing cache slots ``start..``; last-position logits (B, V)."""
        cache.start = start
        hidden = self.model(tokens, positions, cache.layers, mask, return_hidden=True)  # (B, T, C)
        return self.model.lm_head(hidden[:, -1]).float()  # (B, V): only the last position is sampled

    def step_cost(self, t: int) -> float:
        """Time of a decode step of ``t`` tokens relative to one token, lookup drafting's cost model: what
        steps take on this machine, model and precision (a drafted token costs ~0.1-0.4 of a step in
        bfloat16, ~0.5 in int8: benchmarks/RESULTS.md), or 0.2 per drafted token until both are timed."""
        one, many = self._step_s[1], self._step_s[t]
        return many / one if one is not None and many is not None else 1.0 + 0.2 * (t - 1)

    def _timed_step(self, token: int, pos: int, cache: KVCache, draft: Sequence[int]) -> torch.Tensor:
        """:meth:`_decode_token`, its time folded into :meth:`step_cost`'s averages. Only the compiled
        step is timed (PyTorch's path, beyond the step's positions, is another cost)."""
        if self._step is None or not self._step.fits(cache, pos, 1 + len(draft)):
            return self._decode_token(token, pos, cache, draft)
        t0 = time.perf_counter()
        logits = self._decode_token(token, pos, cache, draft)
        dt, t, seconds = time.perf_counter() - t0, 1 + len(draft), self._step_s
        seconds[t] = dt if seconds[t] is None else seconds[t] + 0.1 * (dt - seconds[t])
        return logits

    def _decode_token(self, token: int, pos: int, cache: KVCache, draft: Sequence[int] = ()) -> torch.Tensor:
        """Logits (1 + len(draft), V) of one token of a batch of one at position ``pos`` and of the drafted
        tokens after it, written to cache slots ``pos..``: the compiled step where it fits (ints in: the
        torch ops between two tokens run with the caches cold from the weights just streamed, ~3x
        slower than warm), else (no draft) the model's forward."""
        step = self._step
        if step is not None and step.fits(cache, pos, 1 + len(draft)):
            return step((token, *draft), pos, cache, pos)
        if draft:
            raise GenerationError("a drafted step needs the compiled decode step")
        return self._forward(torch.tensor([[token]], device=self.device), torch.tensor([pos], device=self.device),
                             cache, pos, None)


class _SessionState:
    """Batch-1 generation on the engine's persistent cache, reusing the longest cached prefix."""

    def __init__(self, engine: Engine, prompt: list[int]) -> None:
        self.engine = engine
        if engine._cache is None:
            engine._cache = engine._new_cache(1, engine.max_seq_len)
        self.cache = engine._cache
        self.prompt = prompt
        # at least the last prompt token is recomputed: its logits start the decode
        self.start = min(common_prefix_len(engine._cache_tokens, prompt), len(prompt) - 1)
        self.fed = list(prompt[: self.start])
        engine._cache_tokens = self.fed  # from here on, only what is actually written is valid
        self.prefilled = [0]
        self.lookup = (_Lookup(prompt, _Lookup.NGRAMS, engine.step_cost)
                       if engine.lookahead and engine._step else None)
        # the guess for the next positions: (token, its logits, verified ahead) or, for one not worth
        # drafting, (token, None), kept only to learn the hit rate
        self.pending: list[tuple[int, torch.Tensor | None]] = []
        self.matched = 0  # the n-gram length the pending guess came from
        self.drafted = self.accepted = 0

    def prefill(self, cancel: threading.Event) -> torch.Tensor | None:
        e, chunk = self.engine, self.engine.prefill_chunk
        logits = None
        for s in range(self.start, len(self.prompt), chunk):
            if cancel.is_set():
                return None
            ids = self.prompt[s: s + chunk]
            t = len(ids)
            tokens = torch.tensor([ids], dtype=torch.long, device=e.device)
            positions = torch.arange(s, s + t, device=e.device)
            # no mask: chunk rows attend to the whole cached past plus causally within the chunk
            logits = e._forward(tokens, positions, self.cache, s, None)
            self.fed.extend(ids)
            self.prefilled[0] += t
        return logits

    def decode(self, next_ids: list[int], room: int) -> torch.Tensor:
        """Logits after ``next_ids[0]``; ``room``: how many more tokens could follow it in this request.

        With lookup drafting, the token's step also runs up to ``lookahead`` drafted tokens after it (one
        pass over the weights, slots beyond the accepted ones are overwritten later); when the sampler
        then picks the drafted token, its logits are already here. Tokens and logits are exactly those
        of one-token steps: the output does not change, only how many weight passes it takes."""
        e, tok, pos = self.engine, next_ids[0], len(self.fed)
        self.fed.append(tok)
        if self.lookup is None:
            return e._decode_token(tok, pos, self.cache)
        look = self.lookup
        look.push(tok)
        if self.pending:
            guessed, logits = self.pending.pop(0)
            if guessed != tok:
                look.miss(self.matched)
                self.pending = []
            else:
                look.hit(self.matched)
                if logits is not None:
                    self.accepted += 1
                    return logits
        self.matched, guess = look.guess(min(e.lookahead, room))
        draft = guess[: look.length(look.rate[self.matched], len(guess))] if guess else []
        if draft and not e._step.fits(self.cache, pos, 1 + len(draft)):
            draft = []
        rows = e._timed_step(tok, pos, self.cache, draft)
        self.pending = [(d, rows[i + 1: i + 2]) for i, d in enumerate(draft)] or [(t, None) for t in guess[:1]]
        self.drafted += len(draft)
        return rows[:1]

    def close(self) -> None:
        pass


class _BatchState:
    """Several prompts, left-padded into one fresh cache; finished rows keep stepping, ignored."""

    def __init__(self, engine: Engine, prompts: list[list[int]], max_new_tokens: int) -> None:
        self.engine = engine
        self.prompts = prompts
        self.width = max(len(p) for p in prompts)
        self.pads = torch.tensor([self.width - len(p) for p in prompts], device=engine.device)
        pad_id = engine.tokenizer.pad_id or 0
        self.tokens = [[pad_id] * (self.width - len(p)) + p for p in prompts]
        self.cache = engine._new_cache(len(prompts), self.width + max_new_tokens)
        self.slot = 0
        self.prefilled = [len(p) for p in prompts]
        self.drafted = self.accepted = 0  # no lookup drafting in batches

    def _mask(self, s: int, t: int) -> torch.Tensor:
        """(B, 1, t, s+t): a query in slot i sees real keys in slots <= i, and always itself
        (so pad queries never have an all-masked row, whose softmax would be NaN)."""
        dev = self.engine.device
        q = torch.arange(s, s + t, device=dev)[:, None]  # (t, 1)
        k = torch.arange(s + t, device=dev)[None, :]  # (1, s+t)
        real = k[None] >= self.pads[:, None, None]  # (B, 1, s+t)
        return (((k <= q)[None] & real) | (k == q)[None]).unsqueeze(1)

    def _positions(self, s: int, t: int) -> torch.Tensor:
        slots = torch.arange(s, s + t, device=self.engine.device)[None, :]
        return (slots - self.pads[:, None]).clamp(min=0)  # (B, t)

    def prefill(self, cancel: threading.Event) -> torch.Tensor | None:
        e, chunk = self.engine, self.engine.prefill_chunk
        logits = None
        for s in range(0, self.width, chunk):
            if cancel.is_set():
                return None
            t = min(chunk, self.width - s)
            tokens = torch.tensor([row[s: s + t] for row in self.tokens], dtype=torch.long, device=e.device)
            logits = e._forward(tokens, self._positions(s, t), self.cache, s, self._mask(s, t))
        self.slot = self.width
        return logits

    def decode(self, next_ids: list[int], room: int) -> torch.Tensor:
        e, s = self.engine, self.slot
        tokens = torch.tensor([[i] for i in next_ids], dtype=torch.long, device=e.device)
        logits = e._forward(tokens, self._positions(s, 1), self.cache, s, self._mask(s, 1))
        self.slot += 1
        return logits

    def close(self) -> None:
        self.cache = None  # a batch cache lives for one call
