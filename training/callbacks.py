"""Trainer callbacks: checkpointing, early stopping, JSON-lines metrics, progress, loss curve.

A callback sees the trainer at a few points; each hook is optional. Callbacks with state
(early stopping) return it from ``state_dict`` so it is checkpointed with the rest.
Only rank 0 writes files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from training.progress import Progress

if TYPE_CHECKING:
    from training.trainer import Trainer


class Callback:
    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer", metrics: dict) -> None: ...
    def on_evaluate(self, trainer: "Trainer", metrics: dict) -> None: ...
    def on_save(self, trainer: "Trainer", checkpoint_dir: Path) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class CheckpointCallback(Callback):
    """Save a resumable checkpoint every ``every`` steps (0 = only at the end) and at the end."""

    def __init__(self, every: int = 0) -> None:
        self.every = every

    def on_step_end(self, trainer, metrics):
        if self.every and trainer.step % self.every == 0:
            trainer.save_checkpoint()

    def on_train_end(self, trainer):
        if trainer.last_saved_step != trainer.step:
            trainer.save_checkpoint()


class EarlyStopping(Callback):
    """Stop when the eval loss has not improved by more than ``min_delta`` for ``patience`` evaluations."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad_evals = 0

    def on_evaluate(self, trainer, metrics):
        loss = metrics["eval/loss"]
        if self.best is None or loss < self.best - self.min_delta:
            self.best, self.bad_evals = loss, 0
        else:
            self.bad_evals += 1
        if self.bad_evals >= self.patience:
            trainer.should_stop = True
            trainer.stop_reason = f"early stopping: no eval improvement > {self.min_delta} in {self.patience} evaluations"

    def state_dict(self):
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state):
        self.best, self.bad_evals = state["best"], state["bad_evals"]


class MetricsLogger(Callback):
    """Append one JSON object per logged step / evaluation / skipped step to ``metrics.jsonl``."""

    def __init__(self, path: str | os.PathLike[str], every: int = 1) -> None:
        self.path = Path(path)
        self.every = every

    def _write(self, trainer, record: dict) -> None:
        if trainer.ctx.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer):
        # After a resume, drop records newer than the checkpoint: those steps are about to be redone.
        if trainer.ctx.is_main and self.path.is_file():
            keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= trainer.step]
            _atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def on_step_end(self, trainer, metrics):
        if metrics.get("skipped") or trainer.step % self.every == 0 or trainer.step == trainer.config.max_steps:
            self._write(trainer, metrics)

    def on_evaluate(self, trainer, metrics):
        self._write(trainer, metrics)


class ProgressBar(Callback):
    """One status line on stderr: step, loss, learning rate, tokens/s."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Progress | None = None

    def on_train_start(self, trainer):
        self.bar = Progress(trainer.config.max_steps, f"{trainer.strategy.name}",
                            enabled=self.enabled and trainer.ctx.is_main)

    def on_step_end(self, trainer, metrics):
        self.bar.update(trainer.step, loss=metrics["loss"], lr=metrics["lr"], tok_s=round(metrics["tokens_per_s"]))

    def on_evaluate(self, trainer, metrics):
        self.bar.update(trainer.step, force=True, eval_loss=metrics["eval/loss"])

    def on_train_end(self, trainer):
        self.bar.close(trainer.step)


class LossCurve(Callback):
    """Draw train and eval loss from ``metrics.jsonl`` to a PNG at every checkpoint."""

    def __init__(self, metrics_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> None:
        self.metrics_path = Path(metrics_path)
        self.png_path = Path(png_path)

    def on_save(self, trainer, checkpoint_dir):
        if trainer.ctx.is_main and self.metrics_path.is_file():
            plot_loss_curve(self.metrics_path, self.png_path, title=f"{trainer.strategy.name} loss")


def plot_loss_curve(metrics_path: Path, png_path: Path, title: str = "loss") -> None:
    """Plot ``loss`` and ``eval/loss`` against ``step`` (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train, evals = [], []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "eval/loss" in rec:
            evals.append((rec["step"], rec["eval/loss"]))
        elif "loss" in rec and not rec.get("skipped"):
            train.append((rec["step"], rec["loss"]))
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), label="train")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    fd, tmp = tempfile.mkstemp(prefix=".loss-", suffix=".png", dir=png_path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, png_path)
    except BaseException:
        os.unlink(tmp)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
