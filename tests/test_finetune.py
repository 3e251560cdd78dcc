"""genlab.finetune: LoRA vs flax.nnx.LoRA with copied weights, merging, the adapters-only step,
sequence log-probs vs optax, DPO vs TRL's sigmoid-loss formula, the KL vs scipy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
import scipy.special
from flax import nnx

from genlab import finetune, gpt

CONFIG = gpt.GPTConfig(vocab_size=11, block_size=8, num_layers=2, num_heads=2, d_model=16)


def test_lora_delta_and_lora_linear_match_flax_lora_with_copied_weights():
    key_x, key_a, key_b = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (3, 5, 6))
    base = nnx.Linear(6, 4, rngs=nnx.Rngs(1))
    flax_lora = nnx.LoRA(6, 2, 4, base_module=base, rngs=nnx.Rngs(2))
    flax_lora.lora_b[...] = jax.random.normal(key_b, (2, 4))
    a, b = flax_lora.lora_a[...], flax_lora.lora_b[...]
    # nnx.LoRA has no alpha: its scale is 1, i.e. alpha = rank
    np.testing.assert_allclose(base(x) + finetune.lora_delta(x, a, b, 2.0, 2), flax_lora(x),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    ours = finetune.LoRALinear(base, 2, 2.0, rngs=nnx.Rngs(3))
    ours.lora_a[...], ours.lora_b[...] = a, b
    np.testing.assert_allclose(ours(x), flax_lora(x), rtol=1e-5, atol=1e-5)
    # the merged kernel read by the GPT gives the same outputs as the unmerged call
    np.testing.assert_allclose(x @ ours.kernel + ours.bias, ours(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(finetune.lora_delta(x, a, b, 8.0, 2),
                               4.0 * (flax_lora(x) - base(x)), rtol=1e-4, atol=1e-5)  # fmt: skip


def test_merge_lora_equals_the_unmerged_layer():
    keys = jax.random.split(jax.random.key(4), 4)
    x, w0 = jax.random.normal(keys[0], (7, 6)), jax.random.normal(keys[1], (6, 5))
    a, b = jax.random.normal(keys[2], (6, 3)), jax.random.normal(keys[3], (3, 5))
    np.testing.assert_allclose(x @ finetune.merge_lora(w0, a, b, 16.0, 3),
                               x @ w0 + finetune.lora_delta(x, a, b, 16.0, 3),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    np.testing.assert_array_equal(finetune.merge_lora(w0, a, jnp.zeros((3, 5)), 16.0, 3), w0)
    with pytest.raises(ValueError, match="rank"):
        finetune.merge_lora(w0, a, b, 16.0, 0)


def _moves_after_one_step(x, a, b, alpha, rank, seed):
    """Whether one SGD step on a random squared-error loss of the layer's outputs changes a or
    b (an independent, behavioural reading of "can train")."""
    target = jax.random.normal(jax.random.key(seed), np.shape(x)[:-1] + (np.shape(b)[1],))

    def loss(params):
        a_, b_ = params
        return jnp.sum((alpha / rank * (x @ a_) @ b_ - target) ** 2)

    params = (jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    grads = jax.grad(loss)(params)
    updates, _ = optax.sgd(0.1).update(grads, optax.sgd(0.1).init(params))
    new = optax.apply_updates(params, updates)
    return any(bool(jnp.any(n != p)) for n, p in zip(new, params))


def test_lora_init_check_verdicts_match_a_training_step_and_the_update():
    keys = jax.random.split(jax.random.key(5), 3)
    x, a, b = (jax.random.normal(k, s) for k, s in zip(keys, [(4, 6), (6, 2), (2, 3)]))
    za, zb = jnp.zeros_like(a), jnp.zeros_like(b)
    half_x, other_a = x.at[:, 3:].set(0.0), a.at[:3].set(0.0)
    setups = {
        "standard": (x, a, zb, 4.0, "ok"),
        "both random": (x, a, b, 4.0, "starts off base"),
        "both zero": (x, za, zb, 4.0, "cannot train"),
        "a zero": (x, za, b, 4.0, "ok"),
        "rows of b sum to zero": (x, za, b - b.mean(1, keepdims=True), 4.0, "ok"),
        "tiny b": (x, a, b * 1e-9, 4.0, "ok"),
        "tiny b, huge alpha": (x, a, b * 1e-9, 1e5, "starts off base"),
        "zero inputs": (jnp.zeros_like(x), a, b, 4.0, "cannot train"),
        "a orthogonal to x, b zero": (half_x, other_a, zb, 4.0, "cannot train"),
        "a orthogonal to x, b random": (half_x, other_a, b, 4.0, "ok"),
    }
    for name, (x_, a_, b_, alpha, wanted) in setups.items():
        got = finetune.lora_init_check(x_, a_, b_, alpha, 2)
        assert got == wanted, (name, got)
        # independent readings: one SGD step, and the update computed in float64
        trains = any(_moves_after_one_step(x_, a_, b_, alpha, 2, seed) for seed in range(3))
        offset = np.abs(alpha / 2 * np.asarray(x_, np.float64) @ np.asarray(a_, np.float64)
                        @ np.asarray(b_, np.float64)).max()  # fmt: skip
        expected = "cannot train" if not trains else "starts off base" if offset > 1e-6 else "ok"
        assert got == expected, (name, got, expected)
    # the sum of the outputs alone would call the balanced-b layer untrainable
    balanced = b - b.mean(1, keepdims=True)
    grad_a = jax.grad(lambda a_: jnp.sum(finetune.lora_delta(x, a_, balanced, 4.0, 2)))(za)
    assert float(jnp.abs(grad_a).max()) < 1e-5
    with pytest.raises(ValueError, match="rank"):
        finetune.lora_init_check(x, a, b, 4.0, 0)


def test_add_lora_starts_at_the_base_model_and_merging_keeps_its_outputs():
    base = gpt.GPT(CONFIG, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 11)
    model = finetune.add_lora(nnx.clone(base), rank=4, alpha=8.0, rngs=nnx.Rngs(2))
    np.testing.assert_array_equal(model(tokens), base(tokens))
    d = CONFIG.d_model
    per_layer = 4 * 4 * (d + d) + 4 * (d + 4 * d) + 4 * (4 * d + d)
    assert finetune.count(model, nnx.LoRAParam) == CONFIG.num_layers * per_layer
    assert finetune.count(model, nnx.Param) == finetune.count(base) + CONFIG.num_layers * per_layer
    for layer in (model.blocks[0].attn.query, model.blocks[1].mlp.proj):
        layer.lora_b[...] = jax.random.normal(jax.random.key(3), layer.lora_b.shape)
    merged = finetune.merge_adapters(model)
    assert finetune.count(merged, nnx.LoRAParam) == 0
    assert not np.allclose(model(tokens), base(tokens))
    np.testing.assert_allclose(merged(tokens), model(tokens), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="already"):
        finetune.add_lora(model, rngs=nnx.Rngs(0))


def test_both_random_init_perturbs_the_model():
    base = gpt.GPT(CONFIG, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 11)
    model = finetune.add_lora(nnx.clone(base), rank=4, alpha=8.0, rngs=nnx.Rngs(2), zero_b=False)
    assert float(jnp.max(jnp.abs(model(tokens) - base(tokens)))) > 1e-3


def test_lora_train_step_changes_only_the_adapters_and_lowers_the_loss():
    model = finetune.add_lora(gpt.GPT(CONFIG, rngs=nnx.Rngs(0)), rank=4, alpha=8.0,
                              rngs=nnx.Rngs(1))  # fmt: skip
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.LoRAParam)
    frozen = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(nnx.LoRAParam)))
    tokens = jnp.tile(jnp.arange(9) % 3, (4, 1))
    step = nnx.jit(finetune.lora_train_step)
    losses = [float(step(model, optimizer, tokens, 1.0)) for _ in range(30)]
    assert losses[-1] < losses[0]
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(nnx.LoRAParam)))
    for u, v in zip(jax.tree.leaves(frozen), jax.tree.leaves(after)):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_allclose(losses[0], gpt.lm_loss(gpt.GPT(CONFIG, rngs=nnx.Rngs(0))(
        tokens[:, :-1]), tokens[:, 1:]), rtol=1e-5)  # fmt: skip
    assert finetune.optimizer_state_bytes(optimizer) >= 2 * 4 * finetune.count(model, nnx.LoRAParam)


def _sgd_lora_step(max_norm):
    """The adapters' change and their unclipped gradient in one SGD(1) step, and the norm of the
    frozen parameters' gradient (by jax.grad over the split state, independent of nnx's filters)."""
    model = finetune.add_lora(gpt.GPT(CONFIG, rngs=nnx.Rngs(0)), 2, 4.0, rngs=nnx.Rngs(1))
    for module, name in finetune._target_layers(model):
        getattr(module, name).lora_b[...] = 0.1 * jnp.ones_like(getattr(module, name).lora_b[...])
    tokens = jax.random.randint(jax.random.key(5), (4, 9), 0, 11)
    graphdef, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)

    def loss(adapters_, rest_):
        logits = nnx.merge(graphdef, adapters_, rest_)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    grad_adapters, grad_rest = jax.grad(loss, argnums=(0, 1))(adapters, rest)
    before = jax.tree.leaves(adapters)
    optimizer = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.LoRAParam)
    finetune.lora_train_step(model, optimizer, tokens, max_norm)
    change = [np.asarray(a) - np.asarray(b) for a, b in
              zip(jax.tree.leaves(nnx.state(model, nnx.LoRAParam)), before)]  # fmt: skip
    flat = lambda tree: np.concatenate([np.ravel(x) for x in tree])  # noqa: E731
    rest_norm = np.linalg.norm(flat([x for x in jax.tree.leaves(grad_rest) if x.dtype.kind == "f"]))
    return flat(change), flat(jax.tree.leaves(grad_adapters)), rest_norm


def test_lora_train_step_clips_the_adapters_gradient_to_its_own_global_norm():
    change, grad, rest_norm = _sgd_lora_step(1e6)
    norm = np.linalg.norm(grad)
    assert rest_norm > 2 * norm  # a full-model norm would clip far more
    np.testing.assert_allclose(change, -grad, rtol=1e-4, atol=1e-7)  # below max_norm: unclipped
    change, _, _ = _sgd_lora_step(0.25 * norm)
    np.testing.assert_allclose(np.linalg.norm(change), 0.25 * norm, rtol=1e-4)
    np.testing.assert_allclose(change, -0.25 * grad, rtol=1e-3, atol=1e-7)  # direction kept


def test_scored_loss_is_the_mean_nll_of_the_selected_tokens():
    model = gpt.GPT(CONFIG, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(8), (3, 9), 0, 11)
    mask = jnp.zeros((3, 9)).at[0, 4:].set(1.0).at[2, 7:].set(1.0).at[:, 0].set(1.0)
    nll = optax.softmax_cross_entropy_with_integer_labels(model(tokens[:, :-1]), tokens[:, 1:])
    picked = np.concatenate([np.asarray(nll)[0, 3:], np.asarray(nll)[2, 6:]])  # position 0 never
    np.testing.assert_allclose(finetune.scored_loss(model, tokens, mask), picked.mean(), rtol=1e-5)
    assert float(finetune.scored_loss(model, tokens, jnp.zeros((3, 9)))) == 0.0


def test_sequence_log_prob_matches_optax_cross_entropy():
    keys = jax.random.split(jax.random.key(6), 3)
    logits = 3.0 * jax.random.normal(keys[0], (3, 7, 9))
    tokens = jax.random.randint(keys[1], (3, 7), 0, 9)
    mask = jax.random.bernoulli(keys[2], 0.6, (3, 7)).astype(jnp.float32)
    expected = -jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, tokens) * mask, -1)
    np.testing.assert_allclose(finetune.sequence_log_prob(logits, tokens, mask), expected,
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert np.isfinite(finetune.sequence_log_prob(jnp.array([[[1e4, -1e4]]]), jnp.array([[1]]),
                                                  jnp.ones((1, 1)))).all()  # fmt: skip


def _trl_sigmoid_loss(pc, pr, rc, rr, beta, label_smoothing=0.0):
    """TRL's DPOTrainer 'sigmoid' loss, written out in float64 NumPy (no torch needed)."""
    logits = (pc - pr) - (rc - rr)
    log_sigmoid = lambda z: -np.logaddexp(0.0, -z)  # noqa: E731
    losses = (-log_sigmoid(beta * logits) * (1 - label_smoothing)
              - log_sigmoid(-beta * logits) * label_smoothing)  # fmt: skip
    return losses.mean()


