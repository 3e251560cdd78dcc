"""Fine-tuning a pretrained GPT: LoRA adapters, merging, sequence log-probabilities and DPO
(chapter 07).

LoRA (Hu et al. 2021) keeps a pretrained kernel W0 [D_in, D_out] frozen and learns a low-rank
update: ``h = x W0 + (alpha / r) x A B`` with A [D_in, r] random and B [r, D_out] zero at
initialisation, so training starts exactly at the base model. Only A and B (``nnx.LoRAParam``)
train; after training ``W0 + (alpha / r) A B`` is an ordinary kernel again (:func:`merge_lora`).

DPO (Rafailov et al. 2023) tunes a policy toward preferred answers with a frozen reference and
no reward model: :func:`dpo_loss` of the sequences' log-probabilities (:func:`sequence_log_prob`).
The classic alternative first fits a reward model to the same pairs by Bradley-Terry maximum
likelihood (:class:`RewardModel`, :func:`bradley_terry_loss`).
Its starting point is the KL-regularised reward objective, whose maximiser
:func:`kl_regularised_optimum` (without its entropy bonus, tau = 0) is the reference tilted by
exp(r / beta).

The functions of chapter 07's exercises have their references here, under the same names.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import bpe, char_gpt, data, gpt, initializers, model_cache, train, validate

LORA_TARGETS = {"attn": ("query", "key", "value", "out"), "mlp": ("fc", "proj")}
SOURCE_MODULES = ("textwrap", "colorsys", "fnmatch", "heapq", "bisect")
# chapter 04's GPT trained from scratch on characters and on BPE tokens (section 2)
RACE = {"block_size": 64, "num_layers": 2, "num_heads": 4, "d_model": 128, "batch": 32,
        "peak_lr": 3e-3, "warmup": 20, "weight_decay": 0.01, "train_chars": 200_000,
        "init_seed": 0, "data_seed": 3}  # fmt: skip


# --- LoRA -----------------------------------------------------------------------------------


def _check_rank(rank) -> int:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    return rank


def lora_delta(x, a, b, alpha, rank):
    """The LoRA update of a linear layer's output: (alpha / rank) x A B.

    Args:
        x: float [..., D_in]. a: float [D_in, r]. b: float [r, D_out].
        alpha: float scale; rank: int r >= 1 (the scale is alpha / rank).

    Returns:
        float32 [..., D_out].
    """
    _check_rank(rank)
    x, a, b = (validate.float_array(n, v) for n, v in (("x", x), ("a", a), ("b", b)))
    return (alpha / rank) * ((x @ a) @ b)


def merge_lora(kernel, a, b, alpha, rank):
    """The merged kernel W0 + (alpha / rank) A B: float32 [D_in, D_out] for kernel [D_in,
    D_out], a [D_in, r], b [r, D_out]; a plain linear layer with it gives the adapted outputs."""
    _check_rank(rank)
    kernel, a, b = (validate.float_array(n, v) for n, v in (("kernel", kernel), ("a", a), ("b", b)))
    return kernel + (alpha / rank) * (a @ b)


LORA_INIT_VERDICTS = ("ok", "starts off base", "cannot train")
START_TOLERANCE = 1e-6


def lora_init_check(x, a, b, alpha, rank):
    """Diagnose a LoRA initialisation on inputs x: one of :data:`LORA_INIT_VERDICTS`.

    Args:
        x: float [..., D_in]. a: float [D_in, r]. b: float [r, D_out]. alpha: float. rank: int
            r >= 1 (the update is :func:`lora_delta`, scale alpha / rank).

    Returns:
        str: ``"cannot train"`` when no loss of the layer's outputs on x gives a or b a
        nonzero gradient (the first step of any gradient method leaves both where they are);
        otherwise ``"starts off base"`` when some entry of the update on x exceeds 1e-6 in
        absolute value; otherwise ``"ok"``.

    With the update's upstream gradient G [N, D_out] (rows of x flattened to X [N, D_in]), the
    gradients are (alpha / r) X^T G b^T for a and (alpha / r) (X a)^T G for b: some G makes the
    first nonzero iff X != 0 and b != 0, the second iff X a != 0. So the layer can train iff
    X a != 0 or (X != 0 and b != 0); a sum of the outputs (G all ones) is not enough to tell.
    """
    _check_rank(rank)
    x, a, b = (validate.float_array(n, v) for n, v in (("x", x), ("a", a), ("b", b)))
    rows = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
    projected = rows @ np.asarray(a, np.float32)  # (N, r)
    trains = bool(np.any(projected != 0)) or bool(np.any(rows != 0) and np.any(np.asarray(b) != 0))
    if not trains:
        return "cannot train"
    delta = np.asarray(lora_delta(x, a, b, alpha, rank))
    return (
        "starts off base" if float(np.max(np.abs(delta), initial=0.0)) > START_TOLERANCE else "ok"
    )


class LoRALinear(nnx.Module):
    """A frozen ``nnx.Linear`` plus a trainable low-rank update (``nnx.LoRAParam`` a, b).

    ``layer(x)`` for x [..., D_in] gives ``base(x) + lora_delta(x, a, b, alpha, rank)``.
    ``kernel`` and ``bias`` read like an ``nnx.Linear``'s (the kernel merged with the update),
    so :class:`genlab.gpt.GPT`, which reads its layers' kernels, runs with adapters unchanged.
    a starts as N(0, 1 / D_in) and b at zero (``zero_b=False`` draws b like a: the "both
    random" pitfall).
    """

    def __init__(self, base: nnx.Linear, rank: int, alpha: float, *, rngs: nnx.Rngs,
                 zero_b: bool = True):  # fmt: skip
        d_in, d_out = base.kernel.shape
        self.base, self.rank, self.alpha = base, _check_rank(rank), float(alpha)
        init = initializers.normal(1.0 / math.sqrt(d_in))
        self.lora_a = nnx.LoRAParam(init(rngs.params(), (d_in, rank), jnp.float32))
        b = jnp.zeros((rank, d_out)) if zero_b else init(rngs.params(), (rank, d_out))
        self.lora_b = nnx.LoRAParam(jnp.asarray(b, jnp.float32))

    @property
    def kernel(self):
        return merge_lora(self.base.kernel[...], self.lora_a[...], self.lora_b[...], self.alpha,
                          self.rank)  # fmt: skip

    @property
    def bias(self):
        return self.base.bias[...]

    def __call__(self, x):
        return self.base(x) + lora_delta(x, self.lora_a[...], self.lora_b[...], self.alpha,
                                         self.rank)  # fmt: skip


def _target_layers(model: gpt.GPT):
    for block in model.blocks:
        for part, names in LORA_TARGETS.items():
            module = getattr(block, part)
            for name in names:
                yield module, name


def add_lora(model: gpt.GPT, rank: int = 8, alpha: float = 16.0, *, rngs: nnx.Rngs,
             zero_b: bool = True) -> gpt.GPT:  # fmt: skip
    """Wrap every linear layer of ``model``'s blocks (q, k, v, out, fc, proj) in a
    :class:`LoRALinear`, in place, and return ``model``. Embeddings and LayerNorms stay plain
    ``nnx.Param`` (frozen when the optimizer is built with ``wrt=nnx.LoRAParam``)."""
    for module, name in _target_layers(model):
        layer = getattr(module, name)
        if isinstance(layer, LoRALinear):
            raise ValueError("model already has LoRA adapters")
        setattr(module, name, LoRALinear(layer, rank, alpha, rngs=rngs, zero_b=zero_b))
    return model


def merge_adapters(model: gpt.GPT) -> gpt.GPT:
    """A copy of ``model`` with every :class:`LoRALinear` replaced by a plain ``nnx.Linear``
    holding the merged kernel: same outputs, no adapters."""
    merged = nnx.clone(model)
    for module, name in _target_layers(merged):
        layer = getattr(module, name)
        if isinstance(layer, LoRALinear):
            plain = nnx.clone(layer.base)
            plain.kernel[...] = layer.kernel
            setattr(module, name, plain)
    return merged


def count(model: nnx.Module, kind=nnx.Param) -> int:
    """Number of scalars in ``model``'s variables of type ``kind`` (``nnx.LoRAParam`` counts
    only the adapters; ``nnx.Param`` counts everything, adapters included)."""
    return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(model, kind))))


def optimizer_state_bytes(optimizer: nnx.Optimizer) -> int:
    """Bytes held by ``optimizer``'s state (Adam: two moments per trainable scalar)."""
    leaves = jax.tree.leaves(nnx.state(optimizer.opt_state))
    return int(sum(np.asarray(x).nbytes for x in leaves))


