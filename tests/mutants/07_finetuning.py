"""Mutants of chapter 07's graded exercises (solutions/07_finetuning/07_finetuning.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources run in the kernel after
the solution notebook, so they may use its imports (``jax``, ``jnp``, ``np``, ``nnx``, ``optax``,
``bpe``, ``gpt``, ``finetune``) and its other answers. The pitfalls of issue 17 are among the
wrong ones: greedy longest-match encoding instead of merges by rank (bpe_encode), the loss per
token instead of per byte (bits_per_byte), base weights or embeddings that train, or a gradient
clipped by the whole model's norm or one matrix at a time (lora_train_step), SFT's answer mask
not shifted onto the predictions or averaged per row, or a library loss called (sft_train_step),
DPO's sign and its forgotten reference (dpo_loss), GPT-2's chunks read off the splitter alone or
as 'a space after a word' (crossing_merges), the KL-regularised optimum without its entropy
bonus, with the reference untempered or forgotten (kl_regularised_optimum).
Each function's first wrong variant breaks no other exercise's visible checks.
"""

WRONG = {
    "pair_counts": {
        "skips_last_pair": """
def pair_counts(ids):
    counts = {}
    for i in range(len(ids) - 2):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts
""",
        "no_overlap": """
def pair_counts(ids):
    counts, i = {}, 0
    while i < len(ids) - 1:
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts
""",
        "presence_not_count": """
def pair_counts(ids):
    return {pair: 1 for pair in zip(ids, ids[1:])}
""",
    },
    "merge_pair": {
        "modifies_its_input": """
def merge_pair(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids
""",
        "right_to_left": """
def merge_pair(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i >= 1 and ids[i - 1] == pair[0] and ids[i] == pair[1]:
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]
""",
        "first_occurrence_only": """
def merge_pair(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)
""",
        "overlapping_matches": """
def merge_pair(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out
""",
    },
    "train_bpe": {
        "ties_to_the_last_pair": """
def train_bpe(text, vocab_size):
    if vocab_size < 256:
        raise ValueError("vocab_size")
    ids, merges = list(text.encode("utf-8")), {}
    for new_id in range(256, vocab_size):
        counts = pair_counts(ids)
        if not counts:
            break
        best = sorted(counts, key=counts.get)[-1]
        ids = merge_pair(ids, best, new_id)
        merges[best] = new_id
    return merges
""",
        "ties_to_the_smallest_pair": """
def train_bpe(text, vocab_size):
    if vocab_size < 256:
        raise ValueError("vocab_size")
    ids, merges = list(text.encode("utf-8")), {}
    for new_id in range(256, vocab_size):
        counts = pair_counts(ids)
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        ids = merge_pair(ids, best, new_id)
        merges[best] = new_id
    return merges
""",
        "characters_not_bytes": """
def train_bpe(text, vocab_size):
    if vocab_size < 256:
        raise ValueError("vocab_size")
    ids, merges = [ord(c) for c in text], {}
    for new_id in range(256, vocab_size):
        counts = pair_counts(ids)
        if not counts:
            break
        best = max(counts, key=counts.get)
        ids = merge_pair(ids, best, new_id)
        merges[best] = new_id
    return merges
""",
        "one_merge_too_many": """
def train_bpe(text, vocab_size):
    if vocab_size < 256:
        raise ValueError("vocab_size")
    ids, merges = list(text.encode("utf-8")), {}
    for new_id in range(256, vocab_size + 1):
        counts = pair_counts(ids)
        if not counts:
            break
        best = max(counts, key=counts.get)
        ids = merge_pair(ids, best, new_id)
        merges[best] = new_id
    return merges
""",
    },
    "bpe_encode": {
        "most_frequent_pair_first": """
def bpe_encode(text, merges):
    ids = list(text.encode("utf-8"))
    while True:
        counts = {p: c for p, c in pair_counts(ids).items() if p in merges}
        if not counts:
            return ids
        best = max(counts, key=counts.get)
        ids = merge_pair(ids, best, merges[best])
""",
        "greedy_longest_match": """
def bpe_encode(text, merges):
    table = {i: bytes([i]) for i in range(256)}
    for (a, b), i in sorted(merges.items(), key=lambda item: item[1]):
        table[i] = table[a] + table[b]
    lookup = {v: k for k, v in table.items()}
    data, ids, i = text.encode("utf-8"), [], 0
    longest = max(len(v) for v in table.values())
    while i < len(data):
        for j in range(min(len(data), i + longest), i, -1):
            if data[i:j] in lookup:
                ids.append(lookup[data[i:j]])
                i = j
                break
    return ids
""",
        "characters_not_bytes": """
def bpe_encode(text, merges):
    ids = [ord(c) for c in text]
    while True:
        present = [p for p in zip(ids, ids[1:]) if p in merges]
        if not present:
            return ids
        best = min(present, key=merges.get)
        ids = merge_pair(ids, best, merges[best])
""",
        "latest_merge_first": """
def bpe_encode(text, merges):
    ids = list(text.encode("utf-8"))
    while True:
        present = [p for p in zip(ids, ids[1:]) if p in merges]
        if not present:
            return ids
        best = max(present, key=merges.get)
        ids = merge_pair(ids, best, merges[best])
""",
    },
    "bpe_decode": {
        "strict_utf8": """
def bpe_decode(ids, merges):
    table = {i: bytes([i]) for i in range(256)}
    for (a, b), i in sorted(merges.items(), key=lambda item: item[1]):
        table[i] = table[a] + table[b]
    return b"".join(table[i] for i in ids).decode("utf-8")
""",
        "decodes_each_token_alone": """
def bpe_decode(ids, merges):
    table = {i: bytes([i]) for i in range(256)}
    for (a, b), i in sorted(merges.items(), key=lambda item: item[1]):
        table[i] = table[a] + table[b]
    return "".join(table[i].decode("utf-8", errors="replace") for i in ids)
""",
        "merged_ids_as_two_bytes": """
def bpe_decode(ids, merges):
    table = {i: bytes([i]) for i in range(256)}
    for (a, b), i in merges.items():
        table[i] = bytes([a % 256, b % 256])
    return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")
""",
        "latin1": """
def bpe_decode(ids, merges):
    table = {i: bytes([i]) for i in range(256)}
    for (a, b), i in sorted(merges.items(), key=lambda item: item[1]):
        table[i] = table[a] + table[b]
    return b"".join(table[i] for i in ids).decode("latin-1")
""",
    },
    "crossing_merges": {
        "one_chunk_from_the_splitter": """
def crossing_merges(merges):
    table = bpe.token_bytes(merges)
    out = []
    for new_id in sorted(merges.values()):
        try:
            text = table[new_id].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(bpe.pretokenize(text)) > 1:
            out.append(new_id)
    return out
""",
        "only_a_space_after_a_non_space": """
def crossing_merges(merges):
    table = bpe.token_bytes(merges)
    out = []
    for new_id in sorted(merges.values()):
        try:
            text = table[new_id].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if any(a != " " and b == " " for a, b in zip(text, text[1:])):
            out.append(new_id)
    return out
""",
        "letters_and_digits_one_kind": r"""
import re as _re

def crossing_merges(merges):
    table = bpe.token_bytes(merges)
    out = []
    for new_id in sorted(merges.values()):
        try:
            text = table[new_id].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if any(text in c for c in ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")):
            continue
        if _re.fullmatch(r" ?[^\W_]*| ?(?:[^\s\w]|_)*|\s+", text) is None:
            out.append(new_id)
    return out
""",
        "partial_characters_replaced": """
def crossing_merges(merges):
    table = bpe.token_bytes(merges)
    out = []
    for new_id in sorted(merges.values()):
        text = table[new_id].decode("utf-8", errors="replace")
        if bpe.crosses_chunks(text):
            out.append(new_id)
    return out
""",
    },
    "bits_per_byte": {
        "nats_per_byte": """
def bits_per_byte(total_nll_nats, num_bytes):
    if num_bytes <= 0:
        raise ValueError("num_bytes")
    return float(total_nll_nats / num_bytes)
""",
        "times_ln2": """
def bits_per_byte(total_nll_nats, num_bytes):
    if num_bytes <= 0:
        raise ValueError("num_bytes")
    return float(total_nll_nats * np.log(2.0) / num_bytes)
""",
        "no_check_of_num_bytes": """
def bits_per_byte(total_nll_nats, num_bytes):
    return float(total_nll_nats) / (num_bytes * float(np.log(2.0)))
""",
        "log10": """
def bits_per_byte(total_nll_nats, num_bytes):
    if num_bytes <= 0:
        raise ValueError("num_bytes")
    return float(total_nll_nats / np.log(10.0) / num_bytes)
""",
    },
    "lora_delta": {
        "flattens_leading_axes": """
def lora_delta(x, a, b, alpha, rank):
    rows = jnp.reshape(x, (-1, x.shape[-1]))
    return (alpha / rank) * (rows @ a @ b)
""",
        "no_scale": """
def lora_delta(x, a, b, alpha, rank):
    return x @ a @ b
""",
        "rank_over_alpha": """
def lora_delta(x, a, b, alpha, rank):
    return (rank / alpha) * (x @ a @ b)
""",
        "sqrt_rank_scale": """
def lora_delta(x, a, b, alpha, rank):
    return (alpha / np.sqrt(rank)) * (x @ a @ b)
""",
    },
    "merge_lora": {
        "no_scale": """
def merge_lora(kernel, a, b, alpha, rank):
    return kernel + a @ b
""",
        "subtracted": """
def merge_lora(kernel, a, b, alpha, rank):
    return kernel - (alpha / rank) * (a @ b)
""",
        "transposed_update": """
def merge_lora(kernel, a, b, alpha, rank):
    return kernel + (alpha / rank) * (a @ b).T
""",
        "scale_alpha_only": """
def merge_lora(kernel, a, b, alpha, rank):
    return kernel + alpha * (a @ b)
""",
    },
    "lora_init_check": {
        "sum_of_outputs_gradient": """
def lora_init_check(x, a, b, alpha, rank):
    def total(a_, b_):
        return lora_delta(x, a_, b_, alpha, rank).sum()

    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    g_a, g_b = jax.grad(total, argnums=(0, 1))(a, b)
    if float(jnp.linalg.norm(g_a)) == 0.0 and float(jnp.linalg.norm(g_b)) == 0.0:
        return "cannot train"
    offset = float(jnp.abs(lora_delta(x, a, b, alpha, rank)).max())
    return "starts off base" if offset > 1e-6 else "ok"
""",
        "inspects_the_matrices_not_the_update": """
def lora_init_check(x, a, b, alpha, rank):
    if not jnp.any(a != 0) and not jnp.any(b != 0):
        return "cannot train"
    return "starts off base" if bool(jnp.any(b != 0)) else "ok"
""",
        "scale_forgotten": """
def lora_init_check(x, a, b, alpha, rank):
    delta, pullback = jax.vjp(lambda a_, b_: (x @ a_) @ b_, jnp.asarray(a), jnp.asarray(b))
    g_a, g_b = pullback(jax.random.normal(jax.random.key(0), delta.shape))
    if not (bool(jnp.any(g_a != 0)) or bool(jnp.any(g_b != 0))):
        return "cannot train"
    return "starts off base" if float(jnp.abs(delta).max()) > 1e-6 else "ok"
""",
        "loose_tolerance": """
def lora_init_check(x, a, b, alpha, rank):
    delta, pullback = jax.vjp(lambda a_, b_: lora_delta(x, a_, b_, alpha, rank),
                              jnp.asarray(a), jnp.asarray(b))
    g_a, g_b = pullback(jax.random.normal(jax.random.key(0), delta.shape))
    if not (bool(jnp.any(g_a != 0)) or bool(jnp.any(g_b != 0))):
        return "cannot train"
    return "starts off base" if float(jnp.abs(delta).max()) > 0.1 else "ok"
""",
        "a_zero_means_no_training": """
def lora_init_check(x, a, b, alpha, rank):
    if not bool(jnp.any(a != 0)):
        return "cannot train"
    offset = float(jnp.abs(lora_delta(x, a, b, alpha, rank)).max())
    return "starts off base" if offset > 1e-6 else "ok"
""",
        "only_b_can_learn": """
def lora_init_check(x, a, b, alpha, rank):
    if not bool(jnp.any(x.reshape(-1, x.shape[-1]) @ a != 0)):
        return "cannot train"
    offset = float(jnp.abs(lora_delta(x, a, b, alpha, rank)).max())
    return "starts off base" if offset > 1e-6 else "ok"
""",
    },
    "lora_train_step": {
        "returns_the_loss_after_the_update": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])
    grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    grads = optax.clip_by_global_norm(max_norm).update(grads, None)[0]
    optimizer.update(model, grads)
    return loss_fn(model)