def test_dpo_loss_matches_trl_formula_and_is_stable():
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(-40.0, 15.0, size=12) for _ in range(4))
    for beta in (0.01, 0.1, 1.0):
        np.testing.assert_allclose(finetune.dpo_loss(*(jnp.asarray(v, jnp.float32)
                                                       for v in (pc, pr, rc, rr)), beta),
                                   _trl_sigmoid_loss(pc, pr, rc, rr, beta), rtol=1e-4)  # fmt: skip
    zeros = jnp.zeros(3)
    np.testing.assert_allclose(
        finetune.dpo_loss(zeros, zeros, zeros, zeros, 0.5), np.log(2.0), rtol=1e-6
    )
    huge = finetune.dpo_loss(
        jnp.array([-3000.0]), jnp.array([0.0]), jnp.array([0.0]), jnp.array([0.0]), 1.0
    )
    np.testing.assert_allclose(huge, 3000.0, rtol=1e-6)


def test_dpo_loss_with_flipped_labels_is_the_noisy_bradley_terry_likelihood():
    rng = np.random.default_rng(1)
    pc, pr, rc, rr = (rng.normal(-40.0, 15.0, size=12) for _ in range(4))
    z = 0.3 * ((pc - rc) - (pr - rr))
    for flip in (0.0, 1e-3, 0.1, 0.4):
        recorded = (1 - flip) * scipy.special.expit(z) + flip * scipy.special.expit(-z)
        got = finetune.dpo_loss(*(jnp.asarray(v, jnp.float32) for v in (pc, pr, rc, rr)), 0.3, flip)
        np.testing.assert_allclose(got, -np.mean(np.log(recorded)), rtol=1e-4)
    # a margin of -1e4 nats: the loss tends to -log(flip) (or to 1e4 at flip 0), gradient finite
    far = (jnp.array([-1e4]), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), 1.0)
    np.testing.assert_allclose(finetune.dpo_loss(*far, 0.2), -np.log(0.2), rtol=1e-6)
    np.testing.assert_allclose(finetune.dpo_loss(*far, 0.0), 1e4, rtol=1e-6)
    for flip in (0.0, 0.2):
        grad = jax.grad(lambda c, f=flip: finetune.dpo_loss(c, *far[1:], f))(far[0])
        assert np.all(np.isfinite(np.asarray(grad)))
    with pytest.raises(ValueError, match="flip"):
        finetune.dpo_loss(*far, 0.5)


