"""``astrai-train reproduce [--smoke]``: every step of the shipped model's recipe, each resumable.

Steps, in order: ``corpus`` (fetch + verify + extract + held-out split), ``text`` (PT documents
and per-language text), ``tokenizer``, ``chat`` (SFT conversations, DPO pairs, evaluation sets),
``prepare`` (token stores), ``pt``, ``sft``, ``dpo``, ``evaluate``, ``card`` (model folders,
loss curves and the model card written to ``output_dir``).

A finished step leaves ``<work_dir>/steps/<step>.json`` (its result and wall time) and is skipped
on the next run; a training stage interrupted midway resumes from its last checkpoint.
``--smoke`` runs the same steps on the small corpus committed next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from astrai_core.errors import ConfigError
from training.callbacks import Callback

RECIPE_DIR = Path(__file__).parent
FULL_CONFIG = RECIPE_DIR / "recipe.yaml"
SMOKE_CONFIG = RECIPE_DIR / "smoke.yaml"
SMOKE_CORPUS = RECIPE_DIR / "smoke_corpus"
STEPS = ("corpus", "text", "tokenizer", "chat", "prepare", "pt", "sft", "dpo", "evaluate", "card")


@dataclass
class RecipeConfig:
    """The recipe's knobs; ``recipe.yaml`` (full) and ``smoke.yaml`` (CI) set them."""

    name: str = "astrai-mini"
    work_dir: str = "runs/astrai_mini"
    output_dir: str = "resources/models"
    corpus: str = "fetch"  # "fetch" (pinned archives) or a folder of extracted records (smoke)
    held_permille: int = 20
    seed: int = 0
    vocab_size: int = 8192
    tokenizer_chars: int = 20_000_000
    model: dict = field(default_factory=dict)  # ModelConfig fields
    data: dict = field(default_factory=dict)  # DataConfig fields
    pt: dict = field(default_factory=dict)  # StageConfig fields per stage
    sft: dict = field(default_factory=dict)
    dpo: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)  # limits: grounded, translation, dpo, generation, max_new_tokens
    budgets: dict = field(default_factory=dict)  # stage -> wall-clock seconds (0/absent: run max_steps)
    eval_seq_len: int = 512
    card_notes: str = ""  # a Markdown file (relative to the recipe folder) appended to the model card

    @classmethod
    def load(cls, path: Path, overrides: dict | None = None) -> "RecipeConfig":
        from training.config import build_config, load_yaml

        data = {**load_yaml(path), **(overrides or {})}
        return build_config(cls, data, source=str(path))


