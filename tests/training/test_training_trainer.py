"""The loop: schedule, early stopping, NaN guard, checkpoints, exact resume, the CLI end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from astrai_core.checkpoint import load_model
from astrai_core.errors import AstraiError, ConfigError
from training.callbacks import EarlyStopping
from training.cli import main
from training.sampler import ResumableSampler
from training.schedule import cosine_lr
from training.stages import make_trainer, run_stage
from training.trainer import param_groups

REPO = Path(__file__).resolve().parents[2]


def test_schedule_endpoints():
    kw = dict(max_lr=1e-3, min_lr=1e-4, warmup_steps=10, total_steps=111)
    assert cosine_lr(0, **kw) == pytest.approx(1e-4)  # first warmup step: max_lr / warmup
    assert cosine_lr(9, **kw) == pytest.approx(1e-3)  # end of warmup: the peak
    assert cosine_lr(10, **kw) == pytest.approx(1e-3)
    assert cosine_lr(60, **kw) == pytest.approx(5.5e-4)  # half way down the cosine
    assert cosine_lr(110, **kw) == pytest.approx(1e-4)  # last step: the floor
    assert cosine_lr(500, **kw) == pytest.approx(1e-4)  # and it stays there
    lrs = [cosine_lr(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_sampler_deterministic_disjoint_resumable():
    a = ResumableSampler(103, seed=5, rank=0, world_size=1)
    b = ResumableSampler(103, seed=5, rank=0, world_size=1)
    assert a.epoch_indices(0).tolist() == b.epoch_indices(0).tolist()
    assert a.epoch_indices(0).tolist() != a.epoch_indices(1).tolist()
    assert sorted(a.epoch_indices(0).tolist()) == list(range(103))
    assert ResumableSampler(103, seed=6).epoch_indices(0).tolist() != a.epoch_indices(0).tolist()
    # ranks: disjoint, and together cover every sample (drop_last=False) / all but the tail (drop_last)
    for drop_last in (False, True):
        shards = [ResumableSampler(103, seed=5, rank=r, world_size=4, drop_last=drop_last).epoch_indices(0).tolist()
                  for r in range(4)]
        flat = [i for s in shards for i in s]
        assert len(flat) == len(set(flat))
        assert len(set(flat)) == (100 if drop_last else 103)
        if drop_last:
            assert {len(s) for s in shards} == {25}
    # mid-epoch resume gives exactly the remaining stream, across an epoch boundary
    full = ResumableSampler(10, seed=1, rank=1, world_size=2)
    stream = full.take(12)
    first = ResumableSampler(10, seed=1, rank=1, world_size=2)
    head = first.take(3)
    resumed = ResumableSampler(10, seed=1, rank=1, world_size=2)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert head + resumed.take(9) == stream
    assert resumed.epoch == 2 and resumed.position == 2


def test_weight_decay_groups(stage_cfg):
    tr = make_trainer("pt", stage_cfg("pt"))
    decay, no_decay = param_groups(tr.module, 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 2 * 2 + 1  # 2 norms/layer + final


def test_early_stopping_fires_after_patience(stage_cfg):
    # lr = 0: the eval loss never improves, so training stops after 1 + patience evaluations
    cfg = stage_cfg("pt", max_steps=50, lr=0.0, min_lr=0.0, eval_fraction=0.1, eval_every=1, eval_batches=1,
                    patience=3)
    tr = make_trainer("pt", cfg)
    tr.fit()
    assert tr.step == 4 and "early stopping" in tr.stop_reason
    es = EarlyStopping(patience=2, min_delta=0.5)
    losses = [3.0, 2.8, 2.7, 1.0, 0.9, 0.8]
    stops = []

    class T:
        should_stop = False
        stop_reason = ""

    t = T()
    for loss in losses:
        es.on_evaluate(t, {"eval/loss": loss})
        stops.append(t.should_stop)
    assert stops == [False, False, True, True, True, True]


def test_nan_guard_skips_and_reports(stage_cfg, capsys):
    tr = make_trainer("pt", stage_cfg("pt", max_steps=3))
    before = {k: v.clone() for k, v in tr.module.state_dict().items()}
    with torch.no_grad():
        tr.module.norm.weight[0] = float("nan")
    m = tr.train_step()
    assert m["skipped"] and m["skipped_steps"] == 1 and tr.step == 1
    assert "update skipped" in capsys.readouterr().err
    state = tr.module.state_dict()
    assert all(torch.equal(before[k], state[k]) for k in state if k != "norm.weight")  # no update applied
    with torch.no_grad():
        tr.module.norm.weight[0] = 1.0
    assert not tr.train_step()["skipped"]


def _losses(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("loss"), r.get("eval/loss")) for r in recs]


def test_resume_equals_uninterrupted(stage_cfg, tmp_path):
    """2N steps in one run == N steps + checkpoint + a fresh process resuming for N more (bitwise)."""
    n = 4
    common = dict(max_steps=2 * n, batch_size=2, grad_accum=2, eval_fraction=0.05, eval_every=2, eval_batches=1,
                  patience=5, min_delta=0.01, save_every=2)
    whole = stage_cfg("pt", out_dir=str(tmp_path / "whole"), **common)
    run_stage("pt", whole)
    half = stage_cfg("pt", out_dir=str(tmp_path / "half"), stop_after_steps=n, **common)
    assert run_stage("pt", half) is None  # stopped early, resumable
    state = json.loads((tmp_path / "half" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == n and state["sampler"]["position"] == n * 4
    assert (tmp_path / "half" / "loss.png").stat().st_size > 1000
    # the second half in a fresh process, through the CLI
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "training.cli", "pt", "--resume", str(tmp_path / "half")]
    for k, v in {**half.__dict__, "stop_after_steps": 0}.items():
        if v is not None and k != "model_overrides":
            args += [f"--{k}", str(v)]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "half")
    assert any(e is not None for _, _, e in _losses(tmp_path / "half"))
    ws, hs = (json.loads((tmp_path / r / "checkpoint" / "trainer_state.json").read_text()) for r in ("whole", "half"))
    assert ws["callbacks"] == hs["callbacks"] and ws["sampler"] == hs["sampler"] and ws["step"] == hs["step"] == 2 * n
    a = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "half" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_refuses_to_overwrite_and_checks_stage(stage_cfg, tmp_path):
    cfg = stage_cfg("pt", max_steps=1)
    run_stage("pt", cfg)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        run_stage("pt", cfg)
    sft = stage_cfg("sft", out_dir=cfg.out_dir, init_from=str(Path(cfg.out_dir) / "model"), max_steps=1)
    with pytest.raises(AstraiError, match="stage 'pt'"):
        run_stage("sft", sft, resume=cfg.out_dir)


def test_bfloat16_autocast_trains(stage_cfg):
    tr = make_trainer("pt", stage_cfg("pt", dtype="bfloat16", max_steps=3))
    losses = [tr.train_step()["loss"] for _ in range(3)]
    assert all(math.isfinite(l) for l in losses)
    assert next(tr.module.parameters()).dtype == torch.float32  # master weights stay float32


def test_cli_config_errors_and_dry_run(tmp_path, capsys, stores, tok_dir):
    cfg = tmp_path / "pt.yaml"
    cfg.write_text(f"train_data: {stores['pt']}\nout_dir: {tmp_path / 'o'}\nlr: 1e-3\nmax_steps: 7\n")
    assert main(["pt", "-c", str(cfg), "--max-steps", "9", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 9" in out and "lr: 0.001" in out
    cfg.write_text("train_data: x\nout_dir: y\nlearning_rate: 1e-3\n")
    assert main(["pt", "-c", str(cfg)]) == 2
    assert "unknown key(s) ['learning_rate']" in capsys.readouterr().err
    assert main(["pt", "--train-data", "x", "--out-dir", "y", "--max-steps", "ten", "--dry-run"]) == 2
    assert "max_steps" in capsys.readouterr().err


def test_cli_pt_sft_dpo_rm_end_to_end(tmp_path, corpora, capsys):
    """The whole pipeline through `astrai-train` on a tiny config, in well under a minute."""
    t0 = time.perf_counter()
    common = ["--seq-len", "64", "--batch-size", "4", "--max-steps", "4", "--warmup-steps", "1", "--progress", "false",
              "--device", "cpu"]
    assert main(["tokenizer", "--files", str(corpora["pt"]), "--out-dir", str(tmp_path / "tok"), "--vocab-size", "300",
                 "--num-reserved", "4", "--progress", "false"]) == 0
    for kind, src in (("pt", "pt"), ("sft", "sft"), ("dpo", "dpo")):
        assert main(["prepare", "--kind", kind, "--inputs", str(corpora[src]), "--tokenizer", str(tmp_path / "tok"),
                     "--out-dir", str(tmp_path / f"data-{kind}"), "--progress", "false"]) == 0
    assert main(["pt", "--train-data", str(tmp_path / "data-pt"), "--tokenizer", str(tmp_path / "tok"),
                 "--out-dir", str(tmp_path / "pt"), "--model", "tiny", *common]) == 0
    assert main(["sft", "--train-data", str(tmp_path / "data-sft"), "--init-from", str(tmp_path / "pt" / "model"),
                 "--out-dir", str(tmp_path / "sft"), "--seq-len", "128", *common[2:]]) == 0
    assert main(["dpo", "--train-data", str(tmp_path / "data-dpo"), "--init-from", str(tmp_path / "sft" / "model"),
                 "--out-dir", str(tmp_path / "dpo"), "--beta", "0.2", *common]) == 0
    assert main(["rm", "--train-data", str(tmp_path / "data-dpo"), "--init-from", str(tmp_path / "sft" / "model"),
                 "--out-dir", str(tmp_path / "rm"), *common]) == 0
    assert time.perf_counter() - t0 < 60
    for stage in ("pt", "sft", "dpo", "rm"):
        loaded = load_model(tmp_path / stage / "model")
        assert loaded.config.vocab_size == 300 and loaded.tokenizer.eos_id == 2
        ids = torch.tensor([loaded.tokenizer.encode_chat([{"role": "user", "content": "你好"}])])
        assert torch.isfinite(loaded.model(ids)).all()
        assert (tmp_path / stage / "loss.png").is_file() and (tmp_path / stage / "config.yaml").is_file()
    assert (tmp_path / "rm" / "model" / "reward_head.safetensors").is_file()
    last = json.loads((tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= last.keys()
