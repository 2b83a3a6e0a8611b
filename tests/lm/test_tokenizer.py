import pytest

from lm.errors import DataError
from lm.tokenizer import (
    ASSISTANT,
    END,
    SPECIAL_TOKENS,
    build_char_tokenizer,
    load_tokenizer,
    train_bpe_tokenizer,
)

TEXTS = ["the quick brown fox jumps over the lazy dog\n"] * 40 + ["Ünïcödé ✓ and emoji 🙂\n"]


def test_bpe_roundtrip_and_special_tokens(tmp_path):
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    for s in ["the quick brown fox", "Ünïcödé ✓ 🙂", "never seen: ж ñ \x07"]:
        assert tok.decode(tok(s)["input_ids"]) == s  # byte-level: nothing is unknown
    for special in SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert tok.eos_token_id != tok.pad_token_id
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again("the lazy dog")["input_ids"] == tok("the lazy dog")["input_ids"]
    assert again.chat_template == tok.chat_template


def test_bpe_learns_merges():
    tok = train_bpe_tokenizer(TEXTS, vocab_size=400)
    assert len(tok("the quick brown fox")["input_ids"]) < len("the quick brown fox") / 2


def test_chat_template_and_generation_prompt():
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    msgs = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|system|>\nBe kind.<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids(ASSISTANT) in ids and tok.convert_tokens_to_ids(END) in ids


def test_char_tokenizer_roundtrip():
    tok = build_char_tokenizer("hello world\nHELLO")
    ids = tok("hello\nworld", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("hello\nworld")
    assert tok.decode(ids) == "hello\nworld"
    assert tok.unk_token_id in tok("hello?", add_special_tokens=False)["input_ids"]
    # Runs of line breaks and other whitespace are one token per character too (a regex
    # "." once left "\n\n" as a single unknown token: blank lines were lost).
    text = "hello\n\n\nworld \r\n\t\u00e9\U0001f600"
    tok = build_char_tokenizer(text)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_bad_tokenizer_inputs():
    with pytest.raises(DataError):
        train_bpe_tokenizer(TEXTS, vocab_size=100)
    with pytest.raises(DataError):
        build_char_tokenizer("")
