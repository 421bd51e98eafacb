"""Document loaders: ``.txt``, ``.md``, ``.pdf``, ``.html``/``.htm``, ``.docx`` -> pages of text.

Every loader returns a :class:`LoadedDocument`: pages numbered from 1 (a text file is one page)
plus per-page notes such as "no text layer (scanned?)". Bad input raises
:class:`~astrai_core.errors.DocumentError` naming the file and the problem.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
import zipfile
from xml.etree import ElementTree
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from astrai_core.errors import DocumentError, PasswordError

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx")
# Larger files are refused before anything is read: a 2 GB "document" is almost surely a mistake,
# and reading it whole would exhaust memory.
MAX_FILE_BYTES = 512 * 1024 * 1024
NO_TEXT_LAYER = "no text layer (scanned?)"


@dataclass
class Page:
    """One page of extracted text (``number`` starts at 1)."""

    number: int
    text: str


@dataclass
class LoadedDocument:
    path: Path
    pages: list[Page]
    notes: list[str] = field(default_factory=list)  # e.g. "page 3: no text layer (scanned?)"


def check_size(path: Path, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise DocumentError(f"{path}: file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit")


def load_bytes(path: Path, data: bytes, password: str | None = None) -> LoadedDocument:
    """Parse a file already read into memory (the caller hashed the same bytes)."""
    suffix = path.suffix.lower()
    if not data.strip():
        raise DocumentError(f"{path}: file is empty")
    if suffix == ".pdf":
        return load_pdf(path, data, password)
    if suffix in (".html", ".htm"):
        return LoadedDocument(path, [Page(1, html_to_text(decode_text(path, data, html=True)))])
    if suffix == ".docx":
        return load_docx(path, data)
    if suffix in (".txt", ".md", ".markdown"):
        text = clean_text(decode_text(path, data))
        if not text.strip():
            raise DocumentError(f"{path}: file has no text")
        return LoadedDocument(path, [Page(1, text)])
    raise DocumentError(f"{path}: unsupported file type {suffix or '(none)'}; "
                        f"supported: {', '.join(SUPPORTED_SUFFIXES)}")


# ---- docx ------------------------------------------------------------------------------------
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # compound file: legacy .doc or an encrypted .docx
MAX_DOCX_XML_BYTES = 256 * 1024 * 1024


def load_docx(path: Path, data: bytes) -> LoadedDocument:
    """A Word document's body text, read from ``word/document.xml`` with the standard library.

    A .docx has no fixed pages; Word records where it last broke pages (``lastRenderedPageBreak``)
    and explicit page breaks, and those give the page numbers used for citations (a document
    never rendered by Word is one page). Paragraphs, table cells and line breaks become lines.
    """
    if data.startswith(_OLE_MAGIC):
        raise DocumentError(f"{path}: password-protected (encrypted) or legacy binary Word file; "
                            "save it as an unprotected .docx")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            try:
                info = zf.getinfo("word/document.xml")
            except KeyError:
                raise DocumentError(f"{path}: not a Word document (no word/document.xml)") from None
            if info.file_size > MAX_DOCX_XML_BYTES:  # a zip bomb must not exhaust memory
                raise DocumentError(f"{path}: document text is {info.file_size / 2**20:.0f} MiB unpacked, over the "
                                    f"{MAX_DOCX_XML_BYTES // 2**20} MiB limit")
            xml = zf.read(info)
        root = ElementTree.fromstring(xml)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ElementTree.ParseError, OSError) as exc:
        raise DocumentError(f"{path}: corrupt .docx ({exc})") from None
    body = root.find(f"{_W}body")
    pages: list[list[str]] = [[]]
    for el in (body.iter() if body is not None else ()):
        tag = el.tag
        if tag == f"{_W}t" and el.text:
            pages[-1].append(el.text)
        elif tag == f"{_W}tab":
            pages[-1].append("\t")
        elif tag == f"{_W}br":
            if el.get(f"{_W}type") == "page":
                pages.append([])
            else:
                pages[-1].append("\n")
        elif tag == f"{_W}lastRenderedPageBreak":
            pages.append([])
        elif tag == f"{_W}p" and (pages[-1] and pages[-1][-1] != "\n"):
            pages[-1].append("\n")  # the paragraph before this one ends here
    texts = [clean_text("".join(parts)) for parts in pages]
    if not any(t.strip() for t in texts):
        raise DocumentError(f"{path}: document has no text")
    return LoadedDocument(path, [Page(i, t) for i, t in enumerate(texts, 1)])


# ---- text ------------------------------------------------------------------------------------
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(path: Path, data: bytes, html: bool = False) -> str:
    """Bytes -> str: a BOM wins, then strict UTF-8, then strict GB18030 (a superset of GBK/GB2312).

    Strict decoding never yields mojibake: a file that is neither is refused. Binary data (NUL
    bytes without a UTF-16/32 BOM, or many control characters) is refused as well.
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc)
            except UnicodeDecodeError as exc:
                raise DocumentError(f"{path}: invalid {enc} text ({exc.reason} at byte {exc.start})") from None
    if b"\x00" in data[:65536]:
        raise DocumentError(f"{path}: looks like a binary file, not text (contains NUL bytes)")
    candidates = ["utf-8", "gb18030"]
    if html:  # a declared charset comes first
        m = re.search(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_-]+)""", data[:4096], re.I)
        if m:
            candidates.insert(0, m.group(1).decode("ascii").lower())
    for enc in candidates:
        try:
            text = data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
        if _control_ratio(text) > 0.05:
            raise DocumentError(f"{path}: looks like a binary file, not text (many control characters)")
        return text
    raise DocumentError(f"{path}: text encoding not recognised (tried UTF-8, UTF-16/32 with BOM, GB18030)")


def _control_ratio(text: str) -> float:
    sample = text[:20000]
    bad = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f")
    return bad / max(1, len(sample))


def clean_text(text: str) -> str:
    """Normalise newlines and drop control characters; offsets refer to this cleaned text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    return "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) != "Cc")