""",
        "no_shift": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, :-1])
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    grads = optax.clip_by_global_norm(max_norm).update(grads, None)[0]
    optimizer.update(model, grads)
    return loss
""",
        "gradient_ascent": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    grads = optax.clip_by_global_norm(max_norm).update(grads, None)[0]
    optimizer.update(model, jax.tree.map(lambda g: -g, grads))
    return loss
""",
        "embeddings_and_norms_train_too": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads = optax.clip_by_global_norm(max_norm).update(grads, None)[0]
    optimizer.update(model, grads)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads))
    return loss
""",
        "no_clipping": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss
""",
        "norm_of_the_whole_models_gradient": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads = optax.clip_by_global_norm(max_norm).update(grads, None)[0]
    optimizer.update(model, grads)  # the optimizer keeps the adapters' part
    return loss
""",
        "library_step_with_its_clip": """
def lora_train_step(model, optimizer, tokens, max_norm):
    return gpt.train_step(model, optimizer, tokens, max_grad_norm=max_norm)
""",
        "library_step_unclipped": """
def lora_train_step(model, optimizer, tokens, max_norm):
    return gpt.train_step(model, optimizer, tokens, max_grad_norm=1e30)
""",
        "each_matrix_clipped_alone": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    clip = lambda g: g * jnp.minimum(1.0, max_norm / jnp.maximum(jnp.linalg.norm(g), 1e-30))
    optimizer.update(model, jax.tree.map(clip, grads))
    return loss
