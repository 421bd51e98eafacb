"""The recipe's last step: copy the three model folders (PT, SFT, DPO) with their loss curves to
the output directory and write the model card (``README.md``) from the measured results."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from training.recipes.astrai_mini.sources import SOURCES

if TYPE_CHECKING:
    from training.recipes.astrai_mini.reproduce import Recipe

STAGES = ("pt", "sft", "dpo")
RECIPE_DIR = Path(__file__).parent
STEP_ORDER = ("corpus", "text", "tokenizer", "chat", "prepare", "pt", "sft", "dpo", "evaluate")


def write_outputs(recipe: "Recipe") -> dict:
    """Copy ``<stage>/model`` + ``loss.png`` to ``<output_dir>/<name>-<stage>`` and write the card."""
    cfg = recipe.cfg
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    folders = {}
    for stage in STAGES:
        src = recipe.stage_dir(stage) / "model"
        dest = out / f"{cfg.name}-{stage}"
        tmp = out / f".{cfg.name}-{stage}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        png = recipe.stage_dir(stage) / "loss.png"
        if png.is_file():
            shutil.copy2(png, tmp / "loss.png")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        folders[stage] = str(dest)
    steps = {}
    for step in STEP_ORDER:
        step_file = recipe.work / "steps" / f"{step}.json"
        if step_file.is_file():
            steps[step] = json.loads(step_file.read_text(encoding="utf-8"))
    evaluation = json.loads((recipe.work / "eval.json").read_text(encoding="utf-8"))
    manifest = json.loads((recipe.corpus_dir / "manifest.json").read_text(encoding="utf-8"))
    card = render_card(cfg, manifest, evaluation, steps)
    (out / "README.md").write_text(card, encoding="utf-8")
    (out / f"{cfg.name}-eval.json").write_text(json.dumps(evaluation, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    return {"folders": folders, "card": str(out / "README.md")}


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render_card(cfg, manifest: dict, ev: dict, steps: dict) -> str:
    """The model card in Markdown: corpus with versions/checksums/licences, recipe, measurements."""
    from astrai_core.config import ModelConfig

    lines = [f"# {cfg.name}: the shipped bilingual model", ""]
    model_cfg = ModelConfig.from_json(Path(cfg.output_dir) / f"{cfg.name}-dpo" / "config.json")
    params = model_cfg.num_parameters()
    lines += [
        f"Three checkpoints in the AstrAI model-folder format, made by `astrai-train reproduce` "
        f"(recipe `training/recipes/astrai_mini/`): `{cfg.name}-pt` (pre-trained), `{cfg.name}-sft` "
        f"(instruction-tuned) and `{cfg.name}-dpo` (preference-tuned; the app's and the CLI's default).",
        "",
        f"- parameters: {params / 1e6:.2f} M ({model_cfg.num_layers} layers, hidden {model_cfg.hidden_size}, "
        f"{model_cfg.num_heads} heads / {model_cfg.num_kv_heads} KV heads, FFN {model_cfg.intermediate_size}, "
        f"context {model_cfg.max_position_embeddings}, tied embeddings: {model_cfg.tie_word_embeddings})",
        f"- tokenizer: byte-level BPE, {cfg.vocab_size} tokens, trained on the recipe's own corpus",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "",
        "## Corpus",
        "",
        "Only text whose licence allows redistributing a model trained on it. Every archive is pinned "
        "by version and sha256 and verified before it is unpacked.",
        "",
        "| source | kind | version | sha256 | licence |",
        "|---|---|---|---|---|",
    ]
    used = manifest.get("sources") or {}
    for src in SOURCES:
        if used and src.name not in used:
            continue
        lines.append(f"| {src.package} | {src.kind} | {src.version} | `{src.sha256}` | {src.licence} |")
    lines += ["", f"Held out before anything was trained: {cfg.held_permille / 10:.1f}% of every source, "
              "chosen by a hash of the page/entry group (a help page and its translation share a group).", "",
              "| output | records | held out |", "|---|---|---|"]
    for name, out in (manifest.get("outputs") or {}).items():
        c = out.get("counts", {})
        for kind in ("docs", "pairs", "dict"):
            if kind in c:
                lines.append(f"| {name} ({kind}) | {c[kind]} | {c.get(kind + '_held', 0)} |")
    lines += ["", "## Recipe and timings", "", "| step | wall time (s) |", "|---|---|"]
    for step, rec in steps.items():
        lines.append(f"| {step} | {rec.get('seconds', 0):.0f} |")
    for stage in STAGES:
        st = getattr(cfg, stage)
        lines.append("")
        lines.append(f"- {stage}: " + ", ".join(f"{k}={v}" for k, v in st.items()))
    lines += ["", "## Evaluation (held-out)", "", "### Bits per byte", "",
              "| text | PT | SFT | DPO | xz -9 | xz -9 with training text |", "|---|---|---|---|---|---|"]
    for lang in ("en", "zh"):
        xz = ev.get("xz", {}).get(lang, {})
        row = [_f(ev.get(s, {}).get("bits_per_byte", {}).get(lang)) for s in STAGES]
        lines.append(f"| {lang} | " + " | ".join(row) + f" | {_f(xz.get('xz'))} | {_f(xz.get('xz_with_train'))} |")
    lines += ["", "### Grounded QA and translation", "",
              "| metric | SFT | DPO |", "|---|---|---|"]
    for key, label in (("key_span", "answer contains the gold key span"), ("cited_source", "cites the right source"),
                       ("language", "answers in the question's language"),
                       ("refusal_accuracy", "refuses when the sources are silent"),
                       ("false_refusal", "refuses although the answer is there")):
        vals = [_f(ev.get(s, {}).get("grounded_qa", {}).get(key)) for s in ("sft", "dpo")]
        lines.append(f"| {label} | {vals[0]} | {vals[1]} |")
    for key in ("en_to_zh", "zh_to_en"):
        vals = [_f(ev.get(s, {}).get("translation_chrf", {}).get(key), 1) for s in ("sft", "dpo")]
        lines.append(f"| translation chrF {key.replace('_to_', ' → ')} | {vals[0]} | {vals[1]} |")
    dr = ev.get("dpo", {}).get("dpo_reward", {})
    lines += ["", f"DPO reward accuracy on {dr.get('pairs', 0)} held-out pairs: {_f(dr.get('accuracy'))}, "
              f"mean margin {_f(dr.get('margin'))}; by type: "
              + ", ".join(f"{k} {v:.2f}" for k, v in (dr.get("accuracy_by_type") or {}).items()), ""]
    q = ev.get("dpo", {}).get("grounded_qa", {})
    lines += ["Questions: " + f"{q.get('questions', 0)} grounded, {q.get('silent_questions', 0)} with silent sources.",
              "", "## Loss curves", ""]
    for stage in STAGES:
        lines.append(f"- {stage}: `{cfg.name}-{stage}/loss.png`")
    for stage in STAGES:
        res = (steps.get(stage) or {}).get("result") or {}
        if res:
            lines.append(f"- {stage}: {res.get('steps')} optimizer steps of {res.get('planned_steps')} planned "
                         f"(wall-clock budget {res.get('budget_s', 0):.0f} s), {res.get('tokens_seen')} tokens seen")
    lines.append("")
    if cfg.card_notes:
        lines += [(RECIPE_DIR / cfg.card_notes).read_text(encoding="utf-8"), ""]
    return "\n".join(lines)
