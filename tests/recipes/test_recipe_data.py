"""The recipe's corpus extraction, held-out split, SFT/DPO builders and metrics, on real inputs
(the committed smoke corpus, groff, the app's own grounded-prompt builder)."""

from __future__ import annotations

import random
import shutil
import struct
import zipfile

import pytest

from astrai_core.rag.prompt import GROUNDED_SYSTEM_PROMPT, NO_SOURCES_SYSTEM_PROMPT
from training.recipes.astrai_mini import extract as ex
from training.recipes.astrai_mini import tasks
from training.recipes.astrai_mini.corpus import is_held, read_jsonl
from training.recipes.astrai_mini.evaluate import chrf, xz_bits_per_byte
from training.recipes.astrai_mini.fetch import CorpusError, sha256_file, unpack, verify
from training.recipes.astrai_mini.reproduce import SMOKE_CORPUS
from training.recipes.astrai_mini.sources import SOURCES, Source


def test_sources_are_pinned_with_licences():
    names = [s.name for s in SOURCES]
    assert len(names) == len(set(names))
    for s in SOURCES:
        assert len(s.sha256) == 64 and all(c in "0123456789abcdef" for c in s.sha256), s.name
        assert s.version and s.licence and s.kind in ("deb", "pypi")


def test_checksum_mismatch_is_refused_and_unpack_is_idempotent(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo/data.txt", "hello")
    good = Source("demo", "pypi", "demo", "1.0", sha256_file(wheel), wheel.name, "MIT", ("en",), "demo")
    bad = Source("demo", "pypi", "demo", "1.0", "0" * 64, wheel.name, "MIT", ("en",), "demo")
    with pytest.raises(CorpusError, match="does not match the pinned"):
        verify(bad, wheel)
    dest = unpack(good, wheel, tmp_path / "out")
    assert (dest / "demo/data.txt").read_text() == "hello"
    (dest / "demo/data.txt").write_text("kept")  # a second unpack of the same archive is a no-op
    assert (unpack(good, wheel, tmp_path / "out") / "demo/data.txt").read_text() == "kept"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_to_name_line_and_sections(tmp_path):
    page = tmp_path / "usr/share/man/man1/frob.1"
    page.parent.mkdir(parents=True)
    page.write_text('.TH FROB 1 "2024" "demo" "User Commands"\n.SH NAME\nfrob \\- twiddle the bits of a file\n'
                    ".SH DESCRIPTION\n.B frob\nreads a file and twiddles\nits bits.\n.PP\nSecond paragraph.\n")
    name_line, sections = ex.parse_man(ex.render_man(page))
    assert name_line == "frob - twiddle the bits of a file"
    assert sections[1] == ["DESCRIPTION", "frob reads a file and twiddles its bits.\nSecond paragraph."]
    (page.parent / "link.1").symlink_to(page)
    docs = list(ex.extract_man(tmp_path, "en", "", "demo", workers=1))
    assert [d["title"] for d in docs] == ["frob"]  # the symlinked page is skipped
    assert docs[0]["summary"] == "twiddle the bits of a file"


def test_help_html_keeps_default_variant_and_ids():
    page = ('<html><head><title>T</title><script>var x=1;</script></head><body><header><p>nav</p></header>'
            '<h1 id="hd_1">Load/Save options</h1>'
            '<p id="par_1">Choose <span class="switchinline"><span hidden="true" id="MAC1">LibreOffice - Preferences'
            '</span><span hidden="true" id="default1">Tools - Options</span></span> - Load/Save.</p></body></html>')
    blocks = ex.html_blocks(page)
    assert ("h1", "hd_1", "Load/Save options") in blocks
    assert ("p", "par_1", "Choose Tools - Options - Load/Save.") in blocks
    assert not any("nav" in t or "Preferences" in t for _, _, t in blocks)


def test_mo_catalogue_pairs(tmp_path):
    entries = sorted({"": "Content-Type: text/plain; charset=UTF-8\n", "~Open": "打开(~O)",
                      "ctx\x04Save": "保存", "%1 files": "%1 个文件"}.items())
    ids = b"".join(k.encode() + b"\0" for k, _ in entries)
    strs = b"".join(v.encode() + b"\0" for _, v in entries)
    n, header = len(entries), 28
    o_tab, t_tab = header, header + 8 * n
    data_start = header + 16 * n
    o_entries, t_entries, off = [], [], data_start
    for k, _ in entries:
        o_entries.append((len(k.encode()), off))
        off += len(k.encode()) + 1
    for _, v in entries:
        t_entries.append((len(v.encode()), off))
        off += len(v.encode()) + 1
    blob = struct.pack("<7I", 0x950412DE, 0, n, o_tab, t_tab, 0, 0)
    blob += b"".join(struct.pack("<2I", *e) for e in o_entries) + b"".join(struct.pack("<2I", *e) for e in t_entries)
    blob += ids + strs
    mo = tmp_path / "demo.mo"
    mo.write_bytes(blob)
    pairs = {(p["en"], p["zh"]) for p in ex.extract_mo_pairs([mo], "demo")}
    assert pairs == {("Open", "打开"), ("Save", "保存")}  # accelerators stripped; format strings skipped


def test_cedict_and_language_helpers(tmp_path):
    f = tmp_path / "cedict.txt"
    f.write_text("# comment\n中國 中国 [Zhong1 guo2] /China/Middle Kingdom/\n", encoding="utf-8")
    (rec,) = ex.extract_cedict(f)
    assert (rec["simp"], rec["trad"], rec["pinyin"], rec["defs"]) == ("中国", "中國", "Zhong1 guo2",
                                                                     ["China", "Middle Kingdom"])
    assert ex.join_lines(["列出目录", "内容", "and more", "words"]) == "列出目录内容 and more words"
    assert tasks.answer_language("ls 的作用是：列出目录内容[1]。") == "zh"
    assert tasks.answer_language("It lists directory contents [1].") == "en"


def test_held_out_split_is_deterministic_and_sized():
    groups = [f"page-{i}" for i in range(20000)]
    held = [g for g in groups if is_held(g, 20, seed=0)]
    assert held == [g for g in groups if is_held(g, 20, seed=0)]
    assert 0.015 < len(held) / len(groups) < 0.025
    assert held != [g for g in groups if is_held(g, 20, seed=1)]


def test_smoke_corpus_aligns_translations_in_one_group():
    pairs = list(read_jsonl(SMOKE_CORPUS / "pairs" / "libreoffice-help.jsonl"))
    assert pairs and all(p["en"] and p["zh"] for p in pairs)
    assert {p["split"] for p in pairs} == {"train", "held"}
    docs = list(read_jsonl(SMOKE_CORPUS / "docs" / "manpages-zh.jsonl"))
    assert all(d["lang"] == "zh" for d in docs) and any(d["summary"] for d in docs)


def _count(text: str) -> int:
    return len(text.encode("utf-8")) // 3 + 1


def _items() -> list[tasks.QAItem]:
    rng = random.Random(0)
    items = []
    for name in ("manpages-zh", "manpages", "libreoffice-help", "wikipedia-leads"):
        for d in read_jsonl(SMOKE_CORPUS / "docs" / f"{name}.jsonl"):
            items += tasks.qa_items(d, rng, 400)
    return items


def test_grounded_example_uses_the_apps_prompt_and_cites_the_gold_source():
    items = _items()
    man_zh = next(i for i in items if i.lang == "zh" and i.file.endswith(".1") and "作用" in i.answer_body)
    rng = random.Random(1)
    ex_ = None
    while ex_ is None or ex_.n_sources < 2:
        ex_ = tasks.grounded_example(man_zh, tasks.pick_distractors(man_zh, items, rng, 2), rng, _count, 2000, False)
    system, user = ex_.messages
    assert system == {"role": "system", "content": GROUNDED_SYSTEM_PROMPT}
    assert f"[{ex_.gold}] {man_zh.file}, page 1\n{man_zh.passage}" in user["content"]
    assert user["content"].endswith(man_zh.question)
    assert tasks.cited(ex_.answer) == {ex_.gold}
    assert tasks.answer_language(ex_.answer) == "zh" and man_zh.key in ex_.answer
    wrong = tasks.dpo_from_grounded(ex_, ex_, {}, rng)[0]
    assert wrong["type"] == "wrong_source" and wrong["chosen"] == ex_.answer
    assert tasks.cited(wrong["rejected"]) and tasks.cited(wrong["rejected"]) != {ex_.gold}
    (refused,) = [d for d in tasks.dpo_from_grounded(ex_, ex_, {}, rng) if d["type"] == "needless_refusal"]
    assert refused["chosen"] == ex_.answer and tasks.is_refusal(refused["rejected"])
    assert tasks.answer_language(refused["rejected"]) == "zh"


def test_refusal_without_sources_and_invented_rejection():
    items = _items()
    rng = random.Random(2)
    silent = tasks.grounded_example(items[0], [], rng, _count, 2000, refuse=True)
    assert silent.gold == 0 and silent.messages[0]["content"] == NO_SOURCES_SYSTEM_PROMPT
    assert tasks.is_refusal(silent.answer)
    other = tasks.grounded_example(items[5], [], rng, _count, 2000, refuse=False)
    (pair,) = tasks.dpo_from_grounded(silent, other, {}, rng)
    assert pair["type"] == "invented" and tasks.is_refusal(pair["chosen"]) and not tasks.is_refusal(pair["rejected"])


def test_wrong_language_rejection_from_aligned_pairs():
    pairs = list(read_jsonl(SMOKE_CORPUS / "pairs" / "libreoffice-help.jsonl"))
    index = tasks.translation_index(pairs)
    p = pairs[1]
    item = tasks.QAItem("What is it?", "en", p["en"], "a.html", p["en"], p["en"], "d", "g")
    ex_ = tasks.grounded_example(item, [], random.Random(0), _count, 2000, False)
    (pair,) = [d for d in tasks.dpo_from_grounded(ex_, ex_, index, random.Random(0)) if d["type"] == "wrong_language"]
    assert tasks.answer_language(pair["rejected"]) == "zh" and tasks.cited(pair["rejected"]) == {1}


def test_metrics_against_hand_checked_values():
    assert chrf("the cat sat", "the cat sat") == pytest.approx(100.0)
    assert chrf("xyz", "abc") == 0.0
    assert 0 < chrf("the cat sat", "the cat sits") < 100
    text = ("LibreOffice help paragraph number %d explains a menu command. " * 3 + "\n") * 40
    held = b"".join(("LibreOffice help paragraph number %d explains a menu command.\n" % i).encode() for i in range(50))
    assert xz_bits_per_byte(held, text.encode()) < xz_bits_per_byte(held)


def test_no_question_about_a_heading_many_documents_share():
    docs = [{"id": f"manpages:man1/t{i}.1", "lang": "en", "title": f"t{i}", "group": f"g{i}", "summary": "",
             "sections": [["NOTES", "Shared heading text that is long enough to ask about."],
                          [f"Option -{i}", f"Option {i} does a particular thing in tool number {i}."]]}
            for i in range(3)]
    common = tasks.common_headings(docs)
    assert "notes" in common and "option -0" not in common  # casefolded; a heading of one document stays
    rng = random.Random(0)
    asked = [i.question for d in docs for i in tasks.qa_items(d, rng, 400, 2, common)]
    assert len(asked) == 3 and not any("NOTES" in q for q in asked)
    rng = random.Random(0)
    assert any("NOTES" in i.question for d in docs for i in tasks.qa_items(d, rng, 400, 2))
