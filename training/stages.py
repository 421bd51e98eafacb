"""The Python API behind ``astrai-train``: one function per job, each taking a config dataclass.

- :func:`run_tokenizer` (``TokenizerJob``) -> tokenizer folder
- :func:`run_prepare` (``PrepareJob``) -> token store folder
- :func:`run_stage` (``"pt" | "sft" | "dpo" | "rm"``, ``StageConfig``) -> ``out_dir/model``, a model
  folder ``astrai_core.load_model`` opens (the RM folder also holds ``reward_head.safetensors``).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from astrai_core.checkpoint import load_model
from astrai_core.config import ModelConfig, preset
from astrai_core.errors import ConfigError
from astrai_core.model import Transformer
from astrai_core.tokenizer import Tokenizer
from training.callbacks import CheckpointCallback, EarlyStopping, LossCurve, MetricsLogger, ProgressBar
from training.config import to_yaml
from training.data.datasets import dataset_for, split_holdout
from training.data.prepare import KINDS, prepare
from training.data.store import TokenStore
from training.data.tokenizer_train import train_tokenizer
from training.distributed import init_distributed, shutdown
from training.strategies import DPOStrategy, PTStrategy, RewardModel, RMStrategy, SFTStrategy, Strategy
from training.trainer import STATE_FILE, TrainConfig, Trainer

STAGES = ("pt", "sft", "dpo", "rm")


@dataclass
class TokenizerJob:
    """``astrai-train tokenizer``: byte-level BPE on text/JSONL files."""

    files: list[str]
    out_dir: str
    vocab_size: int = 32000
    num_reserved: int = 64
    min_frequency: int = 2
    text_field: str = "text"
    progress: bool = True


@dataclass
class PrepareJob:
    """``astrai-train prepare``: raw JSONL/TXT -> token store of ``kind`` (pt, sft, dpo, rm)."""

    kind: str
    inputs: list[str]
    tokenizer: str
    out_dir: str
    text_field: str = "text"
    progress: bool = True

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class StageConfig(TrainConfig):
    """A training stage: the loop's :class:`TrainConfig` plus data, model and stage options."""

    train_data: str = ""  # token store folder (from `prepare`)
    out_dir: str = ""
    eval_data: str | None = None  # token store for evaluation; else a held-out split:
    eval_fraction: float = 0.0  # fraction of train_data held out when eval_data is unset
    seq_len: int = 256  # tokens per sequence (PT window; SFT/DPO/RM truncation)
    init_from: str | None = None  # model folder to start from (PT from scratch when unset)
    tokenizer: str | None = None  # tokenizer folder; defaults to init_from's
    model: str = "tiny"  # from scratch: preset name or path to a config.json
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields replacing the preset's
    ref_model: str | None = None  # DPO reference model folder; defaults to init_from
    beta: float = 0.1  # DPO temperature
    label_smoothing: float = 0.0  # DPO conservative label smoothing in [0, 0.5)
    nll_weight: float = 0.0  # DPO: weight of the chosen answer's per-token NLL added to the loss (RPO)
    patience: int = 0  # early stopping after this many evaluations without improvement; 0 = off
    min_delta: float = 0.0
    device: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        super().validate()
        if not self.train_data:
            raise ConfigError("train_data is required (a token store folder made by `astrai-train prepare`)")
        if not self.out_dir:
            raise ConfigError("out_dir is required")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.nll_weight < 0:
            raise ConfigError(f"nll_weight must be >= 0, got {self.nll_weight}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.seq_len < 2:
            raise ConfigError(f"seq_len must be >= 2, got {self.seq_len}")

    def train_config(self) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})


def run_tokenizer(job: TokenizerJob) -> Path:
    train_tokenizer(job.files, job.out_dir, job.vocab_size, job.num_reserved, job.min_frequency,
                    job.text_field, show_progress=job.progress)
    return Path(job.out_dir)


def run_prepare(job: PrepareJob) -> Path:
    tok = Tokenizer.from_dir(job.tokenizer)
    prepare(job.kind, job.inputs, tok, job.out_dir, job.text_field, show_progress=job.progress)
    return Path(job.out_dir)


