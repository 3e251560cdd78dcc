"""genlab.bpe: merges vs a brute-force re-implementation and Hugging Face ``tokenizers``, round
trips on random UTF-8, hand-worked examples, bits per byte."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genlab import bpe


def brute_force_training(text: str, num_merges: int):
    """BPE written the slow, obvious way over byte strings: (merged byte strings in order, final
    segmentation, whether every step's maximum was unique)."""
    symbols = [bytes([b]) for b in text.encode("utf-8")]
    learned, unique = [], True
    for _ in range(num_merges):
        if len(symbols) < 2:
            break
        pairs = [(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)]
        counts = {p: pairs.count(p) for p in pairs}
        top = max(counts.values())
        unique &= sum(c == top for c in counts.values()) == 1
        best = next(p for p in pairs if counts[p] == top)  # earliest first occurrence
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(best[0] + best[1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
        learned.append(best[0] + best[1])
    return learned, symbols, unique


def random_text(rng: np.random.Generator, length: int) -> str:
    pools = [range(0x61, 0x67), range(0x20, 0x21), range(0x4E00, 0x4E08), range(0xE9, 0xEA),
             range(0x1F600, 0x1F602)]  # fmt: skip
    chars = []
    for _ in range(length):
        pool = pools[int(rng.integers(len(pools)))]
        chars.append(chr(int(rng.choice(list(pool)))))
    return "".join(chars)


@pytest.mark.parametrize("seed", range(4))
def test_train_bpe_matches_a_brute_force_implementation(seed):
    text = random_text(np.random.default_rng(seed), 120)
    merges = bpe.train_bpe(text, 256 + 40)
    table = bpe.token_bytes(merges)
    learned, symbols, _ = brute_force_training(text, 40)
    assert [table[i] for i in sorted(merges.values())] == learned
    assert list(merges.values()) == list(range(256, 256 + len(merges)))
    # encoding the training text reproduces training's final segmentation
    assert [table[i] for i in bpe.bpe_encode(text, merges)] == symbols


def test_hand_worked_examples():
    assert bpe.pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert bpe.pair_counts([7, 7, 7]) == {(7, 7): 2}
    assert bpe.merge_pair([5, 5, 5], (5, 5), 300) == [300, 5]
    assert bpe.merge_pair([5, 5, 5, 5], (5, 5), 300) == [300, 300]
    # Wikipedia's example: aaabdaaabac -> ZabdZabac -> ZYdZYac -> XdXac
    assert list(bpe.train_bpe("aaabdaaabac", 259).items()) == [((97, 97), 256), ((256, 97), 257),
                                                               ((257, 98), 258)]  # fmt: skip
    merges = bpe.train_bpe("aaabdaaabac", 259)
    assert bpe.bpe_encode("aaabdaaabac", merges) == [258, 100, 258, 97, 99]
    # ties: "ab" and "bc" both occur twice in "abcabc..."? here ab, bc, ca tie and ab is first
    assert next(iter(bpe.train_bpe("abcabc", 257))) == (97, 98)
    # encoding applies the lowest new id first, not the most frequent pair
    assert bpe.bpe_encode("abcbcbc", {(97, 98): 256, (98, 99): 257}) == [256, 99, 257, 257]


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_on_random_utf8(seed):
    rng = np.random.default_rng(100 + seed)
    merges = bpe.train_bpe(random_text(rng, 200), 256 + 30)
    for _ in range(5):
        text = random_text(rng, int(rng.integers(0, 60)))
        ids = bpe.bpe_encode(text, merges)
        assert bpe.bpe_decode(ids, merges) == text
        assert len(ids) <= len(text.encode("utf-8"))
    assert (
        bpe.bpe_decode(bpe.bpe_encode("分词 tokenization ✓", merges), merges)
        == "分词 tokenization ✓"
    )


def test_replaying_merges_in_order_gives_the_same_encoding():
    rng = np.random.default_rng(7)
    merges = bpe.train_bpe(random_text(rng, 300), 256 + 50)
    for _ in range(10):
        text = random_text(rng, 80)
        ids = list(text.encode("utf-8"))
        for pair, new_id in merges.items():
            ids = bpe.merge_pair(ids, pair, new_id)
        assert bpe.bpe_encode(text, merges) == ids


def test_decode_replaces_broken_utf8_and_rejects_unknown_ids():
    assert bpe.bpe_decode(list("中".encode())[:2], {}) == "\ufffd"
    with pytest.raises(ValueError, match="ids"):
        bpe.bpe_decode([300], {})


def test_compression_ratio_and_first_merges():
    text = "the cat and the hat and the bat " * 10
    merges = bpe.train_bpe(text, 256 + 20)
    assert bpe.compression_ratio(text, {}) == 1.0
    assert (
        bpe.compression_ratio(text, merges)
        > bpe.compression_ratio(text, bpe.first_merges(merges, 5))
        > 1.0
    )


def test_bits_per_byte_closed_form_and_errors():
    assert bpe.bits_per_byte(math.log(2.0), 1) == pytest.approx(1.0)
    assert bpe.bits_per_byte(8 * math.log(2.0), 4) == pytest.approx(2.0)
    # a character model and a BPE model coding the same 10 bytes with the same total agree
    assert bpe.bits_per_byte(12.0, 10) == pytest.approx(12.0 / 10 / math.log(2))
    with pytest.raises(ValueError, match="num_bytes"):
        bpe.bits_per_byte(1.0, 0)
    with pytest.raises(ValueError, match="vocab_size"):
        bpe.train_bpe("abc", 255)
    with pytest.raises(TypeError, match="text"):
        bpe.train_bpe(b"abc", 300)
    with pytest.raises(TypeError, match="ids"):
        bpe.pair_counts("abc")


HF_MERGES = 10


def _tie_free_text():
    """A text on which every training step's most frequent pair is unique, so any tie rule
    gives the same merges."""
    for seed in range(400):
        rng = np.random.default_rng(seed)
        words = [
            "".join(rng.choice(list("abcdefg"), size=int(rng.integers(2, 5)))) for _ in range(5)
        ]
        weights = rng.dirichlet(np.ones(5) * 0.5)
        text = "".join(rng.choice(words, size=60, p=weights))
        if brute_force_training(text, HF_MERGES)[2]:
            return text
    raise AssertionError("no tie-free text found")


def test_merges_match_hugging_face_tokenizers_where_ties_cannot_differ():
    tokenizers = pytest.importorskip(
        "tokenizers", reason="Hugging Face tokenizers is not installed"
    )
    from tokenizers import decoders, models, pre_tokenizers, trainers

    text = _tie_free_text()
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    hf.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + HF_MERGES, initial_alphabet=alphabet,
                                  show_progress=False, min_frequency=1)  # fmt: skip
    hf.train_from_iterator([text], trainer=trainer)
    hf_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                 for m in __import__("json").loads(hf.to_str())["model"]["merges"]]  # fmt: skip
    ours = bpe.train_bpe(text, 256 + HF_MERGES)
    table = bpe.token_bytes(ours)
    # HF writes bytes with GPT-2's printable byte alphabet; map them back
    from genlab.gpt import _bytes_to_unicode

    to_byte = {c: b for b, c in _bytes_to_unicode().items()}
    as_bytes = [(bytes(to_byte[c] for c in a), bytes(to_byte[c] for c in b)) for a, b in hf_merges]
    assert as_bytes == [(table[a], table[b]) for (a, b) in ours]
    hf_ids = hf.encode(text).tokens
    assert [bytes(to_byte[c] for c in t) for t in hf_ids] == [
        table[i] for i in bpe.bpe_encode(text, ours)
    ]


# --- genlab.gpt.GPT2Vocab with a merges file --------------------------------------------------


def test_gpt2_vocab_encodes_by_merge_rank_not_longest_match(tmp_path):
    import json

    from genlab import gpt

    letters = {c: i for i, c in enumerate("abcdxyzĠ!")}  # "Ġ" is the byte-level space
    vocab = {**letters, "bc": 9, "ab": 10, "abc": 11, "Ġa": 12}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nb c\na b\nĠ a\n", encoding="utf-8")
    ranks = gpt.GPT2Vocab.read_merges(tmp_path / "merges.txt")
    assert ranks == {("b", "c"): 0, ("a", "b"): 1, ("Ġ", "a"): 2}
    longest = gpt.GPT2Vocab(tmp_path / "vocab.json")
    merged = gpt.GPT2Vocab(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert longest.encode("abc") == [11]  # the longest entry, though no merge makes it
    assert merged.encode("abc") == [vocab["a"], vocab["bc"]]  # "b c" has the lower rank
    assert merged.encode("ab abc!") == [10, 12, 9, 8]  # pieces: "ab", " abc", "!"
    assert merged.decode(merged.encode("ab abc!")) == "ab abc!"
    (tmp_path / "bad.txt").write_text("#version: 0.2\nabc\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        gpt.GPT2Vocab.read_merges(tmp_path / "bad.txt")


def test_gpt2_vocab_matches_hugging_face_byte_level_bpe(tmp_path):
    pytest.importorskip("tokenizers", reason="Hugging Face tokenizers is not installed")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from genlab import gpt

    corpus = ("It's the cat's hat, isn't it? We'll see 42 cats and 7 hats. 分词 is tokenization; "
              "don't   panic!\n") * 20  # fmt: skip
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex split
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    hf.train_from_iterator([corpus], trainers.BpeTrainer(vocab_size=len(alphabet) + 60,
                                                         initial_alphabet=alphabet,
                                                         show_progress=False))  # fmt: skip
    hf.model.save(str(tmp_path))
    ours = gpt.GPT2Vocab(tmp_path / "vocab.json", tmp_path / "merges.txt")
    for text in ("It's the cat's hat", "isn't 42 cats?", "分词 tokenization", "  don't   panic!\n",
                 "hats and cats and 7 hats"):  # fmt: skip
        assert ours.encode(text) == hf.encode(text).ids, text
        assert ours.decode(ours.encode(text)) == text


@pytest.mark.parametrize("seed", range(3))
def test_encode_array_equals_bpe_encode(seed):
    rng = np.random.default_rng(seed)
    merges = bpe.train_bpe(random_text(rng, 300) + "aaaaaaa bbbb", 256 + 40)
    texts = [random_text(rng, int(rng.integers(0, 120))) for _ in range(8)]
    for text in texts + ["", "a", "a" * 9]:
        ids = bpe.encode_array(text, merges)
        assert ids.dtype == np.int32 and ids.tolist() == bpe.bpe_encode(text, merges)


def test_encode_array_merges_runs_of_a_repeated_byte_left_to_right():
    merges = {(97, 97): 256, (256, 256): 257}
    for n in range(1, 10):
        assert bpe.encode_array("a" * n, merges).tolist() == bpe.bpe_encode("a" * n, merges)
    assert bpe.encode_array("aaaaa", merges).tolist() == [257, 97]


# --- GPT-2's pre-tokeniser ---------------------------------------------------------------------


def test_pretokenize_gives_hand_written_chunks():
    text = "It's 42 cats' hats,  isn't it?\n\n  Yes!! 分词 x_1"
    assert bpe.pretokenize(text) == ["It", "'s", " 42", " cats", "'", " hats", ",", " ", " isn",
                                     "'t", " it", "?", "\n\n ", " Yes", "!!", " 分词", " x", "_",
                                     "1"]  # fmt: skip
    # the last space before a word goes with the word; trailing whitespace stays one chunk
    assert bpe.pretokenize("a   b") == ["a", "  ", " b"]
    assert bpe.pretokenize("end.  \n") == ["end", ".", "  \n"]
    assert bpe.pretokenize("") == []
    with pytest.raises(TypeError, match="text"):
        bpe.pretokenize(b"abc")


def _mixed_text(rng: np.random.Generator, length: int) -> str:
    pieces = ["the", "cat", "'s", "'t", "'re", "42", "7", " ", "  ", "\n", "\t", ",", "?!", "--",
              "_", "分词", "é", "x1", "ß", "'", "\"", "(", "3.14"]  # fmt: skip
    return "".join(str(rng.choice(pieces)) for _ in range(length))


@pytest.mark.parametrize("seed", range(3))
def test_pretokenize_matches_gpt2_pattern_in_the_regex_package(seed):
    regex = pytest.importorskip("regex", reason="the regex package (\\p{L}) is not installed")
    from genlab.gpt import GPT2Vocab

    gpt2 = regex.compile(GPT2Vocab.SPLIT)  # GPT-2's own pattern, with Unicode classes
    text = _mixed_text(np.random.default_rng(seed), 300)
    assert bpe.pretokenize(text) == gpt2.findall(text)


def test_pretokenize_matches_hugging_face_byte_level_split():
    pytest.importorskip("tokenizers", reason="Hugging Face tokenizers is not installed")
    from tokenizers import pre_tokenizers

    from genlab.gpt import _bytes_to_unicode

    to_byte = {c: b for b, c in _bytes_to_unicode().items()}
    split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    text = _mixed_text(np.random.default_rng(9), 300)
    theirs = [bytes(to_byte[c] for c in piece).decode("utf-8")
              for piece, _ in split.pre_tokenize_str(text)]  # fmt: skip
    assert bpe.pretokenize(text) == theirs


def brute_force_chunk_training(text: str, num_merges: int):
    """BPE within chunks, the slow way: every chunk occurrence kept, pairs counted in text order
    (never across two chunks), ties to the earliest first occurrence."""
    chunks = [[bytes([b]) for b in chunk.encode("utf-8")] for chunk in bpe.pretokenize(text)]
    learned = []
    for _ in range(num_merges):
        pairs = [(c[i], c[i + 1]) for c in chunks for i in range(len(c) - 1)]
        if not pairs:
            break
        counts = {p: pairs.count(p) for p in pairs}
        best = next(p for p in pairs if counts[p] == max(counts.values()))
        for k, c in enumerate(chunks):
            merged, i = [], 0
            while i < len(c):
                if i + 1 < len(c) and (c[i], c[i + 1]) == best:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(c[i])
                    i += 1
            chunks[k] = merged
        learned.append(best[0] + best[1])
    return learned, [s for c in chunks for s in c]


@pytest.mark.parametrize("seed", range(3))
def test_train_bpe_pretokenized_matches_a_brute_force_implementation(seed):
    text = _mixed_text(np.random.default_rng(20 + seed), 120)
    merges = bpe.train_bpe(text, 256 + 40, pretokenize=True)
    table = bpe.token_bytes(merges)
    learned, symbols = brute_force_chunk_training(text, 40)
    assert [table[i] for i in sorted(merges.values())] == learned
    assert [table[i] for i in bpe.bpe_encode(text, merges, pretokenize=True)] == symbols
    # no learned token spans two chunks; without the split, some do
    assert bpe.crossing_merges(merges) == []
    assert bpe.crossing_merges(bpe.train_bpe(text, 256 + 40)) != []


@pytest.mark.parametrize("seed", range(3))
def test_pretokenized_encoding_round_trips_and_respects_chunks(seed):
    rng = np.random.default_rng(40 + seed)
    merges = bpe.train_bpe(_mixed_text(rng, 200), 256 + 60, pretokenize=True)
    table = bpe.token_bytes(merges)
    for text in [_mixed_text(rng, 50) for _ in range(4)] + ["", "分词 tokenization ✓  \n"]:
        ids = bpe.bpe_encode(text, merges, pretokenize=True)
        assert bpe.bpe_decode(ids, merges) == text
        # token boundaries include every chunk boundary
        ends = np.cumsum([len(table[i]) for i in ids]).tolist()
        chunk_ends = np.cumsum([len(c.encode()) for c in bpe.pretokenize(text)]).tolist()
        assert set(chunk_ends) <= set(ends)


def test_crossing_merges_hand_worked():
    # "e " crosses (a letter, then the space that belongs to the next word); " t", "  ", "'s"
    # and "ab" do not; a partial UTF-8 token is never reported
    merges = {(101, 32): 256, (32, 116): 257, (32, 32): 258, (39, 115): 259, (97, 98): 260,
              (115, 46): 261, (228, 184): 262, (32, 256): 263}  # fmt: skip
    assert bpe.crossing_merges(merges) == [256, 261, 263]
    assert bpe.crossing_merges({}) == []
