"""Turn unpacked corpus archives into three kinds of JSONL records.

- documents ``{"id", "group", "lang", "title", "summary", "sections": [[heading, text], ...], "text"}``
  (man pages, help pages, books, poems, Wikipedia leads): pre-training text, and the passages the
  grounded-QA questions are generated from;
- aligned pairs ``{"id", "group", "en", "zh"}`` (LibreOffice help paragraphs, ``.mo`` UI strings);
- dictionary entries ``{"id", "group", "simp", "trad", "pinyin", "defs"}`` (CC-CEDICT).

``group`` is the unit of the held-out split: the English and Chinese versions of one help page
share it, so a page's translation can never be trained on while the page itself is held out.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator

Record = dict

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WS = re.compile(r"[ \t\u00a0]+")


def cjk_ratio(text: str) -> float:
    """Fraction of non-space characters that are CJK ideographs."""
    chars = [c for c in text if not c.isspace()]
    return sum(1 for c in chars if _CJK.match(c)) / len(chars) if chars else 0.0


def language_of(text: str) -> str:
    """``"zh"`` when a fifth or more of the characters are Chinese, else ``"en"``."""
    return "zh" if cjk_ratio(text) >= 0.2 else "en"


def join_lines(lines: Iterable[str]) -> str:
    """Re-flow wrapped lines into one paragraph; no space is inserted between two CJK characters."""
    out = ""
    for line in (ln.strip() for ln in lines):
        if not line:
            continue
        if out and not (_CJK.match(out[-1]) and _CJK.match(line[0])):
            out += " "
        out += line
    return _WS.sub(" ", out)


def make_doc(doc_id: str, group: str, lang: str, title: str, sections: list[list[str]],
             summary: str = "") -> Record | None:
    """A document record; ``None`` when it holds no text."""
    sections = [[h, t] for h, t in sections if t.strip()]
    if not sections:
        return None
    parts = [title] if title else []
    for heading, text in sections:
        parts += [heading, text] if heading and heading != title else [text]
    return {"id": doc_id, "group": group, "lang": lang, "title": title, "summary": summary,
            "sections": sections, "text": "\n\n".join(parts)}


# ---- man pages ------------------------------------------------------------------------------
_MAN_NAME_HEADINGS = ("NAME", "名称", "名字", "NAME 名称")


def render_man(path: Path) -> str | None:
    """Render one man page to plain UTF-8 text with groff; ``None`` for ``.so`` redirects or failures."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw.lstrip().startswith(b".so "):
        return None
    proc = subprocess.run(["groff", "-k", "-Tutf8", "-man", "-P-cbou", "-rLL=1000n", "-dAD=l", "-rHY=0"],
                          input=raw, capture_output=True)
    if proc.returncode != 0:
        return None
    return _ANSI.sub("", proc.stdout.decode("utf-8", "replace"))


def parse_man(rendered: str) -> tuple[str, list[list[str]]]:
    """Split rendered man text into (``name - summary`` line, [[section heading, text], ...])."""
    lines = rendered.splitlines()
    # Drop the running header (first non-blank line) and footer (last non-blank line).
    body = [i for i, ln in enumerate(lines) if ln.strip()]
    if len(body) < 3:
        return "", []
    lines = lines[body[0] + 1:body[-1]]
    sections: list[list[str]] = []
    heading, paras, cur = "", [], []

    def flush_para() -> None:
        if cur:
            paras.append(join_lines(cur))
            cur.clear()

    def flush_section() -> None:
        flush_para()
        if heading and paras:
            sections.append([heading, "\n".join(paras)])
        paras.clear()

    for ln in lines:
        if ln and not ln[0].isspace():
            flush_section()
            heading = ln.strip()
        elif not ln.strip():
            flush_para()
        else:
            cur.append(ln)
    flush_section()
    name_line = next((t for h, t in sections if h.upper() in _MAN_NAME_HEADINGS), "")
    return name_line.split("\n")[0], sections