# ---- HTML ------------------------------------------------------------------------------------
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section", "article",
               "table", "ul", "ol", "dd", "dt", "blockquote", "header", "footer", "title", "hr"}
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "pre":
            self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, block elements on their own lines."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = clean_text("".join(parser.parts))
    return re.sub(r"\n[ \t]*(\n[ \t]*)+", "\n\n", text).strip()


# ---- PDF -------------------------------------------------------------------------------------
def load_pdf(path: Path, data: bytes, password: str | None = None) -> LoadedDocument:
    """Text per page with pypdfium2 (primary), falling back to pypdf on pages that look bad.

    pypdfium2 was chosen after measuring both (docs/retrieval.md): pypdf runs words together on
    some English PDFs and loses Chinese text in fonts without a ToUnicode map.
    """
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data, password=password)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            if password:
                raise PasswordError(f"{path}: wrong password for this encrypted PDF") from None
            raise PasswordError(f"{path}: this PDF is encrypted; a password is needed") from None
        raise DocumentError(f"{path}: not a readable PDF ({exc})") from None
    pages, notes = [], []
    fallback = None  # pypdf reader, opened only if a page needs it
    try:
        for i in range(len(pdf)):
            try:
                textpage = pdf[i].get_textpage()
                text = clean_text(textpage.get_text_range())
            except Exception as exc:  # one broken page must not lose the document
                notes.append(f"page {i + 1}: unreadable ({exc})")
                text = ""
            if text_quality(text) < 0.5:
                if fallback is None:
                    fallback = _open_pypdf(data, password)
                other = _pypdf_page(fallback, i) if fallback else ""
                if text_quality(other) > text_quality(text):
                    text = other
            if not text.strip():
                notes.append(f"page {i + 1}: {NO_TEXT_LAYER}")
            pages.append(Page(i + 1, text))
    finally:
        pdf.close()
    if not any(p.text.strip() for p in pages):
        raise DocumentError(f"{path}: {NO_TEXT_LAYER}: none of its {len(pages)} pages has extractable text")
    return LoadedDocument(path, pages, notes)


def text_quality(text: str) -> float:
    """0 (empty, garbled or words run together) .. 1 (looks like real text).

    Garbled: replacement or private-use characters, or letters that jump between unrelated scripts
    almost every character (what pypdf makes of CJK fonts without a character map: "ሌሰჾğo..").
    Space-less: long runs of Latin letters without a space, as pypdf produces on some PDFs.
    """
    stripped = "".join(text.split())
    if len(stripped) < 3:
        return 0.0
    bad = sum(1 for ch in stripped if ch == "\ufffd" or unicodedata.category(ch) in ("Co", "Cn", "Cc"))
    score = 1.0 - bad / len(stripped)
    if _script_switch_rate(stripped) > 0.3:
        score = min(score, 0.2)
    latin_runs = re.findall(r"[A-Za-z]{25,}", text)
    latin = len(re.findall(r"[A-Za-z]", text))
    if latin and sum(map(len, latin_runs)) / latin > 0.3:
        score = min(score, 0.3)
    return score


def _open_pypdf(data: bytes, password: str | None):
    import io

    try:
        import pypdf

        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            reader.decrypt(password or "")
        return reader
    except Exception:  # pypdf is only the fallback; its failure leaves the pdfium text
        return None


def _pypdf_page(reader, index: int) -> str:
    try:
        return clean_text(reader.pages[index].extract_text() or "")
    except Exception:
        return ""


def _script(ch: str) -> str:
    if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\u3040" <= ch <= "\u30ff":
        return "CJK"  # Han and kana share one class: Chinese/Japanese text mixes them legitimately
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "?"


def _script_switch_rate(text: str) -> float:
    """Share of consecutive letter pairs whose scripts differ (real text: well under 0.1)."""
    scripts = [_script(ch) for ch in text[:4000] if ch.isalpha()]
    if len(scripts) < 8:
        return 0.0
    return sum(a != b for a, b in zip(scripts, scripts[1:])) / (len(scripts) - 1)