""",
        "always_rescaled_to_max_norm": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))
    optimizer.update(model, jax.tree.map(lambda g: g * max_norm / norm, grads))
    return loss
""",
        "clipped_by_value": """
def lora_train_step(model, optimizer, tokens, max_norm):
    loss_fn = lambda m: gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, jax.tree.map(lambda g: jnp.clip(g, -max_norm, max_norm), grads))
    return loss
""",
    },
    "sft_train_step": {
        "mask_not_shifted": """
def sft_train_step(model, optimizer, tokens, answer_mask):
    mask = jnp.asarray(answer_mask, jnp.float32)[:, :-1]

    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(tokens[:, :-1]), axis=-1)
        nll = -jnp.take_along_axis(log_p, tokens[:, 1:, None], axis=-1)[..., 0]
        return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss
""",
        "mean_of_the_rows_means": """
def sft_train_step(model, optimizer, tokens, answer_mask):
    mask = jnp.asarray(answer_mask, jnp.float32)[:, 1:]

    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(tokens[:, :-1]), axis=-1)
        nll = -jnp.take_along_axis(log_p, tokens[:, 1:, None], axis=-1)[..., 0]
        per_row = (nll * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
        return per_row.mean()

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss
""",
        "prompt_in_the_loss": """
def sft_train_step(model, optimizer, tokens, answer_mask):
    def loss_fn(m):
        return gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss
""",
        "sum_not_mean": """
def sft_train_step(model, optimizer, tokens, answer_mask):
    mask = jnp.asarray(answer_mask, jnp.float32)[:, 1:]

    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(tokens[:, :-1]), axis=-1)
        nll = -jnp.take_along_axis(log_p, tokens[:, 1:, None], axis=-1)[..., 0]
        return (nll * mask).sum() / tokens.shape[0]

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss
""",
        "library_loss_of_the_selected_tokens": """
def sft_train_step(model, optimizer, tokens, answer_mask):
    loss_fn = lambda m: finetune.scored_loss(m, tokens, answer_mask)
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss
""",
        "library_completion_log_probs": """
def sft_train_step(model, optimizer, tokens, answer_mask):
    mask = jnp.asarray(answer_mask, jnp.float32)

    def loss_fn(m):
        total = -finetune.completion_log_probs(m, tokens, mask).sum()
        return total / jnp.maximum(mask[:, 1:].sum(), 1.0)

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss
""",
    },
    "kl_regularised_optimum": {
        "entropy_bonus_ignored": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0 or tau < 0:
        raise ValueError("beta must be > 0 and tau >= 0")
    return jax.nn.log_softmax(ref_log_probs + rewards / beta, axis=-1)
""",
        "reference_not_tempered": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0 or tau < 0:
        raise ValueError("beta must be > 0 and tau >= 0")
    return jax.nn.log_softmax(ref_log_probs + rewards / (beta + tau), axis=-1)
""",
        "reference_raised_to_beta": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0 or tau < 0:
        raise ValueError("beta must be > 0 and tau >= 0")
    return jax.nn.log_softmax(beta * ref_log_probs + rewards / (beta + tau), axis=-1)
""",
        "entropy_sign": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0 or tau < 0:
        raise ValueError("beta must be > 0 and tau >= 0")
    return jax.nn.log_softmax((beta * ref_log_probs + rewards) / (beta - tau), axis=-1)
""",
        "not_normalised": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0 or tau < 0:
        raise ValueError("beta must be > 0 and tau >= 0")
    return (beta * ref_log_probs + rewards) / (beta + tau)
""",
        "exp_then_normalise": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0 or tau < 0:
        raise ValueError("beta must be > 0 and tau >= 0")
    weights = jnp.exp((beta * ref_log_probs + rewards) / (beta + tau))
    return jnp.log(weights / weights.sum(-1, keepdims=True))
""",
        "reference_forgotten": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0 or tau < 0:
        raise ValueError("beta must be > 0 and tau >= 0")
    return jax.nn.log_softmax(rewards / (beta + tau), axis=-1)
""",
        "negative_tau_accepted": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0:
        raise ValueError("beta must be > 0")
    return jax.nn.log_softmax((beta * ref_log_probs + rewards) / (beta + tau), axis=-1)
""",
    },
    "sequence_log_prob": {
        "mask_ignored": """
def sequence_log_prob(logits, tokens, mask):
    lp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(lp, tokens[..., None], axis=-1)[..., 0].sum(-1)
""",
        "mean_over_positions": """
def sequence_log_prob(logits, tokens, mask):
    lp = jax.nn.log_softmax(logits, axis=-1)
    return (mask * jnp.take_along_axis(lp, tokens[..., None], axis=-1)[..., 0]).mean(-1)
""",
        "log_of_softmax": """
def sequence_log_prob(logits, tokens, mask):
    lp = jnp.log(jax.nn.softmax(logits, axis=-1))
    return (mask * jnp.take_along_axis(lp, tokens[..., None], axis=-1)[..., 0]).sum(-1)
""",
        "shifted_targets": """
def sequence_log_prob(logits, tokens, mask):
    lp = jax.nn.log_softmax(logits, axis=-1)[:, :-1]
    picked = jnp.take_along_axis(lp, tokens[:, 1:, None], axis=-1)[..., 0]
    return (mask[:, 1:] * picked).sum(-1)
""",
    },
    "dpo_loss": {
        "sign_flipped": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    z = beta * ((policy_rejected - ref_rejected) - (policy_chosen - ref_chosen))
    return -jnp.mean(jnp.logaddexp(jnp.log1p(-flip) + jax.nn.log_sigmoid(z),
                                   jnp.log(flip) + jax.nn.log_sigmoid(-z)))
""",
        "reference_forgotten": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    z = beta * (policy_chosen - policy_rejected)
    return -jnp.mean(jnp.logaddexp(jnp.log1p(-flip) + jax.nn.log_sigmoid(z),
                                   jnp.log(flip) + jax.nn.log_sigmoid(-z)))
""",
        "flip_ignored": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    z = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -jnp.mean(jax.nn.log_sigmoid(z))
""",
        "label_smoothing_not_the_likelihood": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    z = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -jnp.mean((1 - flip) * jax.nn.log_sigmoid(z) + flip * jax.nn.log_sigmoid(-z))
""",
        "flip_on_the_wrong_side": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    z = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -jnp.mean(jnp.logaddexp(jnp.log(flip) + jax.nn.log_sigmoid(z),
                                   jnp.log1p(-flip) + jax.nn.log_sigmoid(-z)))
""",
        "log_of_the_mixture": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    z = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -jnp.mean(jnp.log((1 - flip) * jax.nn.sigmoid(z) + flip * jax.nn.sigmoid(-z)))
""",
        "sum_over_pairs": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    z = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -jnp.sum(jnp.logaddexp(jnp.log1p(-flip) + jax.nn.log_sigmoid(z),
                                  jnp.log(flip) + jax.nn.log_sigmoid(-z)))
""",
    },
    "sequence_kl": {
        "reverse_kl": """
def sequence_kl(policy_logits, ref_logits, mask):
    lp, lq = jax.nn.log_softmax(policy_logits, -1), jax.nn.log_softmax(ref_logits, -1)
    return (mask * jnp.sum(jnp.exp(lq) * (lq - lp), -1)).sum(-1)
""",
        "log_of_probability_ratio": """
def sequence_kl(policy_logits, ref_logits, mask):
    p, q = jax.nn.softmax(policy_logits, -1), jax.nn.softmax(ref_logits, -1)
    return (mask * jnp.sum(p * jnp.log(p / q), -1)).sum(-1)
""",
        "raw_logits_as_log_probs": """
def sequence_kl(policy_logits, ref_logits, mask):
    p = jax.nn.softmax(policy_logits, -1)
    return (mask * jnp.sum(p * (policy_logits - ref_logits), -1)).sum(-1)
""",
        "mask_ignored": """
def sequence_kl(policy_logits, ref_logits, mask):
    lp, lq = jax.nn.log_softmax(policy_logits, -1), jax.nn.log_softmax(ref_logits, -1)
    return jnp.sum(jnp.exp(lp) * (lp - lq), (-2, -1))
""",
    },
}

CORRECT = {
    "pair_counts": {
        "counter": """
from collections import Counter

def pair_counts(ids):
    return dict(Counter(zip(ids, ids[1:])))
""",
        "defaultdict": """
from collections import defaultdict

def pair_counts(ids):
    counts = defaultdict(int)
    for a, b in zip(ids[:-1], ids[1:]):
        counts[(a, b)] += 1
    return dict(counts)
""",
    },
    "merge_pair": {
        "look_back": """
def merge_pair(ids, pair, new_id):
    out = []
    for x in ids:
        if out and out[-1] == pair[0] and x == pair[1]:
            out[-1] = new_id
        else:
            out.append(x)
    return out
""",
        "index_loop": """
def merge_pair(ids, pair, new_id):
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
""",
    },
    "train_bpe": {
        "explicit_first_maximum": """
def train_bpe(text, vocab_size):
    if vocab_size < 256:
        raise ValueError("vocab_size must be >= 256")
    ids, merges = list(text.encode("utf-8")), {}
    for new_id in range(256, vocab_size):
        counts = pair_counts(ids)
        best, best_count = None, 0
        for pair, c in counts.items():
            if c > best_count:
                best, best_count = pair, c
        if best is None:
            break
        ids = merge_pair(ids, best, new_id)
        merges[best] = new_id
    return merges
""",
        "first_position_tie_break": """
def train_bpe(text, vocab_size):
    if vocab_size < 256:
        raise ValueError("vocab_size must be >= 256")
    ids, merges = list(text.encode("utf-8")), {}
    while len(merges) < vocab_size - 256 and len(ids) > 1:
        pairs = list(zip(ids, ids[1:]))
        counts = pair_counts(ids)
        top = max(counts.values())
        best = next(p for p in pairs if counts[p] == top)
        merges[best] = 256 + len(merges)
        ids = merge_pair(ids, best, merges[best])
    return merges
""",
    },
    "bpe_encode": {
        "replay_in_order": """
def bpe_encode(text, merges):
    ids = list(text.encode("utf-8"))
    for pair, new_id in sorted(merges.items(), key=lambda item: item[1]):
        ids = merge_pair(ids, pair, new_id)
    return ids
""",
        "lowest_rank_with_pair_counts": """
def bpe_encode(text, merges):
    ids = list(text.encode("utf-8"))
    while len(ids) > 1:
        ranked = [(merges[p], p) for p in pair_counts(ids) if p in merges]
        if not ranked:
            break
        new_id, pair = min(ranked)
        ids = merge_pair(ids, pair, new_id)
    return ids
""",
    },
    "bpe_decode": {
        "recursive_expansion": """
def bpe_decode(ids, merges):
    parts = {new_id: pair for pair, new_id in merges.items()}

    def expand(i):
        if i < 256:
            return bytes([i])
        a, b = parts[i]
        return expand(a) + expand(b)

    return b"".join(expand(i) for i in ids).decode("utf-8", errors="replace")
""",
        "bytearray": """
def bpe_decode(ids, merges):
    table = [bytes([i]) for i in range(256)] + [b""] * len(merges)
    for (a, b), i in sorted(merges.items(), key=lambda item: item[1]):
        table[i] = table[a] + table[b]
    out = bytearray()
    for i in ids:
        out += table[i]
    return out.decode("utf-8", "replace")
""",
    },
    "crossing_merges": {
        "one_regular_expression": r"""
import re as _re

def crossing_merges(merges):
    parts = {i: bytes([i]) for i in range(256)}
    for (a, b), i in sorted(merges.items(), key=lambda item: item[1]):
        parts[i] = parts[a] + parts[b]
    inside = _re.compile(r" ?[^\W\d_]*| ?\d*| ?(?:[^\s\w]|_)*|\s+")
    found = []
    for i in sorted(merges.values()):
        try:
            text = parts[i].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if any(text in c for c in ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")):
            continue
        if inside.fullmatch(text) is None:
            found.append(i)
    return found
""",
        "splitter_plus_contraction_pieces": """
def crossing_merges(merges):
    table = bpe.token_bytes(merges)
    contractions = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")

    def crosses(text):
        return len(bpe.pretokenize(text)) > 1 and not any(text in c for c in contractions)

    valid = {}
    for i in merges.values():
        try:
            valid[i] = table[i].decode("utf-8")
        except UnicodeDecodeError:
            pass
    return sorted(i for i, text in valid.items() if crosses(text))
""",
    },
    "bits_per_byte": {
        "log2_e": """
import math

def bits_per_byte(total_nll_nats, num_bytes):
    if not num_bytes > 0:
        raise ValueError(f"num_bytes must be > 0, got {num_bytes}")
    return float(total_nll_nats) * math.log2(math.e) / num_bytes
""",
        "numpy": """
def bits_per_byte(total_nll_nats, num_bytes):
    if num_bytes <= 0:
        raise ValueError("num_bytes must be positive")
    return float(np.asarray(total_nll_nats, np.float64) / (np.log(2.0) * num_bytes))
""",
    },
    "lora_delta": {
        "matmul_chain": """
def lora_delta(x, a, b, alpha, rank):
    return (x @ a) @ b * (alpha / rank)
""",
        "tensordot": """
def lora_delta(x, a, b, alpha, rank):
    h = jnp.tensordot(x, a, axes=1)
    return jnp.tensordot(h * (alpha / rank), b, axes=1)
""",
    },
    "merge_lora": {
        "einsum": """
def merge_lora(kernel, a, b, alpha, rank):
    return kernel + jnp.einsum("ir,ro->io", a, b) * alpha / rank
""",
        "scale_folded_into_b": """
def merge_lora(kernel, a, b, alpha, rank):
    return kernel + a @ (b * (alpha / rank))
""",
    },
    "lora_init_check": {
        "random_upstream_gradient": """
def lora_init_check(x, a, b, alpha, rank):
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    delta, pullback = jax.vjp(lambda a_, b_: lora_delta(x, a_, b_, alpha, rank), a, b)
    g_a, g_b = pullback(jax.random.normal(jax.random.key(0), delta.shape))
    if not (bool(jnp.any(g_a != 0)) or bool(jnp.any(g_b != 0))):
        return "cannot train"
    return "starts off base" if float(jnp.max(jnp.abs(delta))) > 1e-6 else "ok"
""",
        "full_jacobian": """
def lora_init_check(x, a, b, alpha, rank):
    def update(a_, b_):
        return lora_delta(x, a_, b_, alpha, rank)

    j_a, j_b = jax.jacobian(update, argnums=(0, 1))(jnp.asarray(a, jnp.float32),
                                                     jnp.asarray(b, jnp.float32))
    if not (np.any(np.asarray(j_a)) or np.any(np.asarray(j_b))):
        return "cannot train"
    if np.max(np.abs(np.asarray(update(a, b)))) > 1e-6:
        return "starts off base"
    return "ok"
""",
        "rank_conditions": """
def lora_init_check(x, a, b, alpha, rank):
    rows = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    b_can_move = np.any(rows @ a)           # b's gradient is (alpha/r) (X a)^T G
    a_can_move = np.any(rows) and np.any(b)  # a's gradient is (alpha/r) X^T G b^T
    if not (b_can_move or a_can_move):
        return "cannot train"
    offset = np.abs((alpha / rank) * (rows @ a) @ b).max()
    return "starts off base" if offset > 1e-6 else "ok"
""",
    },
    "lora_train_step": {
        "optax_clip_by_global_norm": """
def lora_train_step(model, optimizer, tokens, max_norm):
    def loss_fn(m):
        return gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    clipped, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
    optimizer.update(model, clipped)
    return loss
""",
        "split_state_and_where": """
def lora_train_step(model, optimizer, tokens, max_norm):
    x, y = tokens[:, :-1], tokens[:, 1:]
    graphdef, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)

    def loss_fn(trained):
        logits = nnx.merge(graphdef, trained, rest)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(adapters)
    squares = sum(jnp.vdot(g, g) for g in jax.tree.leaves(grads))
    norm = jnp.sqrt(squares)
    factor = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
    optimizer.update(model, jax.tree.map(lambda g: factor * g, grads))
    return loss
""",
    },
    "sft_train_step": {
        "optax_weights": """
def sft_train_step(model, optimizer, tokens, answer_mask):
    weights = jnp.asarray(answer_mask, jnp.float32)[:, 1:]

    def loss_fn(m):
        per_token = optax.softmax_cross_entropy_with_integer_labels(m(tokens[:, :-1]),
                                                                    tokens[:, 1:])
        return jnp.sum(per_token * weights) / jnp.maximum(jnp.sum(weights), 1.0)

    grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))
    loss, grads = grad_fn(model)
    optimizer.update(model, grads)
    return loss
