"""Retrieval over the user's documents: load, chunk, embed, index, search, grounded prompt.

One implementation used by the desktop app, the CLI (``astrai index ...``) and the API server.
No Qt here. Details and measurements: ``docs/retrieval.md``.

API contract::

    from astrai_core.paths import user_data_dir, resource_path
    from astrai_core.rag import (Collection, Hit, IndexProgress, AddReport, DocumentInfo,
                                 GroundedPrompt, build_grounded_prompt, load_embedder)

    coll = Collection.open(data_dir, name="default", embedder=None)   # None = bundled e5, loaded lazily
    Collection.exists(data_dir, name) -> bool
    report = coll.add(paths, password=None, progress=None, cancel=None)   # folders recurse
        # report.outcomes: [FileOutcome(path, status, reason, pages, chunks)], status in
        #   "indexed" | "unchanged" | "failed" | "cancelled"; also report.indexed / .unchanged
        #   (lists of paths), report.failed ({path: reason}), report.pages, report.chunks
        # progress(IndexProgress(files_done, files_total, pages, chunks, eta_s, file, file_fraction));
        #   .done (= files_done + file_fraction) and .total (= files_total) for progress bars
    coll.remove(paths) -> list[str]            # a folder removes every document under it
    coll.documents() -> [DocumentInfo(path, status, pages, chunks, error, notes)]
    coll.search(query, k=5, paths=None) -> [Hit(file, page, score, text, chunk_id, start, end,
                                                dense, relevant, cross)]
        # score: fused reciprocal-rank score of three rankings (embedder, BM25, cross-lingual
        # embedder); dense / cross: the two embedders' cosines; relevant: dense >= RELEVANCE_THRESHOLD
        # or cross >= CROSS_RELEVANCE_THRESHOLD, or a keyword match once some hit passes one;
        # page from 1; start/end: offsets in the page text
    build_grounded_prompt(question, hits, count_tokens, budget, system_prompt=None)
        -> GroundedPrompt(messages=[system, user] (ChatML-ready), sources=[Hit] numbered 1..k, found)
        # hits with relevant=False are dropped; none left -> found=False and a "say it's not in
        # the documents" prompt instead of noise
    load_embedder(name_or_path=None) -> Embedder   # .encode(texts, kind="passage"|"query"),
        # .encode_query(text, threads=None), .count_tokens(texts), .dim, .name

Errors are :class:`astrai_core.errors.DocumentError` (``PasswordError`` for encrypted PDFs) or
``ConfigError``; inside ``add`` a failing file becomes a "failed" outcome and the rest goes on.
"""

from astrai_core.rag.collection import (CROSS_RELEVANCE_THRESHOLD, RELEVANCE_THRESHOLD, AddReport, Collection,
                                        DocumentInfo, FileOutcome, Hit, IndexProgress)
from astrai_core.rag.crosslingual import CrossLingualEmbedder, load_crosslingual
from astrai_core.rag.embedder import Embedder, load_embedder
from astrai_core.rag.loaders import SUPPORTED_SUFFIXES
from astrai_core.rag.prompt import GroundedPrompt, build_grounded_prompt

__all__ = [
    "AddReport", "CROSS_RELEVANCE_THRESHOLD", "Collection", "CrossLingualEmbedder", "DocumentInfo", "Embedder",
    "FileOutcome", "GroundedPrompt", "Hit", "IndexProgress", "RELEVANCE_THRESHOLD", "SUPPORTED_SUFFIXES",
    "build_grounded_prompt", "load_crosslingual", "load_embedder",
]
