"""A CLIP BPE tokenizer built offline from a word list.

Real checkpoints ship ``openai/clip-vit-large-patch14``'s 49,408-token vocabulary; it cannot be downloaded here, so
the tiny bases get a vocabulary of their own in the identical on-disk format (``vocab.json`` + ``merges.txt``),
which the stock ``transformers.CLIPTokenizer`` loads and runs unchanged:

- the 256 byte-level symbols and their end-of-word forms (``a`` and ``a</w>``), as in CLIP, so any text tokenizes
  (unknown words fall back to smaller pieces, down to single characters);
- BPE merges learned on the word list until every word is whole (:func:`learn_bpe_merges`; e.g. ``r e`` → ``re``,
  ``re d</w>`` → ``red</w>``), so a word of the caption grammar is one token;
- ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding token, as in Stable Diffusion).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode symbols (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))
# CLIP's pre-tokenisation pattern (lower-cased text): special tokens, contractions, letters, digits, other symbols.
_WORD_RE = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+""")


def caption_words(texts: Iterable[str]) -> list[str]:
    """The distinct pre-tokenised words of ``texts`` (lower-cased, CLIP's split), in first-seen order."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in _WORD_RE.findall(text.lower()):
            seen.setdefault(word, None)
    return list(seen)


def learn_bpe_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Byte-level BPE merges learned on ``words`` until every word is one symbol (Sennrich et al. 2016): repeatedly
    merge the most frequent adjacent pair over all words (ties: the lexicographically smallest pair). A BPE encoder
    applies merges by rank, which replays this order, so each word of the list encodes to a single token; the last
    symbol of a word carries CLIP's end-of-word mark ``</w>``."""
    byte_encoder = bytes_to_unicode()
    segmented = []
    for word in dict.fromkeys(words):
        symbols = [byte_encoder[b] for b in word.encode("utf-8")]
        if symbols:
            symbols[-1] += "</w>"
            segmented.append(symbols)
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in segmented:
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for k, symbols in enumerate(segmented):
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            segmented[k] = out


def build_clip_tokenizer(words: Iterable[str], out_dir: str | os.PathLike, model_max_length: int = 77) -> CLIPTokenizer:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer config for a CLIP BPE tokenizer whose vocabulary
    makes each of ``words`` a single token (:func:`learn_bpe_merges`); return it loaded with the stock
    ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    byte_symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in byte_symbols + [s + "</w>" for s in byte_symbols]:
        vocab.setdefault(symbol, len(vocab))
    merges = learn_bpe_merges(words)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for special in (BOS, EOS):
        vocab.setdefault(special, len(vocab))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(
        vocab=vocab, merges=merges, bos_token=BOS, eos_token=EOS, unk_token=EOS,
        pad_token=EOS, model_max_length=model_max_length,
    )
    tokenizer.save_pretrained(out)
    return CLIPTokenizer.from_pretrained(out)


def tokenize(tokenizer, texts: list[str]):
    """Token ids (N, model_max_length) of ``texts``, padded and truncated as the pipelines' ``encode_prompt`` does."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids
