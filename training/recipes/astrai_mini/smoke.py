"""Cut the small corpus slice that ``reproduce --smoke`` (and CI) runs on, from a full extraction.

The slice is committed under ``smoke_corpus/`` so CI needs no network; its ``manifest.json``
keeps the version, sha256 and licence of every archive the records came from.
``python -m training.recipes.astrai_mini.smoke <work_dir>/corpus`` rewrites it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.recipes.astrai_mini.corpus import read_jsonl, write_jsonl
from training.recipes.astrai_mini.extract import make_doc

SMOKE_DIR = Path(__file__).with_name("smoke_corpus")


def _shrink(doc: dict, max_chars: int) -> dict:
    sections, left = [], max_chars
    for heading, text in doc["sections"]:
        if left <= 0:
            break
        sections.append([heading, text[:left]])
        left -= len(text)
    out = make_doc(doc["id"], doc["group"], doc["lang"], doc["title"], sections, doc.get("summary", ""))
    out["split"] = doc["split"]
    return out


def make_smoke_corpus(corpus: Path, dest: Path = SMOKE_DIR, docs_train: int = 16, docs_held: int = 4,
                      pairs_train: int = 160, pairs_held: int = 24, doc_chars: int = 800) -> dict:
    """Write the slice to ``dest``; returns its manifest."""
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    out_manifest = {"sources": manifest["sources"], "outputs": {}, "slice_of": "the full recipe corpus"}
    for kind in ("docs", "pairs", "dict"):
        for path in sorted((corpus / kind).glob("*.jsonl")):
            want = {"train": docs_train, "held": docs_held} if kind == "docs" else \
                {"train": pairs_train, "held": pairs_held}
            got: dict[str, list] = {"train": [], "held": []}
            for rec in read_jsonl(path):
                if kind == "docs" and not (rec["title"] or rec.get("summary")) and not path.stem.startswith("fortunes"):
                    continue
                bucket = got[rec["split"]]
                if len(bucket) < want[rec["split"]]:
                    bucket.append(_shrink(rec, doc_chars) if kind == "docs" else rec)
                if all(len(got[s]) >= want[s] for s in got):
                    break
            recs = got["train"] + got["held"]
            write_jsonl(dest / kind / path.name, recs)
            entry = out_manifest["outputs"].setdefault(path.stem, dict(manifest["outputs"][path.stem]))
            entry["counts"] = {**{k: v for k, v in entry.get("counts", {}).items() if not k.startswith(kind)},
                               kind: len(recs), f"{kind}_held": len(got["held"])}
    (dest / "manifest.json").write_text(json.dumps(out_manifest, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    return out_manifest


if __name__ == "__main__":
    make_smoke_corpus(Path(sys.argv[1]))
