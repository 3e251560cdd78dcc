"""Byte-level byte-pair encoding (BPE), the tokenizer family of GPT-2 and its successors
(chapter 07).

Text is first its UTF-8 bytes, ids 0..255, so every string can be encoded (Chinese included)
and nothing is ever "unknown". Training repeatedly replaces the most frequent pair of adjacent
ids by a new id (256, 257, ...); the learned ``merges`` are a dict ``{(a, b): new_id}`` in the
order they were learned. Encoding replays the merges, earliest learned first; decoding
concatenates each id's bytes.

Ids are Python lists of ints throughout: the loops are over a few thousand ids and Python's
dicts do the counting. The functions are the references of chapter 07's exercises.
"""

from __future__ import annotations

import math
import re

import numpy as np

NUM_BYTES = 256

# GPT-2's pre-tokeniser (Radford et al. 2019, ``encoder.py``): contractions, letters with an
# optional leading space, digits with an optional leading space, other symbols with an optional
# leading space, whitespace not followed by a non-space, then any whitespace. GPT-2 writes it
# with the ``regex`` package's Unicode classes (\p{L} letters, \p{N} numbers); Python's ``re``
# has no \p{..}, so letters are [^\W\d_] (word characters that are neither decimal digits nor
# "_") and numbers \d. The two differ only on numeric characters that are not decimal digits
# (such as "²" or "½", \p{N} but letters here) and on combining marks.
GPT2_SPLIT = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
)


def _check_ids(name: str, ids) -> list[int]:
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{name} must be a list of int ids, got {type(ids).__name__}")
    ids = list(ids)
    if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids):
        raise TypeError(f"{name} must hold non-negative Python ints")
    return ids


