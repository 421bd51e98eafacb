"""Retrieval benchmark: indexing throughput, peak RSS, search latency, bilingual retrieval quality.

Inputs are real PDFs from Debian packages, fetched once with apt (``apt-get download`` + ``dpkg -x``)
into ``--cache`` (default /tmp/astrai-bench):

    debian-reference-en / -zh-cn   about 260 pages each, the same text in two languages
    linuxcnc-doc-zh-cn             LinuxCNC_Documentation_zh_CN.pdf, 1,335 pages (``--big``)

Usage::

    python benchmarks/bench_rag.py                 # throughput + quality on the two debian-reference PDFs
    python benchmarks/bench_rag.py --big           # also the 1,335-page PDF
    python benchmarks/bench_rag.py --latency-only  # search latency at 10k / 100k chunks (real chunk texts)
    python benchmarks/bench_rag.py --embedder DIR  # another sentence-transformers folder
    python benchmarks/bench_rag.py --dtype int8    # the embedder with dynamic int8 (opt-in; costs recall)

Prints one JSON object; copy the figures into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from astrai_core.rag import Collection, load_embedder  # noqa: E402

PACKAGES = {
    "en": ("debian-reference-en", "usr/share/debian-reference/debian-reference.en.pdf"),
    "zh": ("debian-reference-zh-cn", "usr/share/debian-reference/debian-reference.zh-cn.pdf"),
    "big": ("linuxcnc-doc-zh-cn", "usr/share/doc/linuxcnc/LinuxCNC_Documentation_zh_CN.pdf"),
}


def fetch(cache: Path, key: str) -> Path:
    pkg, rel = PACKAGES[key]
    target = cache / "root" / rel
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", pkg], cwd=cache, check=True)
        deb = sorted(cache.glob(f"{pkg}_*.deb"))[-1]
        subprocess.run(["dpkg", "-x", str(deb), str(cache / "root")], check=True)
    return target


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def index_pdf(data_dir: Path, name: str, pdf: Path, embedder) -> dict:
    coll = Collection.open(data_dir, name, embedder=embedder)
    t0 = time.perf_counter()
    report = coll.add([pdf])
    dt = time.perf_counter() - t0
    out = report.outcomes[0]
    coll.close()
    return {"file": pdf.name, "status": out.status, "reason": out.reason, "pages": out.pages, "chunks": out.chunks,
            "seconds": round(dt, 1), "pages_per_s": round(out.pages / dt, 2), "chunks_per_s": round(out.chunks / dt, 2),
            "peak_rss_mb": round(peak_rss_mb())}


def quality(data_dir: Path, embedder, questions: dict, k: int = 5) -> dict:
    """recall@k and MRR for each (question language -> document language) pair, and the calibration of
    the relevance thresholds: the best cosine of each embedder for on-topic vs off-topic questions."""
    out = {}
    colls = {lang: Collection.open(data_dir, f"dr-{lang}", embedder=embedder) for lang in ("en", "zh")}
    on_topic = []  # every search of a benchmark question, each question/document language pair
    for qlang in ("en", "zh"):
        for dlang in ("en", "zh"):
            recall, rr = [], []
            for item in questions["questions"]:
                hits = colls[dlang].search(item[qlang], k=k)
                on_topic.append(hits)
                ranks = [i for i, h in enumerate(hits, 1) if any(key in h.text for key in item["keys"])]
                recall.append(1.0 if ranks else 0.0)
                rr.append(1.0 / ranks[0] if ranks else 0.0)
            out[f"{qlang}->{dlang}"] = {"recall@5": round(float(np.mean(recall)), 3), "mrr": round(float(np.mean(rr)), 3)}
    off_topic = [colls[d].search(q, k=k) for q in questions["off_topic"] for d in ("en", "zh")]
    on = [max((h.dense for h in hs), default=0.0) for hs in on_topic]
    off = [max((h.dense for h in hs), default=0.0) for hs in off_topic]
    out["top_dense_on_topic"] = {"min": round(min(on), 3), "p10": round(float(np.percentile(on, 10)), 3),
                                 "median": round(float(np.median(on)), 3)}
    out["top_dense_off_topic"] = {"max": round(max(off), 3), "median": round(float(np.median(off)), 3)}
    # the same for the cross-lingual embedder's cosine, and how often a search keeps a relevant hit
    for name, hits in (("on_topic", on_topic), ("off_topic", off_topic)):
        best = [max((h.cross for h in hs), default=0.0) for hs in hits]
        out[f"top_cross_{name}"] = {"min": round(min(best), 3), "p5": round(float(np.percentile(best, 5)), 3),
                                    "median": round(float(np.median(best)), 3), "max": round(max(best), 3)}
        out[f"{name}_searches_with_a_relevant_hit"] = round(float(np.mean([any(h.relevant for h in hs)
                                                                           for hs in hits])), 3)
    for c in colls.values():
        c.close()
    return out


def synthesize(coll: Collection, n: int, dim: int, texts: list[str], seed: int = 0) -> None:
    """Fill a collection with ``n`` chunks straight through SQLite, to time search without hours of
    embedding: the texts are the real debian-reference chunks (English and Chinese) cycled, so BM25
    sees real term frequencies; the vectors are random unit vectors (FAISS cost does not depend on
    their values), for both the main and the cross-lingual embedder's column."""
    rng = np.random.default_rng(seed)
    xdim = coll.crosslingual.dim
    coll.db.execute("BEGIN")
    cur = coll.db.execute("INSERT INTO documents(path, sha256, size, pages, chunks, notes, added) "
                          "VALUES(?,?,?,?,?,?,?)", (f"/synthetic/{n}.txt", "x", 0, n // 10, n, "", time.time()))
    doc_id = cur.lastrowid
    from astrai_core.rag.search import fts_document

    for i in range(n):
        text = texts[i % len(texts)]
        v = rng.standard_normal(dim).astype(np.float32)
        v /= np.linalg.norm(v)
        x = rng.standard_normal(xdim).astype(np.float32)
        x /= np.linalg.norm(x)
        cid = coll.db.execute(
            "INSERT INTO chunks(doc_id, page, start, end, text, vector, xvector) VALUES(?,?,?,?,?,?,?)",
            (doc_id, i // 10 + 1, 0, len(text), text, v.astype(np.float16).tobytes(),
             x.astype(np.float16).tobytes())).lastrowid
        coll.db.execute("INSERT INTO fts(rowid, terms) VALUES(?, ?)", (cid, fts_document(text)))
    coll._bump_generation()
    coll.db.execute("COMMIT")
    coll._save_index_cache()


def real_chunk_texts(data_dir: Path, embedder) -> list[str]:
    """Every chunk text of the indexed debian-reference collections (indexed first if missing)."""
    texts = []
    for lang in ("en", "zh"):
        coll = Collection.open(data_dir, f"dr-{lang}", embedder=embedder)
        texts += [r[0] for r in coll.db.execute("SELECT text FROM chunks ORDER BY id")]
        coll.close()
    return texts


def latency(data_dir: Path, embedder, texts: list[str], sizes=(10_000, 100_000)) -> dict:
    """Search latency over the benchmark's questions (both languages) at each collection size."""
    q = json.loads((ROOT / "benchmarks" / "rag_questions.json").read_text(encoding="utf-8"))
    queries = [item[lang] for item in q["questions"] for lang in ("en", "zh")]
    out = {}
    for n in sizes:
        coll = Collection.open(data_dir, f"lat{n}", embedder=embedder)
        if not coll.db.execute("SELECT 1 FROM chunks LIMIT 1").fetchone():
            synthesize(coll, n, embedder.dim, texts)
        coll.search("warm up", k=5)
        times, embed_times = [], []
        for q in queries:
            t0 = time.perf_counter()
            coll.search(q, k=5)
            times.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            embedder.encode_query(q, threads=1)
            embed_times.append((time.perf_counter() - t0) * 1000)
        out[str(n)] = {"median_ms": round(float(np.median(times)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1),
                       "query_embedding_median_ms": round(float(np.median(embed_times)), 1)}
        coll.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="AstrAI retrieval benchmark")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/astrai-bench"))
    ap.add_argument("--data-dir", type=Path, default=None, help="keep the collections here (default: a temp dir)")
    ap.add_argument("--embedder", default=None)
    ap.add_argument("--dtype", default="auto", help="embedder precision: auto (the app's), float32, mixed, bfloat16, int8")
    ap.add_argument("--big", action="store_true", help="also index the 1,335-page LinuxCNC PDF")
    ap.add_argument("--latency-only", action="store_true")
    ap.add_argument("--skip-index", action="store_true", help="reuse dr-en / dr-zh collections in --data-dir")
    args = ap.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="astrai-bench-"))
    t0 = time.perf_counter()
    embedder = load_embedder(args.embedder, dtype=args.dtype)
    result = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs",
              "embedder": str(embedder.path), "embedder_dtype": embedder.dtype, "embedder_load_s": round(time.perf_counter() - t0, 2)}
    if not args.latency_only:
        if not args.skip_index:
            result["indexing"] = [index_pdf(data_dir, f"dr-{lang}", fetch(args.cache, lang), embedder)
                                  for lang in ("en", "zh")]
            print(json.dumps(result, ensure_ascii=False), flush=True)
        questions = json.loads((ROOT / "benchmarks" / "rag_questions.json").read_text(encoding="utf-8"))
        result["quality"] = quality(data_dir, embedder, questions)
        print(json.dumps(result, ensure_ascii=False), flush=True)
        if args.big:
            result["indexing_big"] = index_pdf(data_dir, "big", fetch(args.cache, "big"), embedder)
    texts = real_chunk_texts(data_dir, embedder)
    if not texts:  # --latency-only on a fresh data dir: the synthetic chunks need real text
        for lang in ("en", "zh"):
            index_pdf(data_dir, f"dr-{lang}", fetch(args.cache, lang), embedder)
        texts = real_chunk_texts(data_dir, embedder)
    result["latency"] = latency(data_dir, embedder, texts)
    result["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