def test_sequence_kl_matches_scipy_rel_entr():
    keys = jax.random.split(jax.random.key(7), 3)
    p_logits, q_logits = (2.0 * jax.random.normal(k, (2, 5, 6)) for k in keys[:2])
    mask = jax.random.bernoulli(keys[2], 0.5, (2, 5)).astype(jnp.float32)
    p = scipy.special.softmax(np.asarray(p_logits, np.float64), axis=-1)
    q = scipy.special.softmax(np.asarray(q_logits, np.float64), axis=-1)
    expected = (scipy.special.rel_entr(p, q).sum(-1) * np.asarray(mask)).sum(-1)
    np.testing.assert_allclose(finetune.sequence_kl(p_logits, q_logits, mask), expected, rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    assert np.isfinite(finetune.sequence_kl(jnp.zeros((1, 1, 2)), jnp.array([[[0.0, -200.0]]]),
                                            jnp.ones((1, 1)))).all()  # fmt: skip


def test_completion_log_probs_and_dpo_step_move_only_the_adapters():
    base = gpt.GPT(CONFIG, rngs=nnx.Rngs(0))
    model = finetune.add_lora(nnx.clone(base), rank=2, alpha=4.0, rngs=nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, optax.adam(5e-2), wrt=nnx.LoRAParam)
    chosen = jnp.tile(jnp.arange(9) % 3, (4, 1))
    rejected = jnp.tile(jnp.arange(9) % 5, (4, 1))
    mask = jnp.ones((4, 9)).at[:, :2].set(0.0)
    ref_c = finetune.completion_log_probs(base, chosen, mask)
    ref_r = finetune.completion_log_probs(base, rejected, mask)
    losses = [float(finetune.dpo_train_step(model, optimizer, chosen, rejected, mask, mask, ref_c,
                                            ref_r, 0.5)) for _ in range(15)]  # fmt: skip
    np.testing.assert_allclose(losses[0], np.log(2.0), rtol=1e-5)
    assert losses[-1] < losses[0]


def test_python_source_corpus_and_unknown_characters():
    text = finetune.python_source_corpus(("colorsys",))
    assert "def rgb_to_hsv" in text
    ids, replaced = finetune.encode_known("ab中c", ["a", "b", "c", "?"])
    assert ids.tolist() == [0, 1, 3, 2] and replaced == 1
    with pytest.raises(ValueError, match="unknown"):
        finetune.encode_known("x", ["a"], unknown="?")


def test_word_breaks_counts_words_followed_by_a_space():
    assert finetune.word_breaks("") == 0
    assert finetune.word_breaks("a b c") == 2
    assert finetune.word_breaks("word    next ") == 2  # a run of spaces counts once
    assert finetune.word_breaks("  leading") == 0


def test_best_and_worst_pairs_and_preference_rate():
    samples = np.arange(12).reshape(6, 2)  # 3 prompts x 2 samples, rows grouped by prompt
    scores = np.array([1.0, 3.0, 2.0, 2.0, 5.0, 0.0])
    chosen, rejected = finetune.best_and_worst(samples, scores, per_prompt=2)
    np.testing.assert_array_equal(chosen, [[2, 3], [8, 9]])  # the tied prompt is dropped
    np.testing.assert_array_equal(rejected, [[0, 1], [10, 11]])
    assert finetune.preference_rate([1, 2, 3], [1, 2, 3]) == 0.5
    assert finetune.preference_rate([2, 2, 0, 5], [1, 2, 3, 4]) == pytest.approx((2 + 0.5) / 4)


def test_sample_completions_keeps_each_prompt_and_groups_its_rows():
    model = gpt.GPT(CONFIG, rngs=nnx.Rngs(0))
    prompts = jnp.array([[1, 2], [3, 4]])
    out = finetune.sample_completions(model, jax.random.key(0), prompts, 3, per_prompt=2)
    assert out.shape == (4, 5)
    np.testing.assert_array_equal(out[:, :2], [[1, 2], [1, 2], [3, 4], [3, 4]])


def test_race_stream_bpe_tokens_decode_to_the_character_stream():
    from genlab import bpe, char_gpt

    merges = bpe.train_bpe(char_gpt.corpus().text[:3000], 256 + 30)
    chars, tokens = finetune.race_stream(None), finetune.race_stream(merges)
    text = char_gpt.corpus().text[: finetune.RACE["train_chars"]]
    assert char_gpt.corpus().tokenizer.decode(chars) == text
    assert len(tokens) < len(text.encode("utf-8"))
    assert bpe.bpe_decode(tokens.tolist(), merges) == text


def _regularised_objective(pi, ref_log_probs, rewards, beta, tau=0.0):
    ref = scipy.special.log_softmax(ref_log_probs)
    kl = np.sum(scipy.special.rel_entr(pi, np.exp(ref)))
    entropy = -np.sum(scipy.special.xlogy(pi, pi))
    return float(np.sum(pi * rewards) - beta * kl + tau * entropy)


def test_kl_regularised_optimum_maximises_the_objective_found_by_scipy():
    rng = np.random.default_rng(0)
    for k, beta, tau in ((3, 0.5, 0.0), (6, 2.0, 0.0), (5, 0.1, 0.0), (4, 0.5, 1.5),
                         (6, 2.0, 0.3), (5, 0.1, 4.0)):  # fmt: skip
        ref, rewards = rng.normal(size=k), rng.normal(size=k)
        got = np.exp(np.asarray(finetune.kl_regularised_optimum(ref, rewards, beta, tau),
                                np.float64))  # fmt: skip
        np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-5)

        def negative(z, ref=ref, rewards=rewards, beta=beta, tau=tau):
            return -_regularised_objective(scipy.special.softmax(z), ref, rewards, beta, tau)

        found = scipy.optimize.minimize(
            negative, np.zeros(k), method="BFGS", options={"gtol": 1e-10}
        )
        np.testing.assert_allclose(got, scipy.special.softmax(found.x), atol=1e-4)
        best = _regularised_objective(got, ref, rewards, beta, tau)
        for pi in rng.dirichlet(np.ones(k), size=200):
            assert _regularised_objective(pi, ref, rewards, beta, tau) <= best + 1e-6