def build_model(cfg: StageConfig) -> tuple[Transformer, Tokenizer]:
    """Start from ``init_from`` or build a fresh model from ``model`` + ``model_overrides``."""
    if cfg.init_from:
        loaded = load_model(cfg.init_from)
        tokenizer = Tokenizer.from_dir(cfg.tokenizer) if cfg.tokenizer else loaded.tokenizer
        model = loaded.model.float()
        for p in model.parameters():
            p.requires_grad_(True)
        return model, tokenizer
    if not cfg.tokenizer:
        raise ConfigError("a stage from scratch needs `tokenizer` (a folder from `astrai-train tokenizer`)")
    tokenizer = Tokenizer.from_dir(cfg.tokenizer)
    mc = ModelConfig.from_json(cfg.model) if cfg.model.endswith(".json") else preset(cfg.model)
    data = {**mc.to_dict(), "vocab_size": tokenizer.vocab_size, **cfg.model_overrides}
    if "head_dim" not in cfg.model_overrides and {"hidden_size", "num_heads"} & set(cfg.model_overrides):
        data["head_dim"] = None  # re-derive it from the overridden shape
    mc = ModelConfig.from_dict(data, source="model_overrides")
    if mc.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"model vocab_size={mc.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}")
    model = Transformer(mc)
    model.init_weights(seed=cfg.seed)
    return model, tokenizer


def build_strategy(stage: str, cfg: StageConfig, model: Transformer) -> tuple[Strategy, nn.Module]:
    """The stage's strategy and the module it trains."""
    if stage == "pt":
        return PTStrategy(), model
    if stage == "sft":
        return SFTStrategy(), model
    if stage == "dpo":
        ref_path = cfg.ref_model or cfg.init_from
        if not ref_path:
            raise ConfigError("dpo needs `ref_model` or `init_from` (the SFT model folder)")
        return DPOStrategy(load_model(ref_path).model.float(), cfg.beta, cfg.label_smoothing,
                           cfg.nll_weight), model
    if stage == "rm":
        return RMStrategy(), RewardModel.from_lm(model, cfg.init_from)
    raise ConfigError(f"unknown stage {stage!r}; expected one of {STAGES}")


def make_trainer(stage: str, cfg: StageConfig, ctx=None) -> Trainer:
    """Everything :func:`run_stage` builds, without running it (for tests and custom loops)."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    model, tokenizer = build_model(cfg)
    strategy, module = build_strategy(stage, cfg, model)
    data = dataset_for(stage, TokenStore(cfg.train_data), cfg.seq_len)
    train, held_out = split_holdout(data, cfg.eval_fraction if not cfg.eval_data else 0.0, cfg.seed)
    eval_data = dataset_for(stage, TokenStore(cfg.eval_data), cfg.seq_len) if cfg.eval_data else held_out
    if len(train) == 0:
        raise ConfigError(f"{cfg.train_data}: no usable samples at seq_len={cfg.seq_len}")
    skipped = getattr(data, "skipped", 0)
    if skipped and (ctx is None or ctx.is_main):
        print(f"[{stage}] {skipped} of {skipped + len(data)} samples skipped: their prompt fills seq_len={cfg.seq_len}",
              file=sys.stderr)
    out = Path(cfg.out_dir)
    callbacks = [MetricsLogger(out / "metrics.jsonl", cfg.log_every), ProgressBar(cfg.progress),
                 LossCurve(out / "metrics.jsonl", out / "loss.png")]
    if cfg.patience:
        callbacks.append(EarlyStopping(cfg.patience, cfg.min_delta))
    callbacks.append(CheckpointCallback(cfg.save_every))
    return Trainer(module, strategy, train, cfg.train_config(), out, tokenizer, eval_data, callbacks, ctx)


def run_stage(stage: str, cfg: StageConfig, resume: str | None = None) -> Path | None:
    """Run one stage (under torchrun when launched so); returns ``out_dir/model`` once training is complete.

    Returns ``None`` when the run stopped early because of ``stop_after_steps`` (resume it later).
    """
    ctx = init_distributed(cfg.device)
    try:
        out = Path(cfg.out_dir)
        if resume is None and (out / "checkpoint" / STATE_FILE).is_file():
            raise ConfigError(f"{out} already holds a checkpoint; pass --resume {out} or pick another out_dir")
        trainer = make_trainer(stage, cfg, ctx)
        if resume is not None:
            trainer.load_checkpoint(resume)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        trainer.fit()
        if cfg.stop_after_steps and trainer.step < cfg.max_steps and "stop_after_steps" in trainer.stop_reason:
            return None
        return trainer.export()
    finally:
        shutdown(ctx)
