"""Text tokenizers of the trainer: raw UTF-8 bytes, or any Hugging Face ``tokenizer.json``.

Samples store words as text (DESIGN.md, "The micro-turn sample"), so the tokenizer is chosen at
training time and changing it needs no re-sharding. Both tokenizers expose one interface,
:class:`Tokenizer`: ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size`` (every
id ``encode`` can return, and ``pad_id``, is below it) and ``pad_id``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

__all__ = ["BOS_ID", "PAD_ID", "ByteTokenizer", "HFTokenizer", "Tokenizer", "get_tokenizer"]

PAD_ID = 256  # byte tokenizer: ids 0..255 are the bytes themselves
BOS_ID = 257

# Names under which tokenizer.json files commonly declare their padding token, most common first.
_PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>", "<PAD>")


@runtime_checkable
class Tokenizer(Protocol):
    """What the trainer needs from a tokenizer."""

    vocab_size: int
    pad_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without any special token added."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (a list, or a 1-D integer array); special ids are dropped."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0..255 are bytes, then ``PAD_ID`` (256) and ``BOS_ID`` (257).

    Needs no file, never meets an unknown word, and keeps the text embedding table tiny (258
    rows); the cost is about 4-5 tokens per English word where a BPE vocabulary needs 1-2.
    """

    vocab_size = 258
    pad_id = PAD_ID
    bos_id = BOS_ID

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` as ids 0..255."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of byte ids; special ids are dropped and a byte run cut inside a character
        decodes to U+FFFD rather than failing (text may be cut per chunk)."""
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` loaded with the ``tokenizers`` package.

    ``pad_id`` is the file's padding token: the one its padding config names, else the first of
    ``<pad>``, ``[PAD]``, ``<|pad|>``, ``<|padding|>``, ``<PAD>`` in its vocabulary. A file with
    none of these (GPT-2 style vocabularies) gets ``pad_id`` = the file's vocabulary size, and
    ``vocab_size`` counts that extra id, so an embedding table of ``vocab_size`` rows always
    holds ``pad_id``.

    Raises ``ValueError`` when ``path`` is missing or is not a tokenizer file the package can read.
    """

    def __init__(self, path: str | os.PathLike):
        from tokenizers import Tokenizer as _HF

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ValueError(f"tokenizer file {self.path!r} does not exist; give the path of a tokenizer.json "
                             f"or 'bytes' for the byte tokenizer")
        try:
            self._tok = _HF.from_file(self.path)
        except Exception as exc:  # the package raises a bare Exception for every kind of bad file
            raise ValueError(f"{self.path!r} is not a Hugging Face tokenizer.json: {exc}") from None
        own = self._tok.get_vocab_size(with_added_tokens=True)
        pad = self._find_pad()
        self.pad_id = own if pad is None else pad
        self.vocab_size = own + 1 if pad is None else own

    def _find_pad(self) -> int | None:
        padding = self._tok.padding
        if padding is not None and padding.get("pad_token") is not None:
            pad = self._tok.token_to_id(padding["pad_token"])
            if pad is not None:
                return pad
        for name in _PAD_NAMES:
            pad = self._tok.token_to_id(name)
            if pad is not None:
                return pad
        return None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the file's post-processor specials (BOS/EOS)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` through the file's decoder; special tokens (and the extra pad id) are dropped."""
        own = self._tok.get_vocab_size(with_added_tokens=True)
        return self._tok.decode([int(i) for i in ids if 0 <= int(i) < own], skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r})"


def get_tokenizer(spec: str | os.PathLike) -> ByteTokenizer | HFTokenizer:
    """``"bytes"`` gives :class:`ByteTokenizer`; a path to a ``tokenizer.json`` (or to a folder
    holding one, as Hugging Face model folders do) gives :class:`HFTokenizer`.

    Raises ``ValueError`` for an empty spec or a path without a readable tokenizer file.
    """
    if isinstance(spec, str) and spec.strip() == "bytes":
        return ByteTokenizer()
    path = os.fspath(spec)
    if not path.strip():
        raise ValueError("tokenizer spec is empty: give 'bytes' or the path of a tokenizer.json")
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    return HFTokenizer(path)
