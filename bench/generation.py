"""Benchmark: text generation with the chapter-04 GPT, KV-cached vs naive, and a peer.

The tiny GPT (4 layers, 4 heads, width 128, vocabulary 96) writes 256 new tokens after a 16-token
prompt, batch 1. ``genlab.gpt.generate`` runs a prefill and a ``lax.scan`` over the new tokens in
one jitted program with a KV cache; ``genlab.sampling.generate`` recomputes the whole (padded,
fixed-shape) context for every token. Both must produce the same tokens. When transformers is
installed, ``GPT2LMHeadModel.generate(use_cache=True)`` on the same configuration is the peer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.harness import Table, first_call_seconds, median_seconds, optional_module
from genlab import gpt, sampling

PROMPT, NEW_TOKENS, VOCAB = 16, 256, 96


def tiny_config(quick: bool) -> gpt.GPTConfig:
    """The chapter's CPU model; its block is widened to hold prompt + new tokens."""
    prompt, new = (4, 12) if quick else (PROMPT, NEW_TOKENS)
    if quick:
        return gpt.GPTConfig(
            vocab_size=VOCAB, block_size=prompt + new, num_layers=1, num_heads=2, d_model=32
        )
    return gpt.GPTConfig.tiny(vocab_size=VOCAB, block_size=prompt + new)


def hf_config(transformers, config: gpt.GPTConfig):
    """The transformers ``GPT2Config`` of the same model, without dropout."""
    return transformers.GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.d_model,
        n_layer=config.num_layers,
        n_head=config.num_heads,
        layer_norm_epsilon=config.ln_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def _hf_seconds(transformers, torch, config, prompt, new, repeats):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(hf_config(transformers, config)).eval()
    ids = torch.from_numpy(np.asarray(prompt, np.int64))

    def run():
        with torch.no_grad():
            return model.generate(
                ids,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
            )

    return median_seconds(run, repeats=repeats)


def run(quick: bool = False) -> list[Table]:
    config = tiny_config(quick)
    t0 = 4 if quick else PROMPT
    new = config.block_size - t0
    repeats = 2 if quick else 5
    model = gpt.GPT(config, rngs=nnx.Rngs(0))
    prompt = jax.random.randint(jax.random.key(1), (1, t0), 0, config.vocab_size)  # (1, T0)
    key = jax.random.key(2)

    def cached(greedy):
        return gpt.generate(model, key, prompt, new, greedy=greedy, top_k=40)

    logits_fn = gpt.make_logits_fn(model)

    def naive(greedy):
        return sampling.generate(key, logits_fn, prompt, new, greedy=greedy, top_k=40)

    table = Table(
        f"Generation: {new} new tokens after a {t0}-token prompt, batch 1",
        ["method", "first call (s)", "tokens/s", "speed-up vs naive", "same tokens as naive"],
        notes=[
            f"Model: {config.num_layers} layers, {config.num_heads} heads, width "
            f"{config.d_model}, vocabulary {config.vocab_size}, block {config.block_size} "
            f"(prompt + new tokens; the chapter trains with block 128). First call = tracing + "
            f"compilation + one run; tokens/s = new tokens / median time of {repeats} later "
            f"runs. Sampling: top-k 40 at temperature 1 with the same key."
        ],
    )
    rows = {}
    for greedy in (True, False):
        mode = "greedy" if greedy else "top-k sampling"
        naive_first = first_call_seconds(lambda g=greedy: naive(g))
        naive_s = median_seconds(lambda g=greedy: naive(g), repeats=max(1, repeats // 2), warmup=0)
        cached_first = first_call_seconds(lambda g=greedy: cached(g))
        cached_s = median_seconds(lambda g=greedy: cached(g), repeats=repeats, warmup=0)
        same = bool(jnp.array_equal(naive(greedy), cached(greedy)))
        rows[mode] = (naive_s, cached_s)
        table.add(f"naive recompute, {mode}", naive_first, new / naive_s, 1.0, "-")
        table.add(
            f"KV cache in one jit, {mode}",
            cached_first,
            new / cached_s,
            naive_s / cached_s,
            "yes" if same else "NO",
        )
    transformers, torch = optional_module("transformers"), optional_module("torch")
    if transformers is not None and torch is not None:
        hf_s = _hf_seconds(transformers, torch, config, prompt, new, repeats)
        table.add(
            "transformers generate(use_cache=True), greedy",
            "-",
            new / hf_s,
            rows["greedy"][0] / hf_s,
            "n/a (other weights)",
        )
        table.notes.append(
            f"KV-cached genlab vs transformers (greedy): "
            f"{hf_s / rows['greedy'][1]:.2f}x the peer's tokens/s."
        )
    else:
        table.notes.append("transformers/torch not installed: no peer row.")
    compiles = gpt._generate_cached._cache_size()
    table.notes.append(
        f"Compiled programs of the cached generator after all runs: {compiles} (one per "
        f"sampling setting: greedy and top-k), none per token."
    )
    return [table]
