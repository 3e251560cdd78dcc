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

import numpy as np

NUM_BYTES = 256


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


def train_bpe(text: str, vocab_size: int) -> dict[tuple[int, int], int]:
    """Learn ``vocab_size - 256`` merges on the UTF-8 bytes of ``text``.

    Each step merges the most frequent pair of the current ids into the next new id (256, 257,
    ...); ties go to the pair whose first occurrence is earliest. Stops early when fewer than
    two ids are left.

    Args:
        text: str.
        vocab_size: int >= 256, the bytes plus the number of merges.

    Returns:
        dict {(a, b): new_id}, in the order learned (new ids 256, 257, ... consecutive).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(vocab_size, int) or vocab_size < NUM_BYTES:
        raise ValueError(f"vocab_size must be an int >= {NUM_BYTES}, got {vocab_size!r}")
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


def bpe_encode(text: str, merges) -> list[int]:
    """Encode ``text``: its UTF-8 bytes, then the merges replayed, earliest learned first.

    Repeatedly merges, among the pairs present, the one with the lowest new id, until no
    present pair is in ``merges``. The empty string gives [].
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    merges = _check_merges(merges)
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


def compression_ratio(text: str, merges) -> float:
    """UTF-8 bytes per BPE token of ``text`` (1.0 without merges)."""
    return len(text.encode("utf-8")) / max(1, len(bpe_encode(text, merges)))


def first_merges(merges, count: int) -> dict[tuple[int, int], int]:
    """The first ``count`` merges learned (a smaller vocabulary of the same training run)."""
    return {pair: i for pair, i in _check_merges(merges).items() if i < NUM_BYTES + count}
