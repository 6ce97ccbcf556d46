"""A CLIP-layout BPE tokenizer for the shapes world's vocabulary, and the small text-encoder config.

The tokenizer files are the classic CLIP pair (``vocab.json`` + ``merges.txt``): 256 byte symbols,
the same 256 with ``</w>``, then merges that build every caption word into one token, then
``<|startoftext|>`` and ``<|endoftext|>`` (the highest id, so the legacy ``eos_token_id = 2``
pooling of ``CLIPTextModel`` — at ``input_ids.argmax(-1)`` — lands on the first end token, as with
the real aMUSEd text encoder). Merges are found by simulating BPE, so each added merge applies after
the earlier ones and every world word ends as a single token; any other text still tokenizes
(byte-level).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .world import all_captions_vocabulary

MAX_TOKENS = 77


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    word = list(symbols)
    while len(word) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        a, b = word[i], word[i + 1]
        out, j = [], 0
        while j < len(word):
            if j < len(word) - 1 and word[j] == a and word[j + 1] == b:
                out.append(a + b)
                j += 2
            else:
                out.append(word[j])
                j += 1
        word = out
    return word


def build_tokenizer_files(folder: Path, words: list[str] | None = None) -> dict[str, int]:
    """Write vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json; return the vocab."""
    words = words or all_captions_vocabulary()
    table = bytes_to_unicode()
    base = [table[b] for b in range(256)]
    vocab: dict[str, int] = {}
    for s in base + [s + "</w>" for s in base]:
        vocab[s] = len(vocab)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for w in words:
        chars = [table[b] for b in w.encode("utf-8")]
        symbols = chars[:-1] + [chars[-1] + "</w>"]
        while True:
            seg = _bpe(symbols, ranks)
            if len(seg) == 1:
                break
            pair = (seg[0], seg[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in vocab:
                vocab[pair[0] + pair[1]] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        **special, "model_max_length": MAX_TOKENS, "do_lower_case": True, "errors": "replace",
        "tokenizer_class": "CLIPTokenizer", "add_prefix_space": False}, indent=2))
    return vocab


class WordTokenizer:
    """Fast tokenizer for world captions (every word is one token): the same ids as ``CLIPTokenizer``
    with ``padding="max_length", max_length=77, truncation=True`` (checked in tests)."""

    _RX = re.compile(r"[a-z]+|,")

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self.bos = vocab["<|startoftext|>"]
        self.eos = vocab["<|endoftext|>"]

    def __call__(self, text: str) -> list[int]:
        ids = [self.bos] + [self.vocab[w + "</w>"] for w in self._RX.findall(text.lower())]
        ids = ids[:MAX_TOKENS - 1] + [self.eos]
        return ids + [self.eos] * (MAX_TOKENS - len(ids))


def text_encoder_config(vocab_size: int, hidden: int = 128, layers: int = 3, heads: int = 2,
                        intermediate: int = 256, projection: int = 128) -> dict:
    """A small ``CLIPTextModelWithProjection`` config (legacy eos id 2 pooling, like the real aMUSEd CLIP-L)."""
    return {
        "architectures": ["CLIPTextModelWithProjection"],
        "model_type": "clip_text_model",
        "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
        "hidden_act": "quick_gelu",
        "hidden_size": hidden,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": MAX_TOKENS,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "projection_dim": projection,
        "vocab_size": vocab_size,
    }