def extract_man(root: Path, lang: str, subdir: str, source: str, workers: int = 2) -> Iterator[Record]:
    """Documents from the man pages under ``root/usr/share/man/<subdir>`` (symlinked pages skipped)."""
    base = root / "usr/share/man" / subdir
    files = sorted(p for p in base.glob("man*/*") if p.is_file() and not p.is_symlink())

    def one(p: Path) -> Record | None:
        text = render_man(p)
        if not text:
            return None
        name_line, sections = parse_man(text)
        page = p.name[:-3] if p.name.endswith(".gz") else p.name
        title = page.rsplit(".", 1)[0]
        summary = name_line.split(" - ", 1)[1].strip() if " - " in name_line else ""
        rel = f"{p.parent.name}/{page}"
        return make_doc(f"{source}:{rel}", f"{source}:{rel}", lang, title, sections, summary)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # groff runs in subprocesses
        for rec in pool.map(one, files):
            if rec:
                yield rec


# ---- HTML -----------------------------------------------------------------------------------
_BLOCKS = {"p", "li", "dt", "dd", "pre", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "title", "caption"}
_SKIP = {"script", "style", "noscript", "nav", "header", "footer", "aside", "button"}


class _BlockParser(HTMLParser):
    """Collect (tag, id, text) of block elements, ignoring hidden and navigation elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str, str]] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, hidden)
        self._block: tuple[str, str] | None = None
        self._buf: list[str] = []
        self._depth = 0

    def _hidden(self) -> bool:
        return any(h for _, h in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        # LibreOffice help hides every platform variant and lets a script reveal one; keep the
        # default (non-macOS) variant, whose id starts with "default".
        hidden = tag in _SKIP or ("hidden" in a and not (a.get("id") or "").startswith("default")) \
            or "display:none" in (a.get("style") or "").replace(" ", "")
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            if tag == "br" and self._block:
                self._buf.append("\n" if self._block[0] == "pre" else " ")
            return
        self._stack.append((tag, hidden))
        if tag in _BLOCKS and not self._hidden():
            if self._block is None:
                self._block, self._buf, self._depth = (tag, a.get("id") or ""), [], len(self._stack)
            elif tag in ("p", "li", "dd", "dt") and self._block[0] != "pre":
                self._buf.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag not in [t for t, _ in self._stack]:
            return
        while self._stack:
            t, _ = self._stack.pop()
            if self._block and len(self._stack) < self._depth:
                self._close()
            if t == tag:
                break

    def _close(self) -> None:
        tag, ident = self._block  # type: ignore[misc]
        text = "".join(self._buf)
        text = text.strip("\n") if tag == "pre" else _WS.sub(" ", text.replace("\n", " ")).strip()
        if text:
            self.blocks.append((tag, ident, text))
        self._block, self._buf = None, []

    def handle_data(self, data: str) -> None:
        if self._block and not self._hidden():
            self._buf.append(data)


def html_blocks(text: str) -> list[tuple[str, str, str]]:
    """Block-level ``(tag, id, text)`` triples of an HTML page, in document order."""
    parser = _BlockParser()
    parser.feed(text)
    parser.close()
    return parser.blocks


def sections_from_blocks(blocks: list[tuple[str, str, str]]) -> tuple[str, list[list[str]]]:
    """Group blocks under their preceding heading; returns (page title, sections)."""
    title = next((t for tag, _, t in blocks if tag == "h1"), "") or next(
        (t for tag, _, t in blocks if tag == "title"), "")
    sections: list[list[str]] = []
    heading, paras = title, []
    for tag, _, text in blocks:
        if tag == "title":
            continue
        if tag[0] == "h" and tag[1:].isdigit():
            if paras:
                sections.append([heading, "\n".join(paras)])
            heading, paras = text, []
        else:
            paras.append(text)
    if paras:
        sections.append([heading, "\n".join(paras)])
    return title, sections


def extract_html_tree(files: Iterable[Path], root: Path, source: str, lang: str,
                      group_of: Callable[[Path], str], per_section: bool = False) -> Iterator[Record]:
    """One document per HTML file, or per section of it (books whose chapters are long).

    With ``per_section`` the split group is the file's group plus the section index: translated
    books keep their section structure, so a section and its translation share a group.
    """
    for p in sorted(files):
        blocks = html_blocks(p.read_text(encoding="utf-8", errors="replace"))
        title, sections = sections_from_blocks(blocks)
        doc_id, group = f"{source}:{p.relative_to(root)}", group_of(p)
        if not per_section:
            rec = make_doc(doc_id, group, lang, title, sections)
            if rec:
                yield rec
            continue
        for i, (heading, text) in enumerate(sections):
            rec = make_doc(f"{doc_id}#{i}", f"{group}#{i}", lang, heading, [[heading, text]])
            if rec:
                yield rec


# ---- LibreOffice help: documents and aligned paragraphs --------------------------------------
def _lo_files(root: Path, locale: str) -> dict[str, Path]:
    base = root / "usr/share/libreoffice/help" / locale / "text"
    return {str(p.relative_to(base)): p for p in sorted(base.rglob("*.html"))}


def extract_libreoffice(root_en: Path, root_zh: Path) -> tuple[list[Record], list[Record]]:
    """(documents in both languages, aligned paragraph pairs) from the two help trees.

    Pages and paragraphs align through the help's own ids (``par_id…``, ``hd_id…``): the same
    file name and element id hold the same paragraph in every language.
    """
    en_files, zh_files = _lo_files(root_en, "en-US"), _lo_files(root_zh, "zh-CN")
    docs: list[Record] = []
    pairs: list[Record] = []
    for rel in sorted(set(en_files) | set(zh_files)):
        group = f"libreoffice-help:{rel}"
        by_lang = {}
        for lang, files in (("en", en_files), ("zh", zh_files)):
            if rel not in files:
                continue
            blocks = html_blocks(files[rel].read_text(encoding="utf-8", errors="replace"))
            title, sections = sections_from_blocks(blocks)
            rec = make_doc(f"libreoffice-help-{lang}:{rel}", group, lang, title, sections)
            if rec:
                docs.append(rec)
            by_lang[lang] = {ident: text for _, ident, text in blocks if ident}
        if len(by_lang) == 2:
            for ident, en in by_lang["en"].items():
                zh = by_lang["zh"].get(ident)
                if zh and zh != en and _CJK.search(zh) and len(en) >= 2:
                    pairs.append({"id": f"libreoffice-help:{rel}#{ident}", "group": group, "en": en, "zh": zh})
    return docs, pairs


# ---- gettext catalogues ---------------------------------------------------------------------
def read_mo(path: Path) -> dict[str, str]:
    """msgid -> msgstr of a GNU ``.mo`` file (context prefixes and plural forms dropped)."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">"
    _, n, orig_off, trans_off = struct.unpack(order + "4I", data[4:20])
    out = {}
    for i in range(n):
        olen, ooff = struct.unpack(order + "2I", data[orig_off + 8 * i:orig_off + 8 * i + 8])
        tlen, toff = struct.unpack(order + "2I", data[trans_off + 8 * i:trans_off + 8 * i + 8])
        msgid = data[ooff:ooff + olen].decode("utf-8", "replace").split("\x04")[-1].split("\x00")[0]
        msgstr = data[toff:toff + tlen].decode("utf-8", "replace").split("\x00")[0]
        if msgid and msgstr:
            out[msgid] = msgstr
    return out