def pair_counts(ids) -> dict[tuple[int, int], int]:
    """How often each pair of consecutive ids occurs.

    Args:
        ids: list of int, length L (L < 2 has no pairs).

    Returns:
        dict {(a, b): count} over the L - 1 consecutive pairs (overlapping: [1, 1, 1] holds the
        pair (1, 1) twice), keys in the order of each pair's first occurrence.
    """
    ids = _check_ids("ids", ids)
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_pair(ids, pair: tuple[int, int], new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair`` replaced by ``new_id``.

    Scans left to right without overlap: merging (1, 1) in [1, 1, 1] gives [new_id, 1].
    The input list is not modified.
    """
    ids = _check_ids("ids", ids)
    a, b = pair
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def pretokenize(text: str) -> list[str]:
    """GPT-2's pre-tokeniser: ``text`` cut into chunks that BPE never merges across.

    Chunks, tried in this order at each position: an English contraction ('s 't 're 've 'm 'll
    'd); a run of letters with an optional leading space; a run of decimal digits with an optional
    leading space; a run of other symbols (not space, letter or digit) with an optional leading
    space; a run of whitespace that is not followed by a non-space (so the last space before a
    word goes with the word: "a  b" gives "a", " ", " b"); any remaining whitespace.

    Args:
        text: str.

    Returns:
        list of non-empty str whose concatenation is ``text``; [] for "".
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return GPT2_SPLIT.findall(text)


def _train_on_chunks(text: str, vocab_size: int) -> dict[tuple[int, int], int]:
    """:func:`train_bpe` with ``pretokenize=True``: every distinct chunk is kept once with its
    count, so a step costs the number of distinct chunks, not the length of the text."""
    chunk_counts: dict[str, int] = {}
    for chunk in pretokenize(text):  # insertion order: order of first occurrence
        chunk_counts[chunk] = chunk_counts.get(chunk, 0) + 1
    chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    weights = list(chunk_counts.values())
    merges: dict[tuple[int, int], int] = {}
    for new_id in range(NUM_BYTES, vocab_size):
        counts: dict[tuple[int, int], int] = {}
        # a pair's first occurrence in the text lies in the first occurrence of some distinct
        # chunk, so visiting distinct chunks in order of first occurrence keeps the tie rule
        for ids, weight in zip(chunks, weights):
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + weight
        if not counts:
            break
        best = max(counts, key=counts.__getitem__)
        chunks = [merge_pair(ids, best, new_id) if len(ids) > 1 else ids for ids in chunks]
        merges[best] = new_id
    return merges


def train_bpe(
    text: str, vocab_size: int, *, pretokenize: bool = False
) -> dict[tuple[int, int], int]:
    """Learn ``vocab_size - 256`` merges on the UTF-8 bytes of ``text``.

    Each step merges the most frequent pair of the current ids into the next new id (256, 257,
    ...); ties go to the pair whose first occurrence is earliest. Stops early when fewer than
    two ids are left (with ``pretokenize``: when no chunk has two ids left).

    Args:
        text: str.
        vocab_size: int >= 256, the bytes plus the number of merges.
        pretokenize: keyword-only bool. False (the course's BPE): pairs are counted across the
            whole text, spaces and punctuation included. True (GPT-2's): the text is first cut
            by :func:`pretokenize`, and only pairs inside one chunk are counted and merged.

    Returns:
        dict {(a, b): new_id}, in the order learned (new ids 256, 257, ... consecutive).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(vocab_size, int) or vocab_size < NUM_BYTES:
        raise ValueError(f"vocab_size must be an int >= {NUM_BYTES}, got {vocab_size!r}")
    if pretokenize:
        return _train_on_chunks(text, vocab_size)
    ids = list(text.encode("utf-8"))
    merges: dict[tuple[int, int], int] = {}
    for new_id in range(NUM_BYTES, vocab_size):
        counts = pair_counts(ids)
        if not counts:
            break
        best = max(counts, key=counts.__getitem__)  # the first maximum: earliest occurrence
        ids = merge_pair(ids, best, new_id)
        merges[best] = new_id
    return merges


def _check_merges(merges) -> dict[tuple[int, int], int]:
    if not isinstance(merges, dict):
        raise TypeError(f"merges must be a dict {{(a, b): new_id}}, got {type(merges).__name__}")
    return merges


def bpe_encode(text: str, merges, *, pretokenize: bool = False) -> list[int]:
    """Encode ``text``: its UTF-8 bytes, then the merges replayed, earliest learned first.

    Repeatedly merges, among the pairs present, the one with the lowest new id, until no
    present pair is in ``merges``. The empty string gives []. With ``pretokenize=True``
    (keyword-only; for merges learned that way) each chunk of :func:`pretokenize` is encoded
    alone and the ids concatenated, so no token spans two chunks.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    merges = _check_merges(merges)
    if pretokenize:
        cache: dict[str, list[int]] = {}
        out: list[int] = []
        for chunk in GPT2_SPLIT.findall(text):
            if chunk not in cache:
                cache[chunk] = bpe_encode(chunk, merges)
            out.extend(cache[chunk])
        return out
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        present = set(zip(ids, ids[1:])) & merges.keys()
        if not present:
            break
        pair = min(present, key=merges.__getitem__)
        ids = merge_pair(ids, pair, merges[pair])
    return ids


def encode_array(text: str, merges) -> np.ndarray:
    """:func:`bpe_encode` for long texts (a whole corpus): the same ids, as int32 [L].

    Replays the merges in the order learned, one vectorised pass over the ids per merge (the
    same segmentation as merging the lowest present new id first). Inside a run of a repeated
    byte, merging (a, a) left to right takes every other pair.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
    for (a, b), new_id in sorted(_check_merges(merges).items(), key=lambda item: item[1]):
        hits = np.flatnonzero((ids[:-1] == a) & (ids[1:] == b))  # (H,) pair positions
        if hits.size == 0:
            continue
        run_start = np.r_[True, np.diff(hits) != 1]  # consecutive hits: a run of a == b
        first_of_run = np.flatnonzero(run_start)[np.cumsum(run_start) - 1]  # (H,)
        hits = hits[(np.arange(hits.size) - first_of_run) % 2 == 0]
        ids[hits] = new_id
        ids = np.delete(ids, hits + 1)
    return ids


def token_bytes(merges) -> dict[int, bytes]:
    """The bytes each id stands for: ``{id: bytes}`` for the 256 bytes and every merge."""
    table = {i: bytes([i]) for i in range(NUM_BYTES)}
    for (a, b), new_id in sorted(_check_merges(merges).items(), key=lambda item: item[1]):
        table[new_id] = table[a] + table[b]
    return table


def bpe_decode(ids, merges) -> str:
    """The text of ``ids``: their bytes concatenated, decoded as UTF-8 (invalid bytes, e.g. half
    a Chinese character, become U+FFFD). Unknown ids raise ValueError."""
    ids = _check_ids("ids", ids)
    table = token_bytes(merges)
    unknown = [i for i in ids if i not in table]
    if unknown:
        raise ValueError(f"ids {unknown[:5]} are neither bytes nor merged ids of these merges")
    return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")


def bits_per_byte(total_nll_nats, num_bytes):
    """A model's total negative log-likelihood of a text (nats), per byte of its UTF-8 encoding,
    in bits: comparable across tokenizers, unlike the loss per token. float."""
    if not isinstance(num_bytes, (int, float)) or isinstance(num_bytes, bool) or num_bytes <= 0:
        raise ValueError(f"num_bytes must be a positive number, got {num_bytes!r}")
    return float(total_nll_nats) / (num_bytes * math.log(2.0))


def compression_ratio(text: str, merges, *, pretokenize: bool = False) -> float:
    """UTF-8 bytes per BPE token of ``text`` (1.0 without merges); ``pretokenize`` as in
    :func:`bpe_encode`."""
    ids = bpe_encode(text, merges, pretokenize=pretokenize)
    return len(text.encode("utf-8")) / max(1, len(ids))


def first_merges(merges, count: int) -> dict[tuple[int, int], int]:
    """The first ``count`` merges learned (a smaller vocabulary of the same training run)."""
    return {pair: i for pair, i in _check_merges(merges).items() if i < NUM_BYTES + count}


# a string that can be part of one chunk of the pre-tokeniser: part of a contraction, a space
# and/or letters, a space and/or digits, a space and/or other symbols, or whitespace
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_INSIDE_ONE_CHUNK = re.compile(r" ?[^\W\d_]*| ?\d*| ?(?:[^\s\w]|_)*|\s+")


def crosses_chunks(token: str) -> bool:
    """Whether ``token`` can never lie inside one chunk of :func:`pretokenize`, whatever the text
    around it: "e " and "s." cross; " t", "  ", "'s", "'r" (part of "'re") and "ab" do not."""
    if not isinstance(token, str) or not token:
        raise ValueError(f"token must be a non-empty str, got {token!r}")
    if any(token in contraction for contraction in _CONTRACTIONS):
        return False
    return _INSIDE_ONE_CHUNK.fullmatch(token) is None


def crossing_merges(merges) -> list[int]:
    """The new ids of the merged tokens that GPT-2's tokenizer could never learn: those whose
    text can lie inside no single chunk of :func:`pretokenize` (:func:`crosses_chunks`), in
    increasing order. A token that is not valid UTF-8 on its own (part of a multi-byte character)
    is never reported. list of int, [] for no merges."""
    crossing = []
    for new_id, raw in sorted(token_bytes(merges).items()):
        if new_id < NUM_BYTES:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if crosses_chunks(text):
            crossing.append(new_id)
    return crossing
