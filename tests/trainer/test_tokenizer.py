"""Tokenizers: bytes, and Hugging Face tokenizer.json files trained here on a few sentences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from microturn.trainer.tokenizer import BOS_ID, PAD_ID, ByteTokenizer, HFTokenizer, get_tokenizer

SENTENCES = ["hello world", "oh hello there", "the world is round", "I didn't know you were there",
             "hello there world", "round and round the world goes"]


def _bpe(path, *, pad: str | None = "[PAD]") -> str:
    """A byte-level BPE tokenizer of at most 300 ids trained on SENTENCES, saved to ``path``."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ([pad] if pad else []) + ["[UNK]"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SENTENCES, trainer)
    tok.save(str(path))
    return str(path)


def _word_level(path) -> str:
    """A whitespace word-level tokenizer without any padding token."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<unk>"], show_progress=False))
    tok.save(str(path))
    return str(path)


def test_byte_tokenizer_ids_are_utf8_bytes_and_specials_follow():
    tok = get_tokenizer("bytes")
    assert isinstance(tok, ByteTokenizer)
    assert tok.encode(" hi é") == [32, 104, 105, 32, 0xC3, 0xA9]
    assert (tok.pad_id, tok.bos_id, tok.vocab_size) == (PAD_ID, BOS_ID, 258) == (256, 257, 258)
    assert tok.decode([BOS_ID, 104, 105, PAD_ID]) == "hi"
    assert tok.decode(tok.encode("é")[:1]) == "\ufffd"  # a character cut in two does not raise
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")  # pyright: ignore[reportArgumentType]  # the wrong type is the point


@given(st.text(max_size=40))
def test_byte_tokenizer_round_trips_any_text(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text


def test_hf_tokenizer_from_a_file_or_its_folder(tmp_path):
    path = _bpe(tmp_path / "tokenizer.json")
    for spec in (path, str(tmp_path)):
        tok = get_tokenizer(spec)
        assert isinstance(tok, HFTokenizer)
        raw = Tokenizer.from_file(path)
        assert tok.vocab_size == raw.get_vocab_size() > 256
        assert tok.pad_id == raw.token_to_id("[PAD]")
        ids = tok.encode(" hello world")
        assert ids == raw.encode(" hello world", add_special_tokens=False).ids
        assert 0 < len(ids) <= 4 and all(0 <= i < tok.vocab_size for i in ids)  # merges learnt from SENTENCES
        assert tok.decode(ids) == " hello world"
        assert tok.decode([tok.pad_id, *ids]) == " hello world"


def test_hf_tokenizer_without_a_pad_token_gets_an_extra_id(tmp_path):
    tok = HFTokenizer(_word_level(tmp_path / "words.json"))
    own = Tokenizer.from_file(str(tmp_path / "words.json")).get_vocab_size()
    assert (tok.pad_id, tok.vocab_size) == (own, own + 1)
    ids = tok.encode("hello round world")
    assert len(ids) == 3 and max(ids) < own
    assert tok.decode(ids + [tok.pad_id]) == "hello round world"


def test_hf_tokenizer_uses_the_padding_config_first(tmp_path):
    path = _bpe(tmp_path / "t.json", pad="<custom-pad>")
    raw = Tokenizer.from_file(path)
    raw.enable_padding(pad_id=raw.token_to_id("<custom-pad>"), pad_token="<custom-pad>")
    raw.save(path)
    assert HFTokenizer(path).pad_id == raw.token_to_id("<custom-pad>")


def test_bad_specs_raise_value_errors_that_say_what_to_give(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        get_tokenizer(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="does not exist"):
        get_tokenizer(str(tmp_path))  # a folder without tokenizer.json
    for i, text in enumerate(["{}", "not json at all", '{"model": {"type": "Nope"}}']):
        bad = tmp_path / f"bad{i}.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
            get_tokenizer(str(bad))
    with pytest.raises(ValueError, match="empty"):
        get_tokenizer("  ")