""",
        "one_hot_where": """
def sft_train_step(model, optimizer, tokens, answer_mask):
    keep = jnp.asarray(answer_mask)[:, 1:] > 0

    def loss_fn(m):
        logits = m(tokens[:, :-1]).astype(jnp.float32)
        log_p = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
        nll = -jnp.sum(jax.nn.one_hot(tokens[:, 1:], logits.shape[-1]) * log_p, axis=-1)
        return jnp.where(keep, nll, 0.0).sum() / jnp.maximum(keep.sum(), 1)

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss
""",
    },
    "kl_regularised_optimum": {
        "logsumexp_by_hand": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    temperature = beta + tau
    z = (jnp.asarray(ref_log_probs, jnp.float32) * beta + jnp.asarray(rewards, jnp.float32))
    z = z / temperature
    z = z - jnp.max(z, axis=-1, keepdims=True)
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))
""",
        "tempered_reference_numpy": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if beta <= 0 or tau < 0:
        raise ValueError("need beta > 0 and tau >= 0")
    ref = np.asarray(ref_log_probs, np.float64)
    ref = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)  # log pi_ref, normalised
    weight = beta / (beta + tau)  # how much of the reference survives the entropy bonus
    tilted = weight * ref + np.asarray(rewards, np.float64) / (beta + tau)
    log_z = np.logaddexp.reduce(tilted, axis=-1, keepdims=True)
    return jnp.asarray(tilted - log_z, jnp.float32)
