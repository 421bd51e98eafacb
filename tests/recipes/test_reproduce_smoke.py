"""``astrai-train reproduce --smoke`` end to end on the committed corpus slice: every step runs,
the three model folders load and generate, the model card records the corpus, and a second run
resumes instead of redoing work."""

from __future__ import annotations

import json

from astrai_core.checkpoint import load_model
from astrai_core.generation import Engine, GenerationConfig
from training.cli import build_parser
from training.recipes.astrai_mini.reproduce import SMOKE_CONFIG, STEPS, Recipe, RecipeConfig
from training.recipes.astrai_mini.sources import SOURCES


def test_reproduce_smoke_end_to_end_and_resume(tmp_path):
    cfg = RecipeConfig.load(SMOKE_CONFIG, {"work_dir": str(tmp_path / "work"), "output_dir": str(tmp_path / "models")})
    logs: list[str] = []
    results = Recipe(cfg, logs.append).run()
    assert list(results) == list(STEPS)
    # replay windows of PT text are in the SFT set, trained on every token
    assert results["chat"]["result"]["train_replay"] == 50
    sft = [json.loads(line) for line in (tmp_path / "work" / "data" / "sft_train.jsonl").read_text().splitlines()]
    assert sum("text" in r for r in sft) == 50 and all(0 < len(r["text"]) <= 1500 for r in sft if "text" in r)

    for stage in ("pt", "sft", "dpo"):
        folder = tmp_path / "models" / f"astrai-smoke-{stage}"
        assert (folder / "loss.png").stat().st_size > 1000
        engine = Engine(load_model(folder))
        out = engine.chat([{"role": "user", "content": "你好"}], GenerationConfig(max_new_tokens=4))
        assert out.completion_tokens >= 1

    ev = json.loads((tmp_path / "work" / "eval.json").read_text())
    for lang in ("en", "zh"):
        assert ev["pt"]["bits_per_byte"][lang] > 0
        assert 0 < ev["xz"][lang]["xz_with_train"] <= ev["xz"][lang]["xz"] * 1.05
    assert set(ev["dpo"]["grounded_qa"]) >= {"key_span", "cited_source", "language", "refusal_accuracy"}
    assert 0 <= ev["dpo"]["dpo_reward"]["accuracy"] <= 1

    card = (tmp_path / "models" / "README.md").read_text()
    for src in SOURCES:
        assert src.sha256 in card and src.version in card

    # A second run finds every step done and does nothing.
    logs.clear()
    again = Recipe(cfg, logs.append).run()
    assert all("done earlier" in line for line in logs)
    assert again["pt"]["result"]["steps"] == results["pt"]["result"]["steps"]


def test_reproduce_is_an_astrai_train_command():
    args = build_parser().parse_args(["reproduce", "--smoke", "--until", "tokenizer", "--work-dir", "w"])
    assert (args.command, args.smoke, args.until, args.work_dir) == ("reproduce", True, "tokenizer", "w")
