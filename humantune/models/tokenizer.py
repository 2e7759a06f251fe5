"""A CLIP BPE tokenizer built offline from a word list.

Real checkpoints ship ``openai/clip-vit-large-patch14``'s 49,408-token vocabulary; it cannot be downloaded here, so
the tiny bases get a vocabulary of their own in the identical on-disk format (``vocab.json`` + ``merges.txt``),
which the stock ``transformers.CLIPTokenizer`` loads and runs unchanged:

- the 256 byte-level symbols and their end-of-word forms (``a`` and ``a</w>``), as in CLIP, so any text tokenizes
  (unknown words fall back to smaller pieces, down to single characters);
- for each word of the list, the left-to-right merges that build it whole (``r e`` → ``re``, ``re d</w>`` →
  ``red</w>``), so a word of the caption grammar is one token;
- ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding token, as in Stable Diffusion).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable

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


def build_clip_tokenizer(words: Iterable[str], out_dir: str | os.PathLike, model_max_length: int = 77) -> CLIPTokenizer:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer config for a CLIP BPE tokenizer whose vocabulary
    makes each of ``words`` a single token; return it loaded with the stock ``CLIPTokenizer``."""
    byte_symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in byte_symbols + [s + "</w>" for s in byte_symbols]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    seen_merges: set[tuple[str, str]] = set()
    byte_encoder = bytes_to_unicode()
    for word in words:
        symbols = [byte_encoder[b] for b in word.encode("utf-8")]
        if not symbols:
            continue
        symbols[-1] += "</w>"
        current = symbols[0]
        for nxt in symbols[1:]:
            pair = (current, nxt)
            if pair not in seen_merges:
                seen_merges.add(pair)
                merges.append(pair)
            current = current + nxt
            vocab.setdefault(current, len(vocab))
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