def lora_train_step(model, optimizer, tokens, max_norm):
    """One step of LoRA fine-tuning on windows of tokens, the adapters' gradient clipped.

    The loss is the next-token loss (:func:`genlab.gpt.lm_loss` of ``model(tokens[:, :-1])``
    against ``tokens[:, 1:]``), differentiated with respect to the ``nnx.LoRAParam`` variables
    only. When that gradient's global norm (over the adapters alone, all of them as one vector)
    exceeds ``max_norm`` it is rescaled, direction kept, to norm ``max_norm``; then
    ``optimizer.update`` applies it.

    Args:
        model: an nnx module with LoRA adapters, int [B, T] to logits [B, T, V].
        optimizer: an ``nnx.Optimizer`` of ``model`` built with ``wrt=nnx.LoRAParam``.
        tokens: int [B, T + 1], windows of the new corpus.
        max_norm: float > 0 (may be traced), the largest global norm of the applied gradient.

    Returns:
        float32 scalar: the loss before the update.
    """
    tokens = jnp.asarray(tokens)

    def loss_fn(m):
        return gpt.lm_loss(m(tokens[:, :-1]), tokens[:, 1:])

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
    optimizer.update(model, jax.tree.map(lambda g: g * scale, grads))
    return loss


def scored_loss(model, tokens, mask):
    """The mean negative log-likelihood (nats) of the tokens that ``mask`` selects, each given
    the tokens before it: tokens int [B, T + 1]; mask [B, T + 1], float or bool, aligned with
    the tokens (position 0 is never predicted, so it never counts). Returns float32, 0 when the
    mask selects nothing."""
    tokens = jnp.asarray(tokens)
    return masked_lm_loss(model(tokens[:, :-1]), tokens[:, 1:], jnp.asarray(mask)[:, 1:])


