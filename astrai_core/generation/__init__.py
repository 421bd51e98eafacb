"""Text generation: a preallocated KV cache, chunked prefill, token-by-token decode, sampling
as pure functions, weight-only int8/int4 quantization, and sync / batch / streaming layers
over one loop.

Contract (used by the app, the CLI and the API server)::

    from astrai_core.generation import Engine, GenerationConfig, GenerationResult
    engine = Engine(loaded_model, dtype=None, quantize=None, max_seq_len=None, lookahead=4)
    # dtype: None (auto: bfloat16 where the CPU multiplies bf16 natively, else float32) | "float32" | "bfloat16"
    #        without native bf16, "bfloat16" stores the linear weights in bf16 under float32 activations
    # quantize: None | "int8" | "int4" (weight-only, applied now; int4 layers need in_features % 32 == 0
    #           and out_features % 16 == 0, others stay in the float dtype)
    # max_seq_len: cap on prompt + generated tokens (default and maximum: the model's context)
    # lookahead: most tokens drafted from the context per decode step (lookup decoding, 0..7; 0 = off)
    engine.dtype -> torch.dtype (activations, norms, attention, KV cache)
    engine.weights -> "float32" | "bfloat16" | "int8" | "int4" (how the linear weights are stored)
    engine.generate(prompt, config) -> GenerationResult          # prompt: str | list[int]
    engine.generate_batch(prompts, configs) -> list[GenerationResult]   # one config or one per prompt
    engine.stream(prompt, config) -> Iterator[str]                # text deltas; then engine.last_result
    engine.chat(messages, config) / engine.stream_chat(messages, config)  # tokenizer.render_chat
    engine.cancel()                                               # thread-safe, see below
    engine.count_tokens(text) -> int; engine.context_length -> int

    GenerationConfig(max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0,
                     repetition_penalty=1.0, seed=None, stop=[])
    GenerationResult(text, token_ids, finish_reason, prompt_tokens, completion_tokens,
                     prefill_tokens, timings={"ttft_s", "prefill_s", "decode_s"}, drafted, accepted)

Behaviour:

- Every call stops at the tokenizer's stop ids (EOS and ``<|im_end|>``), at the first stop string
  (never part of ``text``; streamed text holds back a tail that could become one), or after
  ``max_new_tokens`` (``finish_reason`` "stop" / "length").
- A prompt whose length plus ``max_new_tokens`` exceeds ``context_length`` raises
  :class:`astrai_core.errors.GenerationError` before any work is done.
- Single-prompt calls (generate, stream, chat) share one session KV cache allocated once for
  ``max_seq_len``; a prompt that starts with tokens already in the cache only prefills the new
  suffix (``prefill_tokens`` says how many were computed). Long prompts are prefilled in chunks
  of 512 tokens and only the last position's logits are computed.
- Lookup decoding (single-prompt calls on the compiled step): each decode step may also run up to
  ``lookahead`` tokens guessed from the context (what followed the latest earlier occurrence of the
  last 3, 2 or 1 tokens) in the same pass over the weights; when the sampler then picks a guessed
  token, its logits are already computed. The step's rows are bit for bit one-token steps and the
  sampler runs token by token as always, so the output (greedy, or sampled with a seed) is exactly
  the output without drafting; answers that quote their sources or the conversation take fewer
  passes. ``drafted`` / ``accepted`` count the guesses verified and those generated as guessed.
- Batch calls left-pad the prompts into a cache of their own, freed when the call returns.
- Threading: one engine is driven by one worker thread at a time. ``cancel()`` may be called from
  any thread; the running call ends within one decode step (or prefill chunk) with
  ``finish_reason`` "cancelled", and the engine stays usable.
- The engine takes over ``loaded_model.model``: it converts it in place to the activation dtype,
  fuses q/k/v and gate/up projections, swaps its linears for bfloat16/int8/int4 weights
  (:mod:`astrai_core.generation.quantize`) and, where the compiled kernels are built, runs each
  batch-1 decode step (one token, or one token and its draft) through
  :class:`astrai_core.generation.kernels.DecodeStep`.
"""

from astrai_core.generation.engine import Engine, GenerationConfig, GenerationResult, resolve_dtype

__all__ = ["Engine", "GenerationConfig", "GenerationResult", "resolve_dtype"]
