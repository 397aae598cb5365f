"""Text tokenizers with one interface: ``texts -> (B, max_len)`` token ids, padded with 0.

* :class:`SentencePieceTokenizer`: the TIPS rules (ASCII-lowercase, SentencePiece without BOS/EOS, truncate/pad to 64);
* :class:`HFTokenizer`: any transformers tokenizer, lowercased and padded to ``max_length``;
* :class:`ByteTokenizer`: a deterministic stand-in for random-weight test models.

Example:
    >>> ByteTokenizer(vocab_size=100, max_len=8)(["Ab"]).tolist()
    [[98, 99, 0, 0, 0, 0, 0, 0]]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from zsad.errors import CheckpointError

__all__ = ["SentencePieceTokenizer", "HFTokenizer", "ByteTokenizer", "ascii_lower", "MAX_TEXT_LEN"]

MAX_TEXT_LEN = 64
# ------------------------------------------------------------------------------------------------------------
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class SentencePieceTokenizer:
    """The TIPS tokenizer: ASCII-lowercase, SentencePiece without BOS/EOS, truncate/pad with 0 to 64.

    Example:
        >>> import zsad
        >>> from pathlib import Path
        >>> fx = Path(zsad.__file__).resolve().parents[1] / "tests" / "fixtures" / "tipsomaly-parity"
        >>> ids = SentencePieceTokenizer(fx / "tokenizer.model")(["A photo of a metal nut."])
        >>> ids.shape, int((ids != 0).sum()) > 0, bool((ids[0, -1] == 0))
        (torch.Size([1, 64]), True, True)
    """

    def __init__(self, path: str | Path, max_len: int = MAX_TEXT_LEN) -> None:
        import sentencepiece

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"The TIPS tokenizer file {path} does not exist. Put the official 'tokenizer.model' "
                "(https://storage.googleapis.com/tips_data/v1_0/checkpoints/tokenizer.model) next to the weights, "
                "or run: zsad weights download tips-v1-l14-hr"
            )
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(
                f"Cannot load the SentencePiece tokenizer {path}: {exc}. The file is corrupt or not a "
                "SentencePiece model; download the official tokenizer.model again."
            ) from exc
        self.path = path
        self.max_len = max_len
        self.vocab_size = self.sp.get_piece_size()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for row, text in enumerate(texts):
            pieces = self.sp.encode(text.translate(_ASCII_LOWER))[: self.max_len]
            ids[row, : len(pieces)] = torch.tensor(pieces, dtype=torch.long)
        return ids


class HFTokenizer:
    """Adapter of a transformers TIPSv2 tokenizer to the ``texts -> (B, 64) ids`` interface."""

    def __init__(self, tokenizer: Any, max_len: int = MAX_TEXT_LEN) -> None:
        self.tokenizer, self.max_len = tokenizer, max_len

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(
            [t.translate(_ASCII_LOWER) for t in texts],
            padding="max_length",
            truncation=True,
            max_length=self.max_len,
            return_tensors="pt",
        )
        return enc["input_ids"].long()


class ByteTokenizer:
    """Deterministic stand-in tokenizer for random models (UTF-8 bytes folded into the vocabulary, no 0)."""

    def __init__(self, vocab_size: int, max_len: int = MAX_TEXT_LEN) -> None:
        self.vocab_size, self.max_len = vocab_size, max_len

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for row, text in enumerate(texts):
            data = [1 + b % (self.vocab_size - 1) for b in text.translate(_ASCII_LOWER).encode()][: self.max_len]
            ids[row, : len(data)] = torch.tensor(data, dtype=torch.long)
        return ids


def ascii_lower(text: str) -> str:
    """Lowercase A-Z only, as TensorFlow's ``tf.strings.lower`` that TIPS was trained with."""
    return text.translate(_ASCII_LOWER)