def masked_lm_loss(logits, targets, mask):
    """The mean next-token negative log-likelihood over the targets that ``mask`` selects.

    Args:
        logits: float [B, T, V], position t predicts targets[:, t].
        targets: int [B, T].
        mask: [B, T], float or bool, 1 where a target counts (an answer token), 0 elsewhere.

    Returns:
        float32 scalar: the sum of -log p(target) over the selected targets of the whole batch,
        divided by their number (every answer token weighs the same, whatever its row's length);
        0 when the mask selects nothing.
    """
    logits = validate.float_array("logits", logits, min_ndim=3)
    mask = jnp.asarray(mask, jnp.float32)
    if mask.shape != logits.shape[:-1]:
        raise ValueError(f"mask {mask.shape} must have the shape of targets {logits.shape[:-1]}")
    nll = -gpt._target_log_probs(logits, targets)  # (B, T)
    return jnp.sum(mask * nll) / jnp.maximum(jnp.sum(mask), 1.0)


def sft_train_step(model, optimizer, tokens, answer_mask):
    """One step of supervised fine-tuning with the prompt masked out of the loss.

    Args:
        model: an nnx module with LoRA adapters (``nnx.LoRAParam``), int [B, T] to logits
            [B, T, V].
        optimizer: an ``nnx.Optimizer`` of ``model`` built with ``wrt=nnx.LoRAParam``.
        tokens: int [B, T + 1], each row a prompt followed by its answer (and any padding).
        answer_mask: [B, T + 1], float or bool, aligned with ``tokens``: 1 where the token at
            that position belongs to the answer, 0 for prompt and padding.

    Returns:
        float32 scalar, before the update: the mean over all answer tokens of the batch of
        -log p(token | the tokens before it) (:func:`scored_loss` with ``answer_mask``). Only
        the adapters change.
    """
    mask = jnp.asarray(answer_mask, jnp.float32)
    return _filtered_step(lambda m: scored_loss(m, tokens, mask), model, optimizer, nnx.LoRAParam)