def test_kl_regularised_optimum_entropy_bonus_flattens_toward_uniform():
    ref = jnp.log(jnp.array([0.7, 0.2, 0.1]))
    rewards = jnp.array([0.0, 1.0, 2.0])
    entropies = []
    for tau in (0.0, 0.5, 2.0, 1e6):
        pi = np.exp(np.asarray(finetune.kl_regularised_optimum(ref, rewards, 1.0, tau), np.float64))
        entropies.append(-np.sum(pi * np.log(pi)))
    assert entropies == sorted(entropies)  # a larger bonus, a flatter optimum
    np.testing.assert_allclose(entropies[-1], np.log(3.0), atol=1e-5)  # tau -> inf: uniform
    # equal rewards: at tau = 0 the reference itself, at tau > 0 pulled toward uniform
    flat = finetune.kl_regularised_optimum(ref, jnp.ones(3), 1.0, 1.0)
    assert float(flat[0]) < float(ref[0]) and float(flat[2]) > float(ref[2])
    with pytest.raises(ValueError, match="tau"):
        finetune.kl_regularised_optimum(ref, rewards, 1.0, -0.1)


def test_kl_regularised_optimum_limits_batches_and_stability():
    ref = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    rewards = jnp.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    # equal rewards, or a huge beta, leave the reference; a tiny beta puts all mass on the best
    same = finetune.kl_regularised_optimum(ref, jnp.ones((2, 3)), 0.3, 0.0)
    np.testing.assert_allclose(same, ref, atol=1e-6)
    np.testing.assert_allclose(
        finetune.kl_regularised_optimum(ref, rewards, 1e6, 0.0), ref, atol=1e-5
    )
    sharp = np.exp(finetune.kl_regularised_optimum(ref, rewards, 1e-3, 0.0))
    np.testing.assert_allclose(sharp, [[0, 0, 1], [1, 0, 0]], atol=1e-6)
    # the implied reward beta log(pi* / pi_ref) equals the reward up to a constant per row
    beta = 0.7
    implied = beta * (finetune.kl_regularised_optimum(ref, rewards, beta, 0.0) - ref)
    np.testing.assert_allclose(np.diff(implied, axis=-1), np.diff(rewards, axis=-1), atol=1e-5)
    # shifting the reference's logits by a constant per row changes nothing
    shifted = finetune.kl_regularised_optimum(ref + 5.0, rewards, beta, 0.3)
    np.testing.assert_allclose(
        shifted, finetune.kl_regularised_optimum(ref, rewards, beta, 0.3), atol=1e-6
    )
    huge = finetune.kl_regularised_optimum(
        jnp.array([0.0, -200.0, 0.0]), jnp.array([3000.0, 0.0, -3000.0]), 0.01, 2.0
    )
    assert np.all(np.isfinite(huge)) and float(huge[0]) == 0.0
    with pytest.raises(ValueError, match="beta"):
        finetune.kl_regularised_optimum(ref, rewards, 0.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        finetune.kl_regularised_optimum(ref, rewards[:, :2], 1.0, 0.0)


# --- supervised fine-tuning with the prompt masked out ---------------------------------------


def test_masked_lm_loss_matches_optax_on_the_selected_tokens():
    keys = jax.random.split(jax.random.key(30), 3)
    logits = 3.0 * jax.random.normal(keys[0], (3, 6, 11))
    targets = jax.random.randint(keys[1], (3, 6), 0, 11)
    mask = jnp.array([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1]], jnp.float32)
    per_token = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, targets))
    want = per_token[np.asarray(mask) > 0].mean()  # every answer token weighs the same
    np.testing.assert_allclose(finetune.masked_lm_loss(logits, targets, mask), want, rtol=1e-5)
    np.testing.assert_allclose(finetune.masked_lm_loss(logits, targets, mask > 0), want, rtol=1e-5)
    # an all-ones mask is chapter 04's loss; an all-zero mask gives 0
    np.testing.assert_allclose(finetune.masked_lm_loss(logits, targets, jnp.ones((3, 6))),
                               gpt.lm_loss(logits, targets), rtol=1e-5)  # fmt: skip
    assert float(finetune.masked_lm_loss(logits, targets, jnp.zeros((3, 6)))) == 0.0
    with pytest.raises(ValueError, match="mask"):
        finetune.masked_lm_loss(logits, targets, jnp.ones((3, 5)))


