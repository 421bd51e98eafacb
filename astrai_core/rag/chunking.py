"""Split page text into overlapping chunks on Chinese and English sentence boundaries.

Sizes are measured with the embedder's tokenizer (``count_tokens`` over a batch of strings), so a
chunk never exceeds what the embedder reads. Each chunk keeps its page and character offsets into
that page's text, so a citation can point at the exact passage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from astrai_core.rag.loaders import Page

# A sentence ends after 。！？；(CJK, no space needed), after .!?; followed by whitespace, or at a
# blank line. Closing quotes/brackets stay with their sentence.
_SENTENCE_END = re.compile(r"[。！？；…]+[”’」』）)\]]*|[.!?;]+[\"')\]]*(?=\s)|\n\s*\n")

CountTokens = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Chunk:
    page: int
    start: int  # character offsets into the page's text, end exclusive
    end: int
    text: str


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of sentences, whitespace trimmed; together they cover all non-space text."""
    spans, pos = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((pos, m.end()))
        pos = m.end()
    spans.append((pos, len(text)))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


def _split_long(text: str, a: int, b: int, tokens: int, max_tokens: int) -> list[tuple[int, int]]:
    """A sentence over the budget is cut into equal character slices (at spaces when possible)."""
    parts = -(-tokens // max_tokens)
    size = -(-(b - a) // parts)
    out, pos = [], a
    while pos < b:
        end = min(b, pos + size)
        if end < b:
            space = text.rfind(" ", pos + size // 2, end)
            end = space if space > pos else end
        out.append((pos, end))
        pos = end
        while pos < b and text[pos].isspace():
            pos += 1
    return out


def chunk_page(page: Page, count_tokens: CountTokens, max_tokens: int = 256, overlap: int = 48) -> list[Chunk]:
    """Pack whole sentences into chunks of at most ``max_tokens``; consecutive chunks share up to
    ``overlap`` tokens of trailing sentences so a fact split across a boundary is still found.
    A chunk may reach 1.25 x ``max_tokens`` when a short tail or scrap is folded into it."""
    text = page.text
    spans = sentence_spans(text)
    if not spans:
        return []
    counts = count_tokens([text[a:b] for a, b in spans])
    units: list[tuple[int, int, int]] = []
    for (a, b), n in zip(spans, counts):
        if n > max_tokens:
            pieces = _split_long(text, a, b, n, max_tokens)
            units.extend((x, y, n) for (x, y), n in zip(pieces, count_tokens([text[x:y] for x, y in pieces])))
        else:
            units.append((a, b, n))
    chunks: list[Chunk] = []
    sizes: list[int] = []
    i = 0
    while i < len(units):
        j, total = i, 0
        while j < len(units) and (j == i or total + units[j][2] <= max_tokens):
            total += units[j][2]
            j += 1
        a, b = units[i][0], units[j - 1][1]
        if j >= len(units) and chunks and total < max_tokens // 4:
            # A short tail is folded into the previous chunk: a scrap like "[ ] ^|\\ ." embeds close
            # to every query and would pass the relevance threshold on off-topic questions.
            prev = chunks.pop()
            chunks.append(Chunk(page.number, prev.start, b, text[prev.start:b]))
            break
        if chunks and total < max_tokens // 8 and sizes[-1] + total <= max_tokens * 5 // 4:
            prev = chunks.pop()  # a scrap squeezed between long sentences joins its predecessor
            sizes[-1] += total
            chunks.append(Chunk(page.number, prev.start, b, text[prev.start:b]))
        else:
            chunks.append(Chunk(page.number, a, b, text[a:b]))
            sizes.append(total)
        if j >= len(units):
            break
        # Start the next chunk a few sentences back (the overlap), but always move forward.
        k, back = j, 0
        # Back up only as far as still leaves room for the next new sentence: otherwise the overlap
        # alone would become a chunk (seen as a 2-character "|." chunk before a long table row).
        while k - 1 > i and back + units[k - 1][2] <= overlap and back + units[k - 1][2] + units[j][2] <= max_tokens:
            k -= 1
            back += units[k][2]
        i = k
    return chunks


def chunk_pages(pages: Sequence[Page], count_tokens: CountTokens, max_tokens: int = 256,
                overlap: int = 48) -> list[Chunk]:
    """Chunks of every page, in page order (chunks never cross pages so each cites one page)."""
    out: list[Chunk] = []
    for page in pages:
        if page.text.strip():
            out.extend(chunk_page(page, count_tokens, max_tokens, overlap))
    return out