# --- sequence log-probabilities and DPO -----------------------------------------------------


def kl_regularised_optimum(ref_log_probs, rewards, beta, tau):
    """The policy that maximises expected reward minus a KL price plus an entropy bonus.

    Over K candidate answers per row, pi maximises E_pi[r] - beta KL(pi || pi_ref) + tau H(pi)
    with H(pi) = -sum pi log pi. Stationarity of the Lagrangian gives
    (beta + tau) log pi = beta log pi_ref + r + const, so log pi* is the log-softmax of
    (beta log pi_ref + r) / (beta + tau): pi_ref^(beta / (beta + tau)) exp(r / (beta + tau)),
    renormalised. At tau = 0 it is pi_ref tilted by exp(r / beta), the optimum DPO starts from.

    Args:
        ref_log_probs: float [..., K], the reference's log-probabilities of the K answers, up to
            an additive constant per row (any logits of pi_ref).
        rewards: float [..., K], the same shape.
        beta: float > 0 (ValueError otherwise).
        tau: float >= 0, the entropy bonus (ValueError when negative).

    Returns:
        float32 [..., K], log pi*: normalised over the last axis; finite when rewards / beta
        reach thousands and for reference probabilities that underflow in float32.
    """
    if not float(beta) > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if not float(tau) >= 0:
        raise ValueError(f"tau must be >= 0, got {tau!r}")
    ref = validate.float_array("ref_log_probs", ref_log_probs, min_ndim=1)
    r = validate.float_array("rewards", rewards, min_ndim=1)
    if ref.shape != r.shape:
        raise ValueError(f"ref_log_probs {ref.shape} and rewards {r.shape} must have one shape")
    beta, tau = float(beta), float(tau)
    tilted = (beta * ref.astype(jnp.float32) + r.astype(jnp.float32)) / (beta + tau)
    return jax.nn.log_softmax(tilted, axis=-1)


def sequence_log_prob(logits, tokens, mask):
    """Log-probability of each sequence's masked tokens.

    Args:
        logits: float [B, T, V], position t already predicts tokens[:, t].
        tokens: int [B, T]. mask: [B, T], 1 (or True) where a token counts, 0 elsewhere.

    Returns:
        float32 [B]: sum over t of mask times the token's log-probability (0 for an all-zero
        mask row).
    """
    logits = validate.float_array("logits", logits, min_ndim=3)
    picked = gpt._target_log_probs(logits, tokens)  # (B, T)
    return jnp.sum(jnp.asarray(mask, jnp.float32) * picked, axis=-1)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, flip=0.0):
    """Direct preference optimisation loss, averaged over the batch of preference pairs, for
    labels that were swapped with probability ``flip``.

    With the margin z = beta [(policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)],
    Bradley-Terry with the implicit reward gives the recorded preference the probability
    (1 - flip) sigma(z) + flip sigma(-z); the loss is its mean negative log-likelihood, computed
    in log space (a log-sum-exp of the two ways, so neither sigmoid is formed).

    Args:
        policy_chosen, policy_rejected: float [B], the policy's sequence log-probabilities of
            the preferred and the rejected answers. ref_chosen, ref_rejected: float [B], the
            frozen reference's. beta: float > 0. flip: float in [0, 0.5), the probability that a
            recorded pair's labels were swapped; 0 gives the DPO loss.

    Returns:
        float32 scalar; log 2 when policy and reference agree; finite, with a finite gradient,
        for any margin.
    """
    if not 0.0 <= flip < 0.5:
        raise ValueError(f"flip must be in [0, 0.5), got {flip}")
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    z = beta * jnp.asarray(margin, jnp.float32)
    kept = jnp.log1p(-flip) + jax.nn.log_sigmoid(z)
    swapped = jnp.log(jnp.float32(flip)) + jax.nn.log_sigmoid(-z)  # -inf at flip = 0
    return -jnp.mean(jnp.logaddexp(kept, swapped))


