"""The one training loop. A :class:`~training.strategies.Strategy` supplies the loss; everything
else (accumulation, clipping, AdamW, schedule, autocast, NaN guard, evaluation, checkpoints,
resume, data parallelism) lives here once.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from astrai_core.checkpoint.common import swap_in_dir
from astrai_core.errors import CheckpointError, ConfigError
from astrai_core.tokenizer import Tokenizer
from training.callbacks import Callback
from training.data.datasets import collate
from training.distributed import (
    DistContext, all_reduce_sum, barrier, full_state, load_full_state, no_sync, wrap_model,
)
from training.sampler import ResumableSampler
from training.schedule import cosine_lr
from training.strategies import Strategy

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "training_state.pt"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class TrainConfig:
    """Loop hyper-parameters. ``batch_size`` is per rank and per micro-batch; the tokens of one optimizer
    step are ``batch_size * grad_accum * world_size`` sequences."""

    max_steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping (the norm is still measured and logged)
    dtype: str = "float32"  # autocast dtype: float32 (off) or bfloat16; weights stay float32
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end (when there is an eval set)
    eval_batches: int = 8
    save_every: int = 0  # 0: checkpoint only at the end
    stop_after_steps: int = 0  # stop (with a checkpoint) after this many steps of this invocation; 0 = never
    parallel: str = "auto"  # auto | none | ddp | fsdp

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear and embedding weights); never decay norms, biases or other 1-D params."""
    decay, no_decay, seen = [], [], set()
    for _, p in module.named_parameters():
        if not p.requires_grad or id(p) in seen:  # tied weights appear twice
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(module: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    # fused AdamW exists on CUDA; elsewhere the default (foreach) implementation is used
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(param_groups(module, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, **fused)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Train ``module`` with ``strategy`` on ``train_data``; write everything under ``out_dir``.

    ``out_dir/checkpoint/`` holds the resumable state, ``out_dir/metrics.jsonl`` the metrics,
    ``out_dir/loss.png`` the curve and ``out_dir/model/`` the exported model folder (see :meth:`export`).
    """

    def __init__(self, module: nn.Module, strategy: Strategy, train_data, config: TrainConfig,
                 out_dir: str | os.PathLike[str], tokenizer: Tokenizer | None = None, eval_data=None,
                 callbacks: list[Callback] | None = None, ctx: DistContext | None = None) -> None:
        config.validate()
        self.config = config
        self.ctx = ctx or DistContext()
        self.strategy = strategy.to(self.ctx.device)
        self.model = wrap_model(module, self.ctx, config.parallel)  # also moves it to the device
        self.module = module
        self.optimizer = make_optimizer(self.module, config, self.ctx.device)
        self.train_data = train_data
        self.eval_data = eval_data
        self.tokenizer = tokenizer
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks or [])
        self.sampler = ResumableSampler(len(train_data), seed=config.seed, rank=self.ctx.rank,
                                        world_size=self.ctx.world_size)
        self.step = 0
        self.tokens_seen = 0
        self.skipped_steps = 0
        self.should_stop = False
        self.stop_reason = ""
        self.last_saved_step = -1
        self.last_metrics: dict = {}

    # ---- pieces of a step -------------------------------------------------------------------
    def autocast(self):
        if self.config.dtype == "float32":
            return nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=DTYPES[self.config.dtype])

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.ctx.device, non_blocking=True) for k, v in batch.items()}

    def next_micro_batches(self) -> list[dict[str, torch.Tensor]]:
        bs = self.config.batch_size
        return [collate([self.train_data[i] for i in self.sampler.take(bs)]) for _ in range(self.config.grad_accum)]

    def lr_at(self, step: int) -> float:
        c = self.config
        return cosine_lr(step, c.lr, c.min_lr, c.warmup_steps, c.max_steps)

    def accumulate_gradients(self, micro: list[dict[str, torch.Tensor]]) -> tuple[dict[str, float], int]:
        """Forward/backward over the micro-batches of one step, leaving the step's gradient in ``.grad``.

        Returns the per-unit metrics (reduced over ranks) and the tokens read by all ranks.
        """
        self.model.train()
        micro = [self._to_device(b) for b in micro]
        local_units = sum(self.strategy.units(b) for b in micro)
        local_tokens = sum(self.strategy.tokens(b) for b in micro)
        counts = all_reduce_sum(torch.tensor([local_units, local_tokens], dtype=torch.float64,
                                             device=self.ctx.device), self.ctx)
        units, tokens = float(counts[0]), int(counts[1])
        # each rank scales by world/units so that DDP's gradient *average* equals sum(loss)/units
        scale = self.ctx.world_size / max(units, 1.0)
        sums: dict[str, torch.Tensor] = {}
        for j, batch in enumerate(micro):
            with no_sync(self.model, j == len(micro) - 1), self.autocast():
                loss_sum, metrics = self.strategy.loss_sum(self.model, batch)
            (loss_sum * scale).backward()
            for k, v in {"loss": loss_sum, **metrics}.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
        names = sorted(sums)
        totals = all_reduce_sum(torch.stack([sums[k] for k in names]).double(), self.ctx) / max(units, 1.0)
        return {k: float(v) for k, v in zip(names, totals)}, tokens

    def train_step(self) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches; returns the logged metrics."""
        t0 = time.perf_counter()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out, tokens = self.accumulate_gradients(self.next_micro_batches())
        clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip))
        skipped = not (math.isfinite(out["loss"]) and math.isfinite(grad_norm))
        if skipped:  # NaN/Inf guard: drop this update, keep the data position moving
            self.skipped_steps += 1
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += tokens
        dt = time.perf_counter() - t0
        out.update(step=self.step, lr=lr, grad_norm=grad_norm, tokens=self.tokens_seen,
                   tokens_per_s=tokens / dt if dt > 0 else 0.0, skipped=skipped, epoch=self.sampler.epoch)
        if skipped:
            out["skipped_steps"] = self.skipped_steps
            if self.ctx.is_main:
                print(f"\n[warn] step {self.step}: non-finite loss={out['loss']} grad_norm={grad_norm}; "
                      f"update skipped ({self.skipped_steps} so far)", file=sys.stderr, flush=True)
        return out

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean loss (and strategy metrics) on the held-out split, sharded across ranks."""
        self.model.eval()
        # equal shards on every rank: FSDP all-gathers inside forward, so ranks must run the same batches
        n = len(self.eval_data) // self.ctx.world_size * self.ctx.world_size
        bs = self.config.batch_size
        idx = list(range(self.ctx.rank, n, self.ctx.world_size))[: bs * self.config.eval_batches]
        sums: dict[str, torch.Tensor] = {}
        units = 0.0
        for start in range(0, len(idx), bs):
            batch = self._to_device(collate([self.eval_data[i] for i in idx[start:start + bs]]))
            with self.autocast():
                loss_sum, metrics = self.strategy.loss_sum(self.model, batch)
            units += self.strategy.units(batch)
            for k, v in {"loss": loss_sum, **metrics}.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
        names = ["loss", *sorted(k for k in sums if k != "loss")] if sums else ["loss"]
        vec = torch.tensor([float(sums.get(k, 0.0)) for k in names] + [units], dtype=torch.float64,
                           device=self.ctx.device)
        vec = all_reduce_sum(vec, self.ctx)
        total = max(float(vec[-1]), 1.0)
        out = {f"eval/{k}": float(v) / total for k, v in zip(names, vec[:-1])}
        out["step"] = self.step
        return out

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until ``max_steps``, early stopping or ``stop_after_steps``; returns the last metrics."""
        c = self.config
        for cb in self.callbacks:
            cb.on_train_start(self)
        start = self.step
        while self.step < c.max_steps and not self.should_stop:
            metrics = self.train_step()
            self.last_metrics = metrics
            at_end = self.step == c.max_steps
            can_eval = self.eval_data is not None and len(self.eval_data) >= self.ctx.world_size
            if can_eval and ((c.eval_every and self.step % c.eval_every == 0) or at_end):
                ev = self.evaluate()
                self.last_metrics = {**metrics, **ev}
                for cb in self.callbacks:
                    cb.on_evaluate(self, ev)
            # after the evaluation, so a checkpoint taken at this step includes its effect (early stopping)
            for cb in self.callbacks:
                cb.on_step_end(self, metrics)
            if c.stop_after_steps and self.step - start >= c.stop_after_steps:
                self.should_stop, self.stop_reason = True, f"stop_after_steps={c.stop_after_steps} reached"
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.last_metrics

    # ---- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def save_checkpoint(self) -> Path:
        """Write model, optimizer, schedule position, sampler position, callback and RNG state atomically."""
        model_state, optim_state = full_state(self.module, self.optimizer)  # collective under FSDP
        final = self.checkpoint_dir
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.tmp-", dir=self.out_dir))
            try:
                torch.save({"model": model_state, "optimizer": optim_state, "rng": rng_state()}, tmp / TENSORS_FILE)
                state = {
                    "step": self.step, "tokens_seen": self.tokens_seen, "skipped_steps": self.skipped_steps,
                    "schedule": {"lr": self.config.lr, "min_lr": self.config.min_lr,
                                 "warmup_steps": self.config.warmup_steps, "total_steps": self.config.max_steps,
                                 "next_lr": self.lr_at(self.step)},
                    "sampler": self.sampler.state_dict(),
                    "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
                    "strategy": self.strategy.name, "config": asdict(self.config),
                    "world_size": self.ctx.world_size,
                }
                (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
                swap_in_dir(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self.last_saved_step = self.step
        for cb in self.callbacks:
            cb.on_save(self, final)
        barrier(self.ctx)
        return final

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; ``path`` is the checkpoint or the run folder."""
        path = Path(path)
        if (path / "checkpoint" / STATE_FILE).is_file():
            path = path / "checkpoint"
        sfile, tfile = path / STATE_FILE, path / TENSORS_FILE
        if not sfile.is_file() or not tfile.is_file():
            raise CheckpointError(f"{path}: not a training checkpoint ({STATE_FILE} / {TENSORS_FILE} missing)")
        state = json.loads(sfile.read_text(encoding="utf-8"))
        if state["strategy"] != self.strategy.name:
            raise CheckpointError(f"{path}: checkpoint is from stage {state['strategy']!r}, "
                                  f"this run is {self.strategy.name!r}")
        # weights_only=False: the RNG states include numpy/python objects; checkpoints are our own files
        tensors = torch.load(tfile, map_location="cpu", weights_only=False)
        load_full_state(self.module, self.optimizer, tensors["model"], tensors["optimizer"])
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.skipped_steps = state["skipped_steps"]
        self.sampler.load_state_dict(state["sampler"])
        for cb in self.callbacks:
            cb_state = state["callbacks"].get(type(cb).__name__)
            if cb_state:
                cb.load_state_dict(cb_state)
        set_rng_state(tensors["rng"])
        self.last_saved_step = self.step

    def export(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Write the trained model as a model folder (default ``out_dir/model``); rank 0 writes."""
        if self.tokenizer is None:
            raise ConfigError("export needs a tokenizer")
        model_state, _ = full_state(self.module, None)  # collective under FSDP; plain CPU tensors
        target = Path(path) if path is not None else self.out_dir / "model"
        out = None
        if self.ctx.is_main:
            out = self.strategy.export(model_state, self._model_config(), self.tokenizer, target)
        barrier(self.ctx)
        return out

    def _model_config(self):
        return self.module.lm.config if hasattr(self.module, "lm") else self.module.config