""",
        "log_softmax_scaled_logits": """
def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    if not (beta > 0 and tau >= 0):
        raise ValueError("beta must be > 0, tau >= 0")
    scale = 1.0 / (beta + tau)
    logits = jnp.asarray(ref_log_probs) * (beta * scale) + jnp.asarray(rewards) * scale
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
""",
    },
    "sequence_log_prob": {
        "optax_cross_entropy": """
def sequence_log_prob(logits, tokens, mask):
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens)
    return -(nll * mask).sum(axis=-1)
""",
        "one_hot": """
def sequence_log_prob(logits, tokens, mask):
    lp = jax.nn.log_softmax(logits)
    picked = jnp.sum(lp * jax.nn.one_hot(tokens, logits.shape[-1]), axis=-1)
    return jnp.sum(picked * jnp.asarray(mask, jnp.float32), axis=-1)
""",
    },
    "dpo_loss": {
        "log_add_by_hand": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    z = beta * (policy_chosen - policy_rejected - ref_chosen + ref_rejected)
    kept = jnp.log1p(-flip) - jax.nn.softplus(-z)  # log of (1 - flip) sigma(z)
    swapped = jnp.log(flip) - jax.nn.softplus(z)  # log of flip sigma(-z); -inf when flip is 0
    high, low = jnp.maximum(kept, swapped), jnp.minimum(kept, swapped)
    return -jnp.mean(high + jnp.log1p(jnp.exp(low - high)))
""",
        "where_flip_is_zero": """
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip):
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    z = beta * (chosen_ratio - rejected_ratio)
    if flip == 0:
        return jax.nn.softplus(-z).mean()
    terms = jnp.stack([np.log1p(-flip) - jax.nn.softplus(-z), np.log(flip) - jax.nn.softplus(z)])
    return -jax.scipy.special.logsumexp(terms, axis=0).mean()
""",
    },
    "sequence_kl": {
        "optax_kl": """
def sequence_kl(policy_logits, ref_logits, mask):
    lp, lq = jax.nn.log_softmax(policy_logits, -1), jax.nn.log_softmax(ref_logits, -1)
    per_step = optax.losses.kl_divergence_with_log_targets(lq, lp)
    return jnp.sum(per_step * mask, axis=-1)
""",
        "logsumexp": """
def sequence_kl(policy_logits, ref_logits, mask):
    lp = policy_logits - jax.scipy.special.logsumexp(policy_logits, axis=-1, keepdims=True)
    lq = ref_logits - jax.scipy.special.logsumexp(ref_logits, axis=-1, keepdims=True)
    return jnp.sum(jnp.where(mask, jnp.sum(jnp.exp(lp) * (lp - lq), -1), 0.0), -1)
""",
    },
}