class Recipe:
    """Runs the steps of one recipe configuration in a work directory."""

    def __init__(self, cfg: RecipeConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.work = Path(cfg.work_dir)
        self.log = log

    # ---- paths ----------------------------------------------------------------------------
    @property
    def corpus_dir(self) -> Path:
        return self.work / "corpus"

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def tokenizer_dir(self) -> Path:
        return self.work / "tokenizer"

    def store(self, name: str) -> Path:
        return self.work / "stores" / name

    def stage_dir(self, stage: str) -> Path:
        return self.work / stage

    def step_file(self, step: str) -> Path:
        return self.work / "steps" / f"{step}.json"

    # ---- driver ---------------------------------------------------------------------------
    def run(self, until: str | None = None, force: tuple[str, ...] = ()) -> dict:
        """Run every step not yet done (up to and including ``until``); returns all step results."""
        if until is not None and until not in STEPS:
            raise ConfigError(f"unknown step {until!r}; steps are {STEPS}")
        results = {}
        for step in STEPS:
            marker = self.step_file(step)
            if step in force and step in ("pt", "sft", "dpo") and self.stage_dir(step).exists():
                shutil.rmtree(self.stage_dir(step))  # a forced stage trains from scratch, not from its checkpoint
            if marker.is_file() and step not in force:
                results[step] = json.loads(marker.read_text(encoding="utf-8"))
                self.log(f"[reproduce] {step}: done earlier ({results[step]['seconds']:.0f} s)")
            else:
                self.log(f"[reproduce] {step} ...")
                t0 = time.time()
                out = getattr(self, f"step_{step}")()
                results[step] = {"seconds": time.time() - t0, "result": out}
                marker.parent.mkdir(parents=True, exist_ok=True)
                tmp = marker.with_name(marker.name + ".tmp")
                tmp.write_text(json.dumps(results[step], indent=2, ensure_ascii=False, default=str) + "\n",
                               encoding="utf-8")
                os.replace(tmp, marker)
                self.log(f"[reproduce] {step}: done in {results[step]['seconds']:.0f} s")
            if step == until:
                break
        return results

    # ---- steps ----------------------------------------------------------------------------
    def step_corpus(self) -> dict:
        from training.recipes.astrai_mini.corpus import build_corpus

        if self.cfg.corpus == "fetch":
            return build_corpus(self.work, self.cfg.held_permille, self.cfg.seed, log=self.log)
        src = Path(self.cfg.corpus)
        if not src.is_absolute() and not src.exists():
            src = RECIPE_DIR / src
        if not (src / "manifest.json").is_file():
            raise ConfigError(f"corpus {src}: expected a folder of extracted records with manifest.json")
        if self.corpus_dir.exists():
            shutil.rmtree(self.corpus_dir)
        shutil.copytree(src, self.corpus_dir)
        return json.loads((self.corpus_dir / "manifest.json").read_text(encoding="utf-8"))

    def data_config(self):
        from training.config import build_config
        from training.recipes.astrai_mini.data import DataConfig

        return build_config(DataConfig, dict(self.cfg.data), source="data")

    def step_text(self) -> dict:
        from training.recipes.astrai_mini.corpus import read_jsonl, write_jsonl
        from training.recipes.astrai_mini.data import build_text

        stats = build_text(self.corpus_dir, self.data_dir, self.data_config(), self.cfg.seed)
        # The tokenizer learns from a prefix of the (already shuffled) PT documents.
        budget, docs = self.cfg.tokenizer_chars, []
        for rec in read_jsonl(self.data_dir / "pt_train.jsonl"):
            if budget <= 0:
                break
            docs.append(rec)
            budget -= len(rec["text"])
        write_jsonl(self.data_dir / "tokenizer_sample.jsonl", docs)
        return stats

    def step_tokenizer(self) -> dict:
        from training.stages import TokenizerJob, run_tokenizer

        run_tokenizer(TokenizerJob(files=[str(self.data_dir / "tokenizer_sample.jsonl")],
                                   out_dir=str(self.tokenizer_dir), vocab_size=self.cfg.vocab_size,
                                   progress=False))
        return {"vocab_size": self.cfg.vocab_size, "path": str(self.tokenizer_dir)}

    def step_chat(self) -> dict:
        from astrai_core.tokenizer import Tokenizer
        from training.recipes.astrai_mini.data import build_chat

        tok = Tokenizer.from_dir(self.tokenizer_dir)
        return build_chat(self.corpus_dir, self.data_dir, self.data_config(), lambda s: len(tok.encode(s)),
                          self.cfg.seed)

    def step_prepare(self) -> dict:
        from training.stages import PrepareJob, run_prepare

        jobs = {"pt_train": ("pt", "pt_train.jsonl"), "sft_train": ("sft", "sft_train.jsonl"),
                "sft_held": ("sft", "sft_held.jsonl"), "dpo_train": ("dpo", "dpo_train.jsonl"),
                "dpo_held": ("dpo", "dpo_held.jsonl")}
        from training.data.store import TokenStore

        out = {}
        for name, (kind, file) in jobs.items():
            run_prepare(PrepareJob(kind=kind, inputs=[str(self.data_dir / file)], tokenizer=str(self.tokenizer_dir),
                                   out_dir=str(self.store(name)), progress=False))
            meta = TokenStore(self.store(name)).meta
            out[name] = {k: meta[k] for k in ("records", "tokens", "trained_tokens") if k in meta}
        return out

    def _stage(self, stage: str, extra: dict) -> dict:
        """One training stage through ``training.stages.make_trainer``, resuming a checkpoint if there
        is one, with the stage's wall-clock budget (``budgets``) enforced by :class:`TimeBudget`."""
        from training.config import build_config, to_yaml
        from training.distributed import init_distributed, shutdown
        from training.stages import StageConfig, make_trainer
        from training.trainer import STATE_FILE

        out = self.stage_dir(stage)
        data = {"out_dir": str(out), "seed": self.cfg.seed, "progress": False, **extra,
                **getattr(self.cfg, stage)}
        cfg = build_config(StageConfig, data, source=f"recipe {stage}")
        planned = cfg.max_steps
        budget = float(self.cfg.budgets.get(stage, 0) or 0)
        t0 = time.time()
        ctx = init_distributed(cfg.device)
        try:
            trainer = make_trainer(stage, cfg, ctx)
            if (out / "checkpoint" / STATE_FILE).is_file():
                self.log(f"[reproduce] {stage}: resuming from {out / 'checkpoint'}")
                trainer.load_checkpoint(out)
            if budget:
                trainer.callbacks.insert(0, TimeBudget(budget, self.log))
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
            trainer.fit()
            model = trainer.export()
        finally:
            shutdown(ctx)
        return {"model": str(model), "train_seconds_this_run": time.time() - t0, "planned_steps": planned,
                "steps": trainer.step, "tokens_seen": trainer.tokens_seen, "budget_s": budget,
                "final": _last_metrics(out)}

    def step_pt(self) -> dict:
        return self._stage("pt", {"train_data": str(self.store("pt_train")), "tokenizer": str(self.tokenizer_dir),
                                  "model_overrides": dict(self.cfg.model)})

    def step_sft(self) -> dict:
        return self._stage("sft", {"train_data": str(self.store("sft_train")), "eval_data": str(self.store("sft_held")),
                                   "init_from": str(self.stage_dir("pt") / "model")})

    def step_dpo(self) -> dict:
        return self._stage("dpo", {"train_data": str(self.store("dpo_train")), "eval_data": str(self.store("dpo_held")),
                                   "init_from": str(self.stage_dir("sft") / "model")})

    def step_evaluate(self) -> dict:
        from training.recipes.astrai_mini.evaluate import evaluate_model, write_json, xz_baselines

        limits = dict(self.cfg.eval)
        results = {"xz": xz_baselines(self.data_dir, limits)}
        beta = float(self.cfg.dpo.get("beta", 0.1))
        for stage in ("pt", "sft", "dpo"):
            self.log(f"[reproduce] evaluate {stage} ...")
            results[stage] = evaluate_model(
                self.stage_dir(stage) / "model", self.data_dir, self.cfg.eval_seq_len,
                {**limits, "generation": stage != "pt" and limits.get("generation", True)},
                reference_dir=self.stage_dir("sft") / "model" if stage == "dpo" else None, beta=beta)
        write_json(self.work / "eval.json", results)
        return results

    def step_card(self) -> dict:
        from training.recipes.astrai_mini.card import write_outputs

        return write_outputs(self)


class TimeBudget(Callback):
    """Fit a stage into a wall-clock budget: from the measured seconds per step, lower the trainer's
    ``max_steps`` so the run ends in time, and the cosine schedule still decays to its floor.

    It re-plans every ``every`` steps (the machine is shared, so the speed drifts): a slow spell
    lowers ``max_steps`` and a faster one raises it again, never above the configured value (the
    session-2 run kept the lowest plan of a busy quarter hour and stopped PT at half its steps).
    """

    def __init__(self, seconds: float, log: Callable[[str], None] = print, every: int = 10) -> None:
        self.seconds = seconds
        self.log = log
        self.every = every
        self.t0 = 0.0
        self.step0 = 0
        self.planned = 0

    def on_train_start(self, trainer) -> None:
        self.t0, self.step0, self.planned = time.time(), trainer.step, trainer.config.max_steps

    def on_step_end(self, trainer, metrics: dict) -> None:
        done = trainer.step - self.step0
        if done == 0 or done % self.every:
            return
        elapsed = time.time() - self.t0
        per_step = elapsed / done
        # Keep 5% of the budget for the final evaluation and export.
        fit = trainer.step + int(max(0.0, 0.95 * self.seconds - elapsed) / per_step)
        new = max(trainer.step + 1, min(self.planned, fit))
        if new != trainer.config.max_steps:
            self.log(f"[reproduce] time budget: {per_step:.2f} s/step, max_steps {trainer.config.max_steps} -> {new}")
            trainer.config.max_steps = new



def _last_metrics(out: Path) -> dict:
    """The last train and eval records of a stage's ``metrics.jsonl``."""
    path = out / "metrics.jsonl"
    last: dict[str, Any] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                last[rec.get("kind", "train")] = rec
    return last


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help="run every step on the small committed corpus (minutes)")
    parser.add_argument("-c", "--config", help="recipe YAML (default: the full recipe, or smoke.yaml with --smoke)")
    parser.add_argument("--work-dir", help="where intermediate files and checkpoints go")
    parser.add_argument("--output-dir", help="where the final model folders and the model card go")
    parser.add_argument("--until", choices=STEPS, help="stop after this step")
    parser.add_argument("--force", nargs="+", choices=STEPS, default=(), help="re-run these steps even if done")


def run_command(args: argparse.Namespace) -> int:
    path = Path(args.config) if args.config else (SMOKE_CONFIG if args.smoke else FULL_CONFIG)
    overrides = {k: v for k, v in (("work_dir", args.work_dir), ("output_dir", args.output_dir)) if v}
    cfg = RecipeConfig.load(path, overrides)
    Recipe(cfg).run(args.until, tuple(args.force))
    return 0


HELP = "run the shipped model's recipe end to end (resumable; --smoke for the CI slice)"