def extract_mo_pairs(files: Iterable[Path], source: str) -> Iterator[Record]:
    """English -> Chinese pairs from ``.mo`` catalogues (accelerator marks removed)."""
    seen = set()
    for p in sorted(files):
        for en, zh in read_mo(p).items():
            en_c = en.replace("~", "").replace("_", "").strip()
            zh_c = re.sub(r"\(~?_?[A-Za-z]\)", "", zh).replace("~", "").replace("_", "").strip()
            if (en_c, zh_c) in seen or not _CJK.search(zh_c) or not re.search("[A-Za-z]", en_c) or "%" in en_c:
                continue
            seen.add((en_c, zh_c))
            # One English string may recur with other translations; they share a split group.
            yield {"id": f"{source}:{p.name}:{len(seen)}", "group": f"{source}:{en_c}", "en": en_c, "zh": zh_c}


# ---- fortunes -------------------------------------------------------------------------------
def extract_fortunes(files: Iterable[Path], source: str, lang: str) -> Iterator[Record]:
    """One document per fortune (``%``-separated); a Chinese poem's first line is its title."""
    for p in sorted(files):
        text = _ANSI.sub("", p.read_text(encoding="utf-8", errors="replace"))
        for i, chunk in enumerate(text.split("\n%\n")):
            chunk = chunk.strip("%\n ").replace("\t", " ")
            if len(chunk) < 8:
                continue
            lines = chunk.split("\n")
            title = lines[0].strip() if lang == "zh" and lines[0].startswith("《") else ""
            body = "\n".join(lines[1:] if title else lines)
            rec = make_doc(f"{source}:{p.name}:{i}", f"{source}:{p.name}:{i}", lang, title, [[title, body]])
            if rec:
                yield rec


