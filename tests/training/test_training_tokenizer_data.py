"""Tokenizer training, the token store and corpus preparation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astrai_core.errors import AstraiError
from astrai_core.tokenizer import IM_END, IM_START
from training.data.datasets import PairDataset, PTDataset, SFTDataset, collate
from training.data.prepare import encode_conversation, prepare
from training.data.store import StoreWriter, TokenStore
from training.data.text import DataError
from training.data.tokenizer_train import ENDOFTEXT, train_tokenizer_from_iterator


def test_special_tokens_at_fixed_ids_and_config(tok_dir, tokenizer):
    assert [tokenizer.token_to_id(t) for t in (ENDOFTEXT, IM_START, IM_END)] == [0, 1, 2]
    assert [tokenizer.token_to_id(f"<|reserved_{i}|>") for i in range(8)] == list(range(3, 11))
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == IM_END and cfg["pad_token"] == ENDOFTEXT and cfg["bos_token"] == ENDOFTEXT
    assert tokenizer.eos_id == 2 and tokenizer.pad_id == 0 and tokenizer.vocab_size == 400
    # ChatML renders to exactly one id per control token
    ids = tokenizer.encode_chat([{"role": "user", "content": "你好"}])
    assert ids[0] == 1 and ids.count(1) == 2 and ids.count(2) == 1


@pytest.mark.parametrize("text", ["你好，世界！今天天气很好。", "mixed 中英 text, 🙂 emoji & ünïcödé", "  spaces\n\ttabs  ",
                                  "从未见过的字：龘靐齉"])
def test_byte_level_round_trip_is_exact(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_bpe_learned_chinese_merges(tokenizer):
    # a frequent Chinese phrase compresses well below its UTF-8 byte count
    assert len(tokenizer.encode("今天天气很好")) < len("今天天气很好".encode()) / 2


def test_vocab_too_small_is_a_clear_error():
    with pytest.raises(AstraiError, match="vocab_size=100"):
        train_tokenizer_from_iterator(["abc"], vocab_size=100)


def test_store_round_trip_and_truncation_detected(tmp_path):
    with StoreWriter(tmp_path / "s", "pt") as w:
        w.add_ragged("tokens", np.uint16)
        w.append_seq("tokens", [1, 2, 3])
        w.append_seq("tokens", [4])
        w.close({"note": "x"})
    st = TokenStore(tmp_path / "s")
    assert st.kind == "pt" and st.meta == {"note": "x"}
    assert st["tokens"].dtype == np.uint16 and list(st.seq("tokens", 0)) == [1, 2, 3] and list(st.seq("tokens", 1)) == [4]
    header = json.loads((tmp_path / "s" / "header.json").read_text())
    assert header["fields"]["tokens_offsets"] == {"dtype": "int64", "shape": [3]}
    with open(tmp_path / "s" / "tokens.bin", "r+b") as fh:
        fh.truncate(2)
    with pytest.raises(DataError, match="tokens.bin"):
        TokenStore(tmp_path / "s")


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "s", "pt") as w:
            w.add_ragged("tokens", np.uint16)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_pt_store_has_document_boundaries(stores, tokenizer, corpora):
    st = TokenStore(stores["pt"])
    off = st["tokens_offsets"]
    assert st.num_seqs("tokens") == 300 == st.meta["records"]
    first_doc = json.loads(corpora["pt"].read_text(encoding="utf-8").splitlines()[0])["text"]
    assert list(st.seq("tokens", 0)) == tokenizer.encode(first_doc) + [0]
    assert all(st["tokens"][e - 1] == 0 for e in off[1:])  # every document ends with <|endoftext|>
    ds = PTDataset(st, 32)
    assert len(ds) == (len(st["tokens"]) - 1) // 32
    w = ds[1]["input_ids"]
    assert w.shape == (33,) and list(w) == list(st["tokens"][32:65])


def test_sft_mask_covers_exactly_assistant_tokens(tokenizer):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "hello 世界"}, {"role": "user", "content": "again"},
            {"role": "assistant", "content": "ok"}]
    ids, mask = encode_conversation(tokenizer, msgs)
    assert len(ids) == len(mask)
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "hello 世界<|im_end|>ok<|im_end|>"
    # the ids are the rendered ChatML conversation
    assert tokenizer.decode(ids) == tokenizer.render_chat(msgs, add_generation_prompt=False)
    # the closing <|im_end|> of each assistant turn is trained, the one of user turns is not
    im_end_masks = [m for i, m in zip(ids, mask) if i == 2]
    assert im_end_masks == [0, 0, 1, 0, 1]


def test_sft_dataset_skips_prompts_longer_than_window(tmp_path, tokenizer, corpora):
    long_prompt = {"messages": [{"role": "user", "content": "the cat sat on the mat " * 20},
                                {"role": "assistant", "content": "ok"}]}
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "你好"}]}
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps(long_prompt) + "\n" + json.dumps(short, ensure_ascii=False) + "\n", encoding="utf-8")
    st = prepare("sft", [src], tokenizer, tmp_path / "st", show_progress=False)
    ds = SFTDataset(st, seq_len=32)
    assert len(ds) == 1 and ds.skipped == 1
    item = ds[0]
    assert tokenizer.decode(item["input_ids"][item["loss_mask"].bool()].tolist()) == "你好<|im_end|>"


def test_sft_replay_text_is_trained_on_every_token(tmp_path, tokenizer):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "你好"}]}
    replay = {"text": "plain 文本 for replay"}
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in (chat, replay)) + "\n", encoding="utf-8")
    st = prepare("sft", [src], tokenizer, tmp_path / "st", show_progress=False)
    ds = SFTDataset(st, seq_len=64)
    item = ds[1]
    # encoded exactly like a PT document (text then <|endoftext|>) and every token is a target
    assert item["input_ids"].tolist() == tokenizer.encode(replay["text"]) + [0]
    assert item["loss_mask"].all()
    assert st.meta["trained_tokens"] == int(ds[0]["loss_mask"].sum()) + len(item["loss_mask"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": 5}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="record 1.*'messages' list"):
        prepare("sft", [bad], tokenizer, tmp_path / "st2", show_progress=False)


def test_pair_dataset_masks_only_completion(stores, tokenizer):
    ds = PairDataset(TokenStore(stores["dpo"]), seq_len=64)
    item = ds[0]
    st = TokenStore(stores["dpo"])
    plen = len(st.seq("prompt", 0))
    for side in ("chosen", "rejected"):
        mask = item[f"{side}_mask"]
        assert mask[:plen].sum() == 0 and mask[plen:].all()
        assert tokenizer.decode(item[f"{side}_ids"][plen:].tolist()).endswith(IM_END)
    assert tokenizer.decode(item["chosen_ids"][:plen].tolist()).endswith(f"{IM_START}assistant\n")
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["chosen_ids"].shape == batch["rejected_ids"].shape == batch["chosen_mask"].shape


def test_bad_record_names_file_and_line(tmp_path, tokenizer):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        prepare("pt", [src], tokenizer, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()
    src.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="record 1.*robot"):
        prepare("sft", [src], tokenizer, tmp_path / "out", show_progress=False)


def test_prepare_streams_input(tmp_path, tokenizer, monkeypatch):
    """Records are tokenized one by one while the file is read, never loaded whole."""
    import training.data.prepare as prep

    src = tmp_path / "big.txt"
    src.write_text("".join(f"line {i} 你好\n" for i in range(2000)), encoding="utf-8")
    seen = []
    real = prep.iter_records

    def spy(path):
        for rec, read in real(path):
            seen.append(read)
            yield rec, read

    monkeypatch.setattr(prep, "iter_records", spy)
    st = prepare("pt", [src], tokenizer, tmp_path / "st", show_progress=False)
    assert st.num_seqs("tokens") == 2000
    assert seen == sorted(seen) and seen[0] < 20 and seen[-1] == src.stat().st_size