def test_sft_train_step_ignores_the_prompt_and_moves_only_the_adapters():
    def fresh():
        model = finetune.add_lora(gpt.GPT(CONFIG, rngs=nnx.Rngs(0)), 2, 4.0, rngs=nnx.Rngs(1))
        for module, name in finetune._target_layers(model):
            getattr(module, name).lora_b[...] = 0.1 * jnp.ones_like(
                getattr(module, name).lora_b[...]
            )
        return model, nnx.Optimizer(model, optax.sgd(0.3), wrt=nnx.LoRAParam)

    tokens = jax.random.randint(jax.random.key(31), (4, 9), 0, 11)
    answer = jnp.zeros((4, 9)).at[:, 5:].set(1.0)  # tokens 5..8 are the answer
    model, optimizer = fresh()
    frozen = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(nnx.LoRAParam)))
    loss = finetune.sft_train_step(model, optimizer, tokens, answer)
    # the loss: the answer tokens' NLL, by optax, from the logits of the untouched model
    model0, _ = fresh()
    nll = optax.softmax_cross_entropy_with_integer_labels(model0(tokens[:, :-1]), tokens[:, 1:])
    np.testing.assert_allclose(loss, np.asarray(nll)[:, 4:].mean(), rtol=1e-5)
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(frozen), jax.tree.leaves(
        jax.tree.map(np.asarray, nnx.state(model, nnx.Not(nnx.LoRAParam))))))  # fmt: skip
    # a bool mask gives the same step
    adapters = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))]
    model2, optimizer2 = fresh()
    finetune.sft_train_step(model2, optimizer2, tokens, answer.at[:, :5].set(0.0) > 0)
    for u, v in zip(adapters, jax.tree.leaves(nnx.state(model2, nnx.LoRAParam))):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    # with the whole window as the answer it is the plain LoRA step
    model3, optimizer3 = fresh()
    model4, optimizer4 = fresh()
    whole = jnp.ones((4, 9))
    plain = finetune.lora_train_step(model4, optimizer4, tokens, 1e30)
    np.testing.assert_allclose(finetune.sft_train_step(model3, optimizer3, tokens, whole), plain,
                               rtol=1e-5)  # fmt: skip


