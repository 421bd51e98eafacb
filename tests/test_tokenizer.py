"""Tokenizer wrapper: special tokens, ChatML, save/load, and the streaming detokenizer on
Chinese + emoji text with byte-level tokens (the real SmolLM2 vocabulary and a tiny one in
which every CJK character and emoji is split across several byte tokens)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from astrai_core.checkpoint.gguf import GGUFFile, gguf_tokenizer
from astrai_core.errors import TokenizerError
from astrai_core.tokenizer import StreamDecoder, Tokenizer, TokenizerConfig, iter_decode

STREAM_TEXT = ("你好，世界！今天我们测试流式解码：长城、故宫和西湖。🚀🎉👨‍👩‍👧‍👦 emoji, English words, "
               "日本語のテキスト, and code `x = 1`.\n最后一句话。😀")


@pytest.fixture(scope="module")
def smol(smollm2_gguf) -> Tokenizer:
    with GGUFFile(smollm2_gguf) as gf:
        return gguf_tokenizer(gf)


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    """Byte-level BPE with ~300 tokens: CJK characters and emoji are split into byte tokens."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(["hello world, plain English text only"] * 10, trainer)
    return Tokenizer(hf, TokenizerConfig(eos_token="<|im_end|>"))


def _check_stream(tok: Tokenizer, text: str) -> list[str]:
    ids = tok.encode(text)
    full = tok.decode(ids, skip_special=True)
    sd, out, pieces = StreamDecoder(tok), "", []
    for i in ids:
        piece = sd.put(i)
        assert "\ufffd" not in piece, (piece, out)
        out += piece
        pieces.append(piece)
        assert full.startswith(out)
    out += sd.flush()
    assert out == full == text
    return pieces


def test_stream_decoder_real_vocab(smol):
    pieces = _check_stream(smol, STREAM_TEXT)
    assert "" in pieces  # some tokens really end mid-character and were held back


def test_stream_decoder_byte_tokens(tiny):
    ids = tiny.encode("长")
    assert len(ids) == 3  # one CJK character = three byte tokens here
    assert tiny.decode(ids[:2]).endswith("\ufffd")  # a naive streamer would emit garbage
    pieces = _check_stream(tiny, STREAM_TEXT)
    assert sum(p == "" for p in pieces) > 20


def test_stream_decoder_with_special_tokens(smol):
    ids = smol.encode_chat([{"role": "user", "content": "你好😀"}]) + smol.encode("好的🎉<|im_end|>")
    text = "".join(iter_decode(smol, ids))
    assert text == smol.decode(ids, skip_special=True)
    assert "<|im_end|>" not in text and "你好😀" in text


def test_special_tokens_of_smollm2(smol):
    assert smol.eos_id == smol.token_to_id("<|im_end|>") == 2
    assert smol.stop_ids == {0, 2}  # <|im_end|> and <|endoftext|>
    assert smol.bos_id == 1 and smol.pad_id == 2
    assert smol.vocab_size == 49152
    assert smol.encode("<|im_start|>user") == [1, smol.encode("user")[0]]
    assert smol.encode("hi", add_bos=True)[0] == smol.bos_id
    assert "SmolLM" in smol.config.chat_template  # the model's own template is kept for reference


def test_render_chatml(smol):
    msgs = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "再见"}]
    text = smol.render_chat(msgs)
    assert text == ("<|im_start|>system\n你是助手。<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n再见<|im_end|>\n<|im_start|>assistant\n")
    assert smol.render_chat(msgs, add_generation_prompt=False).endswith("再见<|im_end|>\n")
    ids = smol.encode_chat(msgs)
    assert ids.count(smol.token_to_id("<|im_start|>")) == 5 and ids.count(2) == 4


@pytest.mark.parametrize("bad", [[{"role": "user"}], [{"role": "robot", "content": "x"}],
                                 [{"role": "user", "content": 3}], ["hello"]])
def test_render_chat_rejects_bad_messages(smol, bad):
    with pytest.raises(TokenizerError, match="message 0"):
        smol.render_chat(bad)


def test_save_and_reload(smol, tmp_path):
    smol.save(tmp_path)
    again = Tokenizer.from_dir(tmp_path)
    assert again.encode(STREAM_TEXT) == smol.encode(STREAM_TEXT)
    assert (again.eos_id, again.bos_id, again.stop_ids) == (smol.eos_id, smol.bos_id, smol.stop_ids)
    assert again.config.chat_template == smol.config.chat_template


def test_from_dir_errors(tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer.json.*not found"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(TokenizerError, match="tokenizer.json.*cannot read"):
        Tokenizer.from_dir(tmp_path)