# ---- CC-CEDICT ------------------------------------------------------------------------------
_CEDICT_LINE = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")


def extract_cedict(path: Path) -> Iterator[Record]:
    """Dictionary entries from CC-CEDICT (``.txt`` or ``.txt.gz``)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    for i, line in enumerate(raw.decode("utf-8").splitlines()):
        m = _CEDICT_LINE.match(line)
        if not m:
            continue
        trad, simp, pinyin, defs = m.groups()
        yield {"id": f"cedict:{i}", "group": f"cedict:{simp}", "simp": simp, "trad": trad,
               "pinyin": pinyin, "defs": [d for d in defs.split("/") if d]}


# ---- Wikipedia leads ------------------------------------------------------------------------
def extract_wiki(path: Path) -> Iterator[Record]:
    """English Wikipedia lead sections: one document per article."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in sorted(data):
        art = data[key]
        text = (art.get("extract") or "").strip()
        title = art.get("title") or key
        rec = make_doc(f"wiki:{title}", f"wiki:{title}", "en", title, [[title, text]])
        if rec:
            yield rec


# ---- plain reST / text files ----------------------------------------------------------------
def extract_rst(files: Iterable[Path], root: Path, source: str) -> Iterator[Record]:
    """Python's reST sources: headings are lines underlined with ``=``/``-``/``*``/``~``/``^``."""
    for p in sorted(files):
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        sections: list[list[str]] = []
        heading, paras, cur = "", [], []
        i = 0
        while i < len(lines):
            ln = lines[i]
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if ln.strip() and nxt and len(set(nxt.strip())) == 1 and nxt.strip()[0] in "=-*~^#" \
                    and len(nxt.strip()) >= len(ln.strip()) and not ln.startswith((" ", "..")):
                if cur:
                    paras.append(join_lines(cur))
                    cur = []
                if paras:
                    sections.append([heading, "\n".join(paras)])
                heading, paras = ln.strip(), []
                i += 2
                continue
            if set(ln.strip()) <= set("=-*~^#") and ln.strip():
                i += 1
                continue
            if not ln.strip():
                if cur:
                    paras.append(join_lines(cur))
                    cur = []
            else:
                cur.append(ln)
            i += 1
        if cur:
            paras.append(join_lines(cur))
        if paras:
            sections.append([heading, "\n".join(paras)])
        title = next((h for h, _ in sections if h), p.stem)
        rel = str(p.relative_to(root))
        rec = make_doc(f"{source}:{rel}", f"{source}:{rel}", "en", title, sections)
        if rec:
            yield rec