def test_bradley_terry_loss_is_the_logistic_loss_of_the_reward_margin():
    rc = jnp.array([0.0, 2.0, -1.0, 5000.0, -5000.0])
    rr = jnp.array([0.0, -1.0, 3.0, 0.0, 0.0])
    want = np.mean(optax.sigmoid_binary_cross_entropy(np.asarray(rc - rr), np.ones(5)))
    np.testing.assert_allclose(finetune.bradley_terry_loss(rc, rr), want, rtol=1e-6)
    np.testing.assert_allclose(finetune.bradley_terry_loss(rc[:3], rr[:3]),
                               -np.mean(scipy.special.log_expit(np.asarray(rc - rr)[:3])),
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(finetune.bradley_terry_loss(jnp.zeros(3), jnp.zeros(3)), np.log(2))


def _counting_pairs(key, n: int):
    """Pairs of 8-token windows (prompt 3 tokens) whose answers differ in how often token 3
    occurs: the chosen answer has more 3s (a reward that is a count, like word breaks)."""
    a, b = jax.random.split(key)
    x = jax.random.randint(a, (2, n, 8), 0, 11)
    threes = jax.random.bernoulli(b, 0.4, (2, n, 8))
    x = jnp.where(threes, 3, x)
    counts = jnp.sum(x[:, :, 3:] == 3, axis=-1)  # (2, n)
    keep = counts[0] != counts[1]
    first_wins = (counts[0] > counts[1])[:, None]
    chosen = jnp.where(first_wins, x[0], x[1])[keep]
    rejected = jnp.where(first_wins, x[1], x[0])[keep]
    return chosen, rejected


def test_reward_model_learns_a_counting_preference_and_trains_only_adapters_and_head():
    base = gpt.GPT(CONFIG, rngs=nnx.Rngs(0))
    model = finetune.RewardModel(base, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    mask = jnp.zeros((1, 8)).at[:, 3:].set(1.0)
    chosen, rejected = _counting_pairs(jax.random.key(2), 256)
    held_c, held_r = _counting_pairs(jax.random.key(3), 256)
    np.testing.assert_array_equal(model(chosen, mask), np.zeros(len(chosen)))  # zero head
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=finetune.RewardModel.TRAINABLE)
    frozen = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(finetune.RewardModel.TRAINABLE)))
    step = nnx.jit(finetune.reward_train_step)
    losses = [float(step(model, optimizer, chosen, rejected, mask, mask)) for _ in range(60)]
    np.testing.assert_allclose(losses[0], np.log(2.0), rtol=1e-6)
    assert losses[-1] < 0.5 * losses[0], losses[-1]
    accuracy = float(jnp.mean(model(held_c, mask) > model(held_r, mask)))
    assert accuracy > 0.9, accuracy
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(finetune.RewardModel.TRAINABLE)))
    for u, v in zip(jax.tree.leaves(frozen), jax.tree.leaves(after)):
        np.testing.assert_array_equal(u, v)


def test_completion_kl_sums_the_per_position_kl_of_the_counted_tokens():
    config = gpt.GPTConfig(vocab_size=7, block_size=8, num_layers=1, num_heads=2, d_model=16)
    policy, ref = gpt.GPT(config, rngs=nnx.Rngs(0)), gpt.GPT(config, rngs=nnx.Rngs(1))
    tokens = jax.random.randint(jax.random.key(2), (3, 9), 0, 7)
    mask = jnp.zeros((3, 9)).at[:, 5:].set(1.0)  # tokens 5..8 count: predicted at positions 4..7
    got = np.asarray(finetune.completion_kl(policy, ref, tokens, mask))
    log_p = jax.nn.log_softmax(policy(tokens[:, :-1]), -1)
    log_q = jax.nn.log_softmax(ref(tokens[:, :-1]), -1)
    per_position = np.asarray(jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1))  # (3, 8)
    np.testing.assert_allclose(got, per_position[:, 4:].sum(-1), rtol=1e-5)
    assert np.all(got > 0)
    same = finetune.completion_kl(policy, policy, tokens, mask)
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