def sequence_kl(policy_logits, ref_logits, mask):
    """KL(policy || reference) of the next-token distributions, summed over masked positions.

    logits: float [B, T, V] each; mask [B, T]. Returns float32 [B], >= 0, 0 where the two
    distributions agree; finite when a reference probability underflows in float32.
    """
    log_p = jax.nn.log_softmax(jnp.asarray(policy_logits, jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(jnp.asarray(ref_logits, jnp.float32), axis=-1)
    per_position = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)  # (B, T)
    return jnp.sum(jnp.asarray(mask, jnp.float32) * per_position, axis=-1)


def completion_log_probs(model, tokens, mask):
    """Sequence log-probs of windows under ``model``: tokens int [B, T + 1]; mask [B, T + 1]
    (positions 1.. that count; position 0 is never predicted). Returns float32 [B]."""
    tokens = jnp.asarray(tokens)
    return sequence_log_prob(model(tokens[:, :-1]), tokens[:, 1:], jnp.asarray(mask)[:, 1:])


def completion_kl(model, ref_model, tokens, mask):
    """KL(model || ref_model) of the next-token distributions, summed over the counted positions
    of windows: tokens int [B, T + 1]; mask [B, T + 1] like :func:`completion_log_probs`'s (the
    positions whose token counts; position 0 is never predicted). Returns float32 [B]."""
    tokens = jnp.asarray(tokens)
    inputs = tokens[:, :-1]
    return sequence_kl(model(inputs), ref_model(inputs), jnp.asarray(mask)[:, 1:])


def dpo_train_step(model, optimizer, chosen, rejected, mask_chosen, mask_rejected,
                   ref_chosen, ref_rejected, beta):  # fmt: skip
    """One DPO step on the adapters: returns the loss before the update (float32)."""

    def loss_fn(m):
        return dpo_loss(completion_log_probs(m, chosen, mask_chosen),
                        completion_log_probs(m, rejected, mask_rejected),
                        ref_chosen, ref_rejected, beta)  # fmt: skip

    return _filtered_step(loss_fn, model, optimizer, nnx.LoRAParam)


def _filtered_step(loss_fn, model, optimizer, wrt):
    """``loss_fn(model)`` and its gradient for the variables ``wrt`` selects only, applied by
    ``optimizer`` (built with the same filter); returns the loss before the update."""
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
    optimizer.update(model, grads)
    return loss


def bradley_terry_loss(reward_chosen, reward_rejected):
    """The negative log-likelihood of preferences under Bradley-Terry, mean over pairs.

    P(chosen preferred to rejected) = sigmoid(r_chosen - r_rejected); the loss is
    -log of that, computed as softplus(r_rejected - r_chosen) (finite for any margin).

    Args:
        reward_chosen, reward_rejected: float [B], the rewards of each pair's two answers.

    Returns:
        float32 scalar: log 2 for equal rewards, near 0 when every chosen answer is far ahead.
    """
    margin = jnp.asarray(reward_chosen, jnp.float32) - jnp.asarray(reward_rejected, jnp.float32)
    return jnp.mean(jax.nn.softplus(-margin))


class RewardModel(nnx.Module):
    """A reward model r(x, y): a LoRA copy of a GPT and a linear head, summed over the answer.

    The head reads each position's logits; the tied output layer makes them a linear image of
    the final hidden state, so the head is a linear reading of the hidden state at every
    position, and the reward is its sum over the answer's positions (a count-like quantity:
    the rule of chapter 07's pairs, word breaks, is a sum of local events). Only the adapters
    (``nnx.LoRAParam``) and the head train: optimise ``wrt=RewardModel.TRAINABLE``.
    """

    TRAINABLE = nnx.Any(nnx.LoRAParam, nnx.PathContains("head"))

    def __init__(self, base: gpt.GPT, rank: int = 8, alpha: float = 16.0, *, rngs: nnx.Rngs):
        self.lm = add_lora(nnx.clone(base), rank, alpha, rngs=rngs)
        self.head = nnx.Linear(base.config.vocab_size, 1, kernel_init=nnx.initializers.zeros,
                               rngs=rngs)  # fmt: skip

    def __call__(self, tokens, mask):
        """tokens int [B, L] (prompt and answer), mask [B, L] (1 on the answer) -> float32 [B]."""
        per_position = self.head(self.lm(jnp.asarray(tokens)))[..., 0]  # (B, L)
        return jnp.sum(per_position * jnp.asarray(mask, jnp.float32), axis=-1)


def reward_train_step(model: RewardModel, optimizer, chosen, rejected, mask_chosen,
                      mask_rejected):  # fmt: skip
    """One Bradley-Terry step on a reward model's adapters and head: the loss before the update."""

    def loss_fn(m):
        return bradley_terry_loss(m(chosen, mask_chosen), m(rejected, mask_rejected))

    return _filtered_step(loss_fn, model, optimizer, RewardModel.TRAINABLE)


def word_breaks(text: str) -> int:
    """The preference of chapter 07's DPO run: how many words ``text`` breaks into, counted as
    the places where a non-space character is followed by a space (a run of spaces counts once)."""
    return len(re.findall(r"\S ", text))


def sample_completions(model: gpt.GPT, key, prompts, num_new: int, per_prompt: int = 1):
    """``per_prompt`` sampled continuations (temperature 1) of each prompt: int32
    [P * per_prompt, T0 + num_new] for prompts int [P, T0], each prompt's rows consecutive."""
    return gpt.generate(model, key, jnp.repeat(jnp.asarray(prompts), per_prompt, axis=0), num_new)


def best_and_worst(samples, scores, per_prompt: int):
    """Preference pairs from scored samples: the best and the worst of each prompt's group.

    Args:
        samples: int [P * k, L], each prompt's k = ``per_prompt`` samples in consecutive rows.
        scores: float [P * k], higher is preferred.

    Returns:
        (chosen, rejected): int [M, L] each, the first highest- and first lowest-scored sample
        of every prompt whose k scores are not all equal (M <= P).
    """
    samples, scores = np.asarray(samples), np.asarray(scores, np.float64)
    groups = samples.reshape(-1, per_prompt, samples.shape[-1])  # (P, k, L)
    grouped = scores.reshape(-1, per_prompt)  # (P, k)
    keep = grouped.max(axis=1) > grouped.min(axis=1)
    rows = np.arange(len(groups))
    chosen = groups[rows, grouped.argmax(axis=1)][keep]
    rejected = groups[rows, grouped.argmin(axis=1)][keep]
    return chosen, rejected


def preference_rate(scores, reference_scores) -> float:
    """How often a sample beats the reference model's sample for the same prompt (ties count
    half): 0.5 for the reference itself. scores, reference_scores: float [N]."""
    scores, reference_scores = np.asarray(scores), np.asarray(reference_scores)
    return float(np.mean(scores > reference_scores) + 0.5 * np.mean(scores == reference_scores))


# --- comparing tokenizers: chapter 04's GPT on characters and on BPE tokens ------------------


class TrainingSeconds(nnx.Variable):
    """Wall-clock seconds a cached model's training took when it ran (saved with its weights)."""


def race_stream(merges=None) -> np.ndarray:
    """The training text of :func:`tokenizer_race_model` as int32 ids [L]: the first
    ``RACE["train_chars"]`` characters of the pydoc corpus (inside chapter 04's training split),
    as characters (``merges=None``: chapter 04's tokenizer) or as the byte-level BPE tokens of
    ``merges`` (:func:`genlab.bpe.encode_array`)."""
    corpus = char_gpt.corpus()
    text = corpus.text[: RACE["train_chars"]]
    return corpus.tokenizer.encode(text) if merges is None else bpe.encode_array(text, merges)


def tokenizer_race_model(merges, steps: int) -> gpt.GPT:
    """Chapter 04's GPT (2 layers, width 128, 64 positions) trained from scratch for ``steps``
    AdamW steps of 32 windows of :func:`race_stream` ``(merges)``: on characters
    (``merges=None``) or on BPE tokens, the same steps and batch for both. Trained once, then
    loaded from the model cache; ``model.train_seconds[...]`` holds the wall-clock seconds of
    its training (compilation included), measured when it ran."""
    if merges is None:
        vocab_size = char_gpt.corpus().tokenizer.vocab_size
    else:
        vocab_size = bpe.NUM_BYTES + len(merges)
    sizes = {k: RACE[k] for k in ("block_size", "num_layers", "num_heads", "d_model")}
    config = gpt.GPTConfig(vocab_size=vocab_size, **sizes)

    def build():
        model = gpt.GPT(config, rngs=nnx.Rngs(RACE["init_seed"]))
        model.train_seconds = TrainingSeconds(jnp.zeros((), jnp.float32))
        return model

    def fit(model):
        start = time.perf_counter()
        ids = race_stream(merges)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, RACE["peak_lr"], warmup_steps=RACE["warmup"], decay_steps=steps,
            end_value=RACE["peak_lr"] / 10)  # fmt: skip
        tx = optax.adamw(schedule, weight_decay=RACE["weight_decay"])
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        key, block = jax.random.key(RACE["data_seed"]), RACE["block_size"]

        def windows(i):  # (batch, block + 1)
            return data.batch_windows(jax.random.fold_in(key, i), ids, RACE["batch"], block + 1)[0]

        train.fit(nnx.jit(gpt.train_step), model, optimizer, windows, steps, log_every=50,
                  desc=f"GPT on {'characters' if merges is None else 'BPE tokens'}")  # fmt: skip
        model.train_seconds[...] = jnp.float32(time.perf_counter() - start)

    tokenizer = "characters" if merges is None else [[a, b, i] for (a, b), i in merges.items()]
    cache_config = {**RACE, "steps": steps, "tokenizer": tokenizer}
    return model_cache.cached_model("tokenizer-race", cache_config, build, fit)


# --- the fine-tuning corpus -----------------------------------------------------------------


def python_source_corpus(modules=SOURCE_MODULES) -> str:
    """The source code of a few pure-Python standard-library modules, concatenated: a new,
    deterministic (for one Python version), offline corpus for fine-tuning."""
    return "\n\n".join(inspect.getsource(importlib.import_module(m)) for m in modules)


def encode_known(text: str, vocab, unknown: str = "?") -> tuple[np.ndarray, int]:
    """Character ids of ``text`` in a character vocabulary (a list of single characters).

    Characters missing from ``vocab`` become ``unknown`` (which must be in it). Returns
    (int32 [L] ids, number of characters replaced).
    """
    index = {c: i for i, c in enumerate(vocab)}
    if unknown not in index:
        raise ValueError(
            f"the stand-in for unknown characters {unknown!r} is not in the vocabulary"
        )
    ids = [index.get(c, index[unknown]) for c in text]
    replaced = sum(c not in index for c in text)
    return np.asarray(ids, np.int32), replaced
