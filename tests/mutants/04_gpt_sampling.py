"""Mutants of chapter 04's graded exercises (solutions/04_gpt_sampling/04_gpt_sampling.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources are executed in the
kernel after the solution notebook has run, so they may use what its imports cell defined
(``jax``, ``jnp``, ``np``, ``nnx``, ``optax``) and the notebook's other answers
(``apply_temperature``, ``top_k_filter``, ``top_p_filter``, ``sample_next_token``).

The first wrong variant of the first exercise is the "wrong submission" of the nbgrader pipeline
test, so it must fail its own test cell and nothing else.
"""

WRONG = {
    "lm_loss": {
        "softmax_over_wrong_axis": """
def lm_loss(logits, targets):
    log_p = jax.nn.log_softmax(logits, axis=-2)
    return -jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0])
""",
        "shifted_again": """
def lm_loss(logits, targets):
    log_p = jax.nn.log_softmax(logits[..., :-1, :], axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, targets[..., 1:, None], axis=-1)[..., 0])
""",
        "summed_not_averaged": """
def lm_loss(logits, targets):
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0])
""",
        "log_of_softmax_overflows": """
def lm_loss(logits, targets):
    p = jax.nn.softmax(logits, axis=-1)
    return -jnp.mean(jnp.log(jnp.take_along_axis(p, targets[..., None], axis=-1)[..., 0]))
""",
        "positive_log_likelihood": """
def lm_loss(logits, targets):
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0])
""",
        "softmax_over_axis_2": """
def lm_loss(logits, targets):
    log_p = jax.nn.log_softmax(logits, axis=2)
    return -jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0])
""",
    },
    "pre_ln_block": {
        "no_residual": """
def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    h = attn(ln_1(x))
    return mlp(ln_2(h))
""",
        "post_ln": """
def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    h = ln_1(x + attn(x))
    return ln_2(h + mlp(h))
""",
        "parallel_branches": """
def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    return x + attn(ln_1(x)) + mlp(ln_2(x))
""",
        "second_residual_from_input": """
def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    h = x + attn(ln_1(x))
    return x + mlp(ln_2(h))
""",
        "norms_swapped": """
def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    h = x + attn(ln_2(x))
    return h + mlp(ln_1(h))
""",
        "attn_called_twice": """
def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    a = attn(ln_1(x))
    h = x + attn(ln_1(x))
    return h + mlp(ln_2(h))
""",
    },
    "source_perplexity": {
        "row_entropies_averaged_uniformly": """
def source_perplexity(transition):
    P = jnp.asarray(transition, jnp.float32)
    rows = -jnp.sum(jnp.where(P > 0, P * jnp.log(jnp.where(P > 0, P, 1.0)), 0.0), axis=-1)
    return jnp.exp(jnp.mean(rows))
""",
        "entropy_rate_not_perplexity": """
def source_perplexity(transition):
    P = np.asarray(transition, np.float64)
    values, vectors = np.linalg.eig(P.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi = pi / pi.sum()
    logs = np.log(np.where(P > 0, P, 1.0))
    return np.float32(-(pi @ np.sum(P * logs, axis=-1)))
""",
        "unigram_perplexity_of_pi": """
def source_perplexity(transition):
    P = np.asarray(transition, np.float64)
    values, vectors = np.linalg.eig(P.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi = pi / pi.sum()
    return np.float32(np.exp(-np.sum(pi * np.log(pi))))
""",
        "right_eigenvector": """
def source_perplexity(transition):
    P = np.asarray(transition, np.float64)
    values, vectors = np.linalg.eig(P)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi = pi / pi.sum()
    logs = np.log(np.where(P > 0, P, 1.0))
    return np.float32(np.exp(-(pi @ np.sum(P * logs, axis=-1))))
""",
        "columns_instead_of_rows": """
def source_perplexity(transition):
    P = np.asarray(transition, np.float64)
    values, vectors = np.linalg.eig(P.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi = pi / pi.sum()
    logs = np.log(np.where(P > 0, P, 1.0))
    return np.float32(np.exp(-(pi @ np.sum(P * logs, axis=0))))
""",
        "zero_entries_give_nan": """
def source_perplexity(transition):
    P = np.asarray(transition, np.float64)
    values, vectors = np.linalg.eig(P.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi = pi / pi.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float32(np.exp(-(pi @ np.sum(P * np.log(P), axis=-1))))
""",
    },
    "apply_temperature": {
        "temperature_multiplied": """
def apply_temperature(logits, t):
    if not t > 0:
        raise ValueError("temperature must be > 0")
    return jnp.asarray(logits) * t
""",
        "zero_allowed": """
def apply_temperature(logits, t):
    if t < 0:
        raise ValueError("temperature must be >= 0")
    return jnp.asarray(logits) / t
""",
        "no_check": """
def apply_temperature(logits, t):
    return jnp.asarray(logits) / t
""",
        "probabilities_returned": """
def apply_temperature(logits, t):
    if not t > 0:
        raise ValueError("temperature must be > 0")
    return jax.nn.softmax(jnp.asarray(logits) / t, axis=-1)
""",
    },
    "entropy_temperature_slope": {
        "slope_in_inverse_temperature": """
def entropy_temperature_slope(logits, t):
    p = jax.nn.softmax(logits / t, axis=-1)
    mean = jnp.sum(p * logits, axis=-1, keepdims=True)
    return -jnp.sum(p * (logits - mean) ** 2, axis=-1) / t
""",
        "variance_over_t_squared": """
def entropy_temperature_slope(logits, t):
    p = jax.nn.softmax(logits / t, axis=-1)
    mean = jnp.sum(p * logits, axis=-1, keepdims=True)
    return jnp.sum(p * (logits - mean) ** 2, axis=-1) / t**2
""",
        "unweighted_variance": """
def entropy_temperature_slope(logits, t):
    return jnp.var(logits, axis=-1) / t**3
""",
        "variance_at_temperature_one": """
def entropy_temperature_slope(logits, t):
    p = jax.nn.softmax(logits, axis=-1)
    mean = jnp.sum(p * logits, axis=-1, keepdims=True)
    return jnp.sum(p * (logits - mean) ** 2, axis=-1) / t**3
""",
        "standard_deviation": """
def entropy_temperature_slope(logits, t):
    p = jax.nn.softmax(logits / t, axis=-1)
    mean = jnp.sum(p * logits, axis=-1, keepdims=True)
    return jnp.sqrt(jnp.sum(p * (logits - mean) ** 2, axis=-1)) / t**3
""",
        "entropy_not_slope": """
def entropy_temperature_slope(logits, t):
    log_p = jax.nn.log_softmax(logits / t, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
""",
        "autodiff_of_the_entropy_in_float32": """
def entropy_temperature_slope(logits, t):
    def H(temp):
        log_p = jax.nn.log_softmax(logits / temp, axis=-1)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    return jax.jacfwd(H)(jnp.float32(t))
""",
        "central_difference_of_the_entropy": """
def entropy_temperature_slope(logits, t):
    def H(temp):
        log_p = jax.nn.log_softmax(logits / temp, axis=-1)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    h = 1e-2 * t
    return (H(t + h) - H(t - h)) / (2 * h)
""",
        "raw_moments_cancel": """
def entropy_temperature_slope(logits, t):
    p = jax.nn.softmax(logits / t, axis=-1)
    return (jnp.sum(p * logits**2, axis=-1) - jnp.sum(p * logits, axis=-1) ** 2) / t**3
""",
    },
    "top_k_filter": {
        "keeps_k_minus_1": """
def top_k_filter(logits, k):
    if k < 1:
        raise ValueError("k must be >= 1")
    logits = jnp.asarray(logits)
    if k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits <= kth, -jnp.inf, logits)
""",
        "drops_ties": """
def top_k_filter(logits, k):
    if k < 1:
        raise ValueError("k must be >= 1")
    logits = jnp.asarray(logits)
    if k >= logits.shape[-1]:
        return logits
    _, idx = jax.lax.top_k(logits, k)
    keep = jnp.sum(jax.nn.one_hot(idx, logits.shape[-1], dtype=bool), axis=-2) > 0
    return jnp.where(keep, logits, -jnp.inf)
""",
        "zero_instead_of_minus_inf": """
def top_k_filter(logits, k):
    if k < 1:
        raise ValueError("k must be >= 1")
    logits = jnp.asarray(logits)
    if k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, 0.0, logits)
""",
        "threshold_over_whole_batch": """
def top_k_filter(logits, k):
    if k < 1:
        raise ValueError("k must be >= 1")
    logits = jnp.asarray(logits)
    if k >= logits.shape[-1]:
        return logits
    kth = jnp.sort(logits.reshape(-1))[-k]
    return jnp.where(logits < kth, -jnp.inf, logits)
""",
        "large_k_crashes": """
def top_k_filter(logits, k):
    if k < 1:
        raise ValueError("k must be >= 1")
    logits = jnp.asarray(logits)
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)
""",
    },
    "top_p_filter": {
        "total_before_rounds_to_one_at_p_1": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top-p needs p in (0, 1], got {p}")
    logits = jnp.asarray(logits)
    order = jnp.argsort(-logits, axis=-1)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = (before < p) | (jnp.arange(logits.shape[-1]) < min_tokens_to_keep)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "drops_crossing_token": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if not 0.0 < p <= 1.0:
        raise ValueError("p must be in (0, 1]")
    logits = jnp.asarray(logits)
    order = jnp.argsort(-logits, axis=-1)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    keep_sorted = jnp.cumsum(probs, axis=-1) < p
    keep_sorted = keep_sorted | (jnp.arange(logits.shape[-1]) < min_tokens_to_keep)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "keeps_one_extra": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if not 0.0 < p <= 1.0:
        raise ValueError("p must be in (0, 1]")
    logits = jnp.asarray(logits)
    order = jnp.argsort(-logits, axis=-1)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    before = jnp.concatenate([jnp.zeros_like(before[..., :1]), before[..., :-1]], axis=-1)
    keep_sorted = (before < p) | (jnp.arange(logits.shape[-1]) < min_tokens_to_keep)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "left_in_sorted_order": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if not 0.0 < p <= 1.0:
        raise ValueError("p must be in (0, 1]")
    logits = jnp.asarray(logits)
    sorted_logits = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    keep = (before < p) | (jnp.arange(logits.shape[-1]) < min_tokens_to_keep)
    return jnp.where(keep, sorted_logits, -jnp.inf)
""",
        "ignores_min_tokens_to_keep": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if not 0.0 < p <= 1.0:
        raise ValueError("p must be in (0, 1]")
    logits = jnp.asarray(logits)
    order = jnp.argsort(-logits, axis=-1)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < p
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "unnormalised_probabilities": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if not 0.0 < p <= 1.0:
        raise ValueError("p must be in (0, 1]")
    logits = jnp.asarray(logits)
    order = jnp.argsort(-logits, axis=-1)
    probs = jnp.exp(jnp.take_along_axis(logits, order, axis=-1))
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = (before < p) | (jnp.arange(logits.shape[-1]) < min_tokens_to_keep)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "min_tokens_by_index": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if not 0.0 < p <= 1.0:
        raise ValueError("p must be in (0, 1]")
    logits = jnp.asarray(logits)
    order = jnp.argsort(-logits, axis=-1)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    keep = jnp.take_along_axis(before < p, jnp.argsort(order, axis=-1), axis=-1)
    keep = keep | (jnp.arange(logits.shape[-1]) < min_tokens_to_keep)
    return jnp.where(keep, logits, -jnp.inf)
""",
    },
    "sample_next_token": {
        "temperature_after_filters": """
def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    logits = apply_temperature(logits, temperature)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
""",
        "top_p_before_top_k": """
def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    logits = apply_temperature(logits, temperature)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
""",
        "categorical_on_probabilities": """
def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return jax.random.categorical(key, jax.nn.softmax(logits, axis=-1), axis=-1).astype(jnp.int32)
""",
        "key_split_first": """
def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    _, key = jax.random.split(key)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
""",
        "greedy_argmax": """
def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
""",
        "top_p_ignored_with_top_k": """
def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    elif top_p is not None:
        logits = top_p_filter(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
""",
    },
    "generate": {
        "same_key_every_step": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    for i in range(num_new_tokens):
        logits = logits_fn(buffer)[:, t0 + i - 1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(key, logits, temperature, top_k, top_p))
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
""",
        "reads_last_buffer_position": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, -1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(subkey, logits, temperature, top_k, top_p))
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
""",
        "draws_every_step_from_the_prompt": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 - 1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(subkey, logits, temperature, top_k, top_p))
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
""",
        "samples_probabilities_as_logits": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 + i - 1]
        probs = jax.nn.softmax(logits, axis=-1)
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(subkey, probs, temperature, top_k, top_p))
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
""",
        "one_shot_argmax": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    guesses = jnp.argmax(logits_fn(buffer), axis=-1)
    return buffer.at[:, t0:].set(guesses[:, t0 - 1 : -1])
""",
        "filters_not_passed_on": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 + i - 1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(subkey, logits, temperature))
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
""",
        "ignores_end_id": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 + i - 1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(subkey, logits, temperature, top_k, top_p))
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
""",
        "an_end_in_the_prompt_counts": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    ended = jnp.any(prompt == end_id, axis=1)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 + i - 1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(subkey, logits, temperature, top_k, top_p))
        token = jnp.where(ended, end_id, token)
        ended = ended | (token == end_id)
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
""",
        "replaces_only_the_next_token": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    drawn_end = jnp.zeros((batch,), bool)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 + i - 1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(subkey, logits, temperature, top_k, top_p))
        written = jnp.where(drawn_end, end_id, token)
        drawn_end = token == end_id
        buffer = buffer.at[:, t0 + i].set(written)
    return buffer
""",
        "pads_with_zeros_after_the_end": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    ended = jnp.zeros((batch,), bool)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 + i - 1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(subkey, logits, temperature, top_k, top_p))
        token = jnp.where(ended, 0, token)
        ended = ended | (token == end_id)
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
""",
    },
    "update_kv_cache": {
        "written_at_pos_plus_1": """
def update_kv_cache(cache, new, pos):
    new = jnp.asarray(new, cache.dtype)
    return jax.lax.dynamic_update_slice_in_dim(cache, new, pos + 1, axis=-2)
""",
        "concatenated": """
def update_kv_cache(cache, new, pos):
    return jnp.concatenate([cache, new], axis=-2)
""",
        "only_first_new_token": """
def update_kv_cache(cache, new, pos):
    return cache.at[..., pos, :].set(new[..., 0, :])
""",
        "python_slice_of_traced_pos": """
def update_kv_cache(cache, new, pos):
    pos = int(pos)
    return cache.at[..., pos : pos + new.shape[-2], :].set(new)
""",
        "wrong_axis": """
def update_kv_cache(cache, new, pos):
    new = jnp.asarray(new, cache.dtype)
    return jax.lax.dynamic_update_slice_in_dim(cache, new, pos, axis=-1)
""",
        "four_axes_only": """
def update_kv_cache(cache, new, pos):
    return jax.lax.dynamic_update_slice(cache, new.astype(cache.dtype), (0, 0, pos, 0))
""",
    },
    "teacher_forced_accuracy": {
        "not_shifted": """
def teacher_forced_accuracy(logits, tokens):
    return jnp.mean((jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32))
""",
        "shifted_the_wrong_way": """
def teacher_forced_accuracy(logits, tokens):
    return jnp.mean((jnp.argmax(logits[:, 1:], axis=-1) == tokens[:, :-1]).astype(jnp.float32))
""",
        "counts_not_mean": """
def teacher_forced_accuracy(logits, tokens):
    return jnp.sum((jnp.argmax(logits[:, :-1], axis=-1) == tokens[:, 1:]).astype(jnp.float32))
""",
        "rolled_includes_last": """
def teacher_forced_accuracy(logits, tokens):
    targets = jnp.roll(tokens, -1, axis=1)
    return jnp.mean((jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32))
""",
    },
    "nucleus_size": {
        "temperature_after_top_p": """
def nucleus_size(logits, p, temperature=1.0):
    filtered = apply_temperature(top_p_filter(logits, p), temperature)
    return jnp.sum(jnp.isfinite(filtered), axis=-1).astype(jnp.int32)
""",
        "temperature_multiplied": """
def nucleus_size(logits, p, temperature=1.0):
    filtered = top_p_filter(jnp.asarray(logits) * temperature, p)
    return jnp.sum(jnp.isfinite(filtered), axis=-1).astype(jnp.int32)
""",
        "counts_dropped_tokens": """
def nucleus_size(logits, p, temperature=1.0):
    filtered = top_p_filter(apply_temperature(logits, temperature), p)
    return jnp.sum(jnp.isinf(filtered), axis=-1).astype(jnp.int32)
""",
        "strict_cumsum_count": """
def nucleus_size(logits, p, temperature=1.0):
    probs = jax.nn.softmax(apply_temperature(logits, temperature), axis=-1)
    return jnp.sum(jnp.cumsum(-jnp.sort(-probs, axis=-1), axis=-1) < p, axis=-1).astype(jnp.int32)
""",
    },
    "step_keys": {
        "split_into_n": """
def step_keys(key, num_steps):
    return jax.random.split(key, num_steps)
""",
        "same_key_repeated": """
def step_keys(key, num_steps):
    return jnp.stack([key] * num_steps)
""",
        "carried_keys": """
def step_keys(key, num_steps):
    keys = []
    for _ in range(num_steps):
        key, subkey = jax.random.split(key)
        keys.append(key)
    return jnp.stack(keys)
""",
        "fold_in_step": """
def step_keys(key, num_steps):
    return jnp.stack([jax.random.fold_in(key, i) for i in range(num_steps)])
""",
    },
    "train_step": {
        "no_shift": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    x = tokens[:, :-1]
    scored = (jnp.cumsum(x == end_id, axis=1) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(x), axis=-1)
        picked = jnp.take_along_axis(log_p, x[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / jnp.maximum(scored.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "ignores_end_id": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    loss, grads = nnx.value_and_grad(lambda m: lm_loss(m(tokens[:, :-1]), tokens[:, 1:]))(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "drops_only_end_targets": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (targets != end_id).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / jnp.maximum(scored.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "drops_only_end_inputs": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (inputs != end_id).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / jnp.maximum(scored.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "scores_the_prediction_after_the_end": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (jnp.cumsum(inputs == end_id, axis=1) - (inputs == end_id) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / jnp.maximum(scored.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "mask_from_the_targets": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (jnp.cumsum(targets == end_id, axis=1) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / jnp.maximum(scored.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "mean_over_all_positions": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (jnp.cumsum(inputs == end_id, axis=1) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / scored.size
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "nan_when_nothing_is_scored": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (jnp.cumsum(inputs == end_id, axis=1) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / scored.sum()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "mean_of_per_window_means": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (jnp.cumsum(inputs == end_id, axis=1) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        per_window = -jnp.sum(picked * scored, axis=1) / jnp.maximum(scored.sum(axis=1), 1.0)
        return jnp.mean(per_window)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss
""",
        "no_clipping": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (jnp.cumsum(inputs == end_id, axis=1) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / jnp.maximum(scored.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "clips_each_array_separately": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (jnp.cumsum(inputs == end_id, axis=1) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / jnp.maximum(scored.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads = jax.tree.map(lambda g: g * jnp.minimum(1.0, max_grad_norm / jnp.linalg.norm(g)), grads)
    optimizer.update(model, grads)
    return loss
""",
        "gradient_ascent": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    scored = (jnp.cumsum(inputs == end_id, axis=1) == 0).astype(jnp.float32)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        return -jnp.sum(picked * scored) / jnp.maximum(scored.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, jax.tree.map(lambda g: -g, grads))
    return loss
""",
    },
    "copy_rate": {
        "shifted_like_teacher_forcing": """
def copy_rate(logits, tokens):
    return jnp.mean(jnp.argmax(logits[:, :-1], axis=-1) == tokens[:, 1:])
""",
        "argmax_over_positions": """
def copy_rate(logits, tokens):
    return jnp.mean(jnp.argmax(logits, axis=1)[:, None] == tokens)
""",
        "counts_not_fraction": """
def copy_rate(logits, tokens):
    return jnp.sum(jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32)
""",
        "probability_of_the_input": """
def copy_rate(logits, tokens):
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.mean(jnp.take_along_axis(probs, tokens[..., None], axis=-1))
""",
    },
    "batch_dependence": {
        "constant_change": """
def batch_dependence(fn, x):
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError("x must be [B, T, D] with B >= 2")
    B = x.shape[0]
    before = jnp.asarray(fn(x)).reshape(B, -1)
    moves = [jnp.asarray(fn(x.at[c].add(1.0))).reshape(B, -1) - before for c in range(B)]
    cols = [jnp.max(jnp.abs(m), axis=1) > 1e-5 for m in moves]
    return jnp.stack(cols, axis=1)
""",
        "transposed": """
def batch_dependence(fn, x):
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError("x must be [B, T, D] with B >= 2")
    B = x.shape[0]
    before = jnp.asarray(fn(x)).reshape(B, -1)
    d = jax.random.normal(jax.random.key(1), x.shape)
    moves = [jnp.asarray(fn(x.at[c].add(d[c]))).reshape(B, -1) - before for c in range(B)]
    rows = [jnp.max(jnp.abs(m), axis=1) > 1e-5 for m in moves]
    return jnp.stack(rows, axis=0)
""",
        "changes_element_0_only": """
def batch_dependence(fn, x):
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError("x must be [B, T, D] with B >= 2")
    B = x.shape[0]
    before = jnp.asarray(fn(x)).reshape(B, -1)
    d = jax.random.normal(jax.random.key(1), x.shape)
    move = jnp.asarray(fn(x.at[0].add(d[0]))).reshape(B, -1) - before
    moved = jnp.max(jnp.abs(move), axis=1) > 1e-5
    return jnp.eye(B, dtype=bool).at[:, 0].set(moved)
""",
        "assumes_the_diagonal": """
def batch_dependence(fn, x):
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError("x must be [B, T, D] with B >= 2")
    B = x.shape[0]
    before = jnp.asarray(fn(x)).reshape(B, -1)
    d = jax.random.normal(jax.random.key(1), x.shape)
    moves = [jnp.asarray(fn(x.at[c].add(d[c]))).reshape(B, -1) - before for c in range(B)]
    cols = [jnp.max(jnp.abs(m), axis=1) > 1e-5 for m in moves]
    return jnp.stack(cols, axis=1) | jnp.eye(B, dtype=bool)
""",
        "finite_difference_step_below_rounding": """
def batch_dependence(fn, x):
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError("x must be [B, T, D] with B >= 2")
    B = x.shape[0]
    before = jnp.asarray(fn(x)).reshape(B, -1)
    moves = [jnp.asarray(fn(x.at[c].add(1e-7))).reshape(B, -1) - before for c in range(B)]
    cols = [jnp.max(jnp.abs(m), axis=1) > 1e-5 for m in moves]
    return jnp.stack(cols, axis=1)
""",
        "threshold_too_coarse": """
def batch_dependence(fn, x):
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError("x must be [B, T, D] with B >= 2")
    B = x.shape[0]
    before = jnp.asarray(fn(x)).reshape(B, -1)
    d = jax.random.normal(jax.random.key(1), x.shape)
    moves = [jnp.asarray(fn(x.at[c].add(d[c]))).reshape(B, -1) - before for c in range(B)]
    cols = [jnp.max(jnp.abs(m), axis=1) > 1e-2 for m in moves]
    return jnp.stack(cols, axis=1)
""",
    },
    "typical_filter": {
        "most_probable_first": """
def typical_filter(logits, mass):
    if not 0.0 < mass <= 1.0:
        raise ValueError("mass must be in (0, 1]")
    logits = jnp.asarray(logits)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    H = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1, keepdims=True)
    order = jnp.argsort(-logits, axis=-1, stable=True)
    sorted_p = jnp.take_along_axis(p, order, axis=-1)
    before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
    keep_sorted = ((before < mass) & (sorted_p > 0)) | (jnp.arange(logits.shape[-1]) == 0)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "signed_distance": """
def typical_filter(logits, mass):
    if not 0.0 < mass <= 1.0:
        raise ValueError("mass must be in (0, 1]")
    logits = jnp.asarray(logits)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    H = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1, keepdims=True)
    order = jnp.argsort(jnp.where(p > 0, -log_p - H, jnp.inf), axis=-1, stable=True)
    sorted_p = jnp.take_along_axis(p, order, axis=-1)
    before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
    keep_sorted = ((before < mass) & (sorted_p > 0)) | (jnp.arange(logits.shape[-1]) == 0)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "entropy_in_bits": """
def typical_filter(logits, mass):
    if not 0.0 < mass <= 1.0:
        raise ValueError("mass must be in (0, 1]")
    logits = jnp.asarray(logits)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    H = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1, keepdims=True)
    H = H / jnp.log(2.0)
    order = jnp.argsort(jnp.where(p > 0, jnp.abs(-log_p - H), jnp.inf), axis=-1, stable=True)
    sorted_p = jnp.take_along_axis(p, order, axis=-1)
    before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
    keep_sorted = ((before < mass) & (sorted_p > 0)) | (jnp.arange(logits.shape[-1]) == 0)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "drops_the_crossing_token": """
def typical_filter(logits, mass):
    if not 0.0 < mass <= 1.0:
        raise ValueError("mass must be in (0, 1]")
    logits = jnp.asarray(logits)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    H = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1, keepdims=True)
    order = jnp.argsort(jnp.where(p > 0, jnp.abs(-log_p - H), jnp.inf), axis=-1, stable=True)
    sorted_p = jnp.take_along_axis(p, order, axis=-1)
    before = jnp.cumsum(sorted_p, axis=-1)
    keep_sorted = ((before < mass) & (sorted_p > 0)) | (jnp.arange(logits.shape[-1]) == 0)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
    },
}

CORRECT = {
    "lm_loss": {
        "optax": """
def lm_loss(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
""",
        "logsumexp_minus_picked": """
def lm_loss(logits, targets):
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)
""",
        "one_hot": """
def lm_loss(logits, targets):
    one_hot = jax.nn.one_hot(targets, logits.shape[-1])
    return -jnp.sum(one_hot * jax.nn.log_softmax(logits, axis=-1)) / targets.size
""",
    },
    "pre_ln_block": {
        "two_lines": """
def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    x = x + attn(ln_1(x))
    x = x + mlp(ln_2(x))
    return x
""",
        "residual_form": """
def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    a = attn(ln_1(x))
    m = mlp(ln_2(x + a))
    return x + a + m
""",
    },
    "source_perplexity": {
        "power_of_the_matrix": """
def source_perplexity(transition):
    P = jnp.asarray(transition, jnp.float32)
    M = P
    for _ in range(20):  # P^(2^20): every row is the stationary distribution
        M = M @ M
        M = M / M.sum(axis=-1, keepdims=True)  # float32 rounding must not compound
    pi = M.mean(axis=0)
    logs = jnp.log(jnp.where(P > 0, P, 1.0))
    return jnp.exp(-jnp.sum(pi * jnp.sum(P * logs, axis=-1)))
""",
        "linear_solve": """
def source_perplexity(transition):
    from scipy.special import xlogy
    P = np.asarray(transition, np.float64)
    S = P.shape[0]
    A = np.vstack([P.T - np.eye(S), np.ones((1, S))])
    b = np.zeros(S + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(A, b, rcond=None)[0]
    return float(np.exp(-pi @ xlogy(P, P).sum(axis=1)))
""",
        "eigenvector_in_jax": """
def source_perplexity(transition):
    P = jnp.asarray(transition, jnp.float32)
    values, vectors = jnp.linalg.eig(P.T)
    v = jnp.real(vectors[:, jnp.argmin(jnp.abs(values - 1.0))])
    pi = v / jnp.sum(v)
    H = -jnp.sum(pi[:, None] * jax.scipy.special.xlogy(P, P))
    return jnp.exp(H)
""",
    },
    "apply_temperature": {
        "multiply_by_inverse": """
def apply_temperature(logits, t):
    if t <= 0:
        raise ValueError(f"temperature must be positive, got {t}")
    return jnp.asarray(logits) * (1.0 / t)
""",
        "jnp_divide": """
def apply_temperature(logits, t):
    if not (t > 0):
        raise ValueError("temperature")
    return jnp.divide(logits, t)
""",
    },
    "entropy_temperature_slope": {
        "weighted_average_variance": """
def entropy_temperature_slope(logits, t):
    logits = jnp.asarray(logits, jnp.float32)
    p = jnp.exp(jax.nn.log_softmax(logits / t, axis=-1))
    mean = jnp.sum(p * logits, axis=-1, keepdims=True)
    return jnp.average((logits - mean) ** 2, axis=-1, weights=p) / t**3
""",
        "moments": """
def entropy_temperature_slope(logits, t):
    p = jax.nn.softmax(jnp.asarray(logits) / t, axis=-1)
    centred = logits - jnp.max(logits, axis=-1, keepdims=True)
    m1 = jnp.sum(p * centred, axis=-1)
    m2 = jnp.sum(p * centred**2, axis=-1)
    return (m2 - m1**2) / t**3
""",
        "numpy_float64": """
def entropy_temperature_slope(logits, t):
    x = np.asarray(logits, np.float64)
    z = x / t
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    mean = (p * x).sum(-1, keepdims=True)
    return ((p * (x - mean) ** 2).sum(-1) / t**3).astype(np.float32)
""",
    },
    "top_k_filter": {
        "sort_threshold": """
def top_k_filter(logits, k):
    if k < 1:
        raise ValueError("k must be >= 1")
    logits = jnp.asarray(logits)
    k = min(k, logits.shape[-1])
    kth = jnp.sort(logits, axis=-1)[..., -k][..., None]
    return jnp.where(logits >= kth, logits, -jnp.inf)
""",
        "negated_sort": """
def top_k_filter(logits, k):
    if k < 1:
        raise ValueError("k must be >= 1")
    logits = jnp.asarray(logits)
    if k >= logits.shape[-1]:
        return logits
    kth = -jnp.sort(-logits, axis=-1)[..., k - 1 : k]
    return jnp.where(logits < kth, -jnp.inf, logits)
""",
    },
    "top_p_filter": {
        "ascending_like_transformers": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if not 0.0 < p <= 1.0:
        raise ValueError("p must be in (0, 1]")
    logits = jnp.asarray(logits)
    order = jnp.argsort(logits, axis=-1)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    remove = jnp.cumsum(probs, axis=-1) <= 1 - p
    v = logits.shape[-1]
    remove = remove & (jnp.arange(v) < v - min_tokens_to_keep)
    keep = jnp.take_along_axis(~remove, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "shifted_cumsum": """
def top_p_filter(logits, p, min_tokens_to_keep=1):
    if p <= 0 or p > 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    logits = jnp.asarray(logits)
    order = jnp.argsort(-logits, axis=-1)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    cum = jnp.cumsum(probs, axis=-1)
    before = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum[..., :-1]], axis=-1)
    keep_sorted = (before < p) | ((p >= 1.0) & (probs > 0))
    keep_sorted = keep_sorted.at[..., :min_tokens_to_keep].set(True)
    keep = jnp.zeros_like(keep_sorted)
    keep = jnp.put_along_axis(keep, order, keep_sorted, axis=-1, inplace=False)
    return jnp.where(keep, logits, -jnp.inf)
""",
    },
    "sample_next_token": {
        "gumbel_max": """
def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    logits = apply_temperature(logits, temperature)
    logits = logits if top_k is None else top_k_filter(logits, top_k)
    logits = logits if top_p is None else top_p_filter(logits, top_p)
    return jax.random.categorical(key, logits).astype(jnp.int32)
""",
        "filters_in_a_list": """
def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    steps = [lambda x: apply_temperature(x, temperature)]
    if top_k is not None:
        steps.append(lambda x: top_k_filter(x, top_k))
    if top_p is not None:
        steps.append(lambda x: top_p_filter(x, top_p))
    for f in steps:
        logits = f(logits)
    return jnp.asarray(jax.random.categorical(key, logits, axis=-1), jnp.int32)
""",
    },
    "generate": {
        "growing_context": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    tokens = jnp.asarray(prompt, jnp.int32)
    ended = jnp.zeros(tokens.shape[:1], bool)
    for _ in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(tokens)[:, -1]
        if greedy:
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            token = sample_next_token(subkey, logits, temperature, top_k, top_p)
        token = jnp.where(ended, end_id, token)
        ended = ended | (token == end_id)
        tokens = jnp.concatenate([tokens, token[:, None]], axis=1)
    return tokens
""",
        "precomputed_keys": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    t0 = prompt.shape[1]
    buffer = jnp.pad(prompt, ((0, 0), (0, num_new_tokens)))
    subkeys = []
    for _ in range(num_new_tokens):
        key, sub = jax.random.split(key)
        subkeys.append(sub)
    for i, sub in enumerate(subkeys):
        logits = logits_fn(buffer)[:, t0 + i - 1]
        token = (jnp.argmax(logits, axis=-1) if greedy
                 else sample_next_token(sub, logits, temperature, top_k, top_p))
        done = jnp.any(buffer[:, t0:t0 + i] == end_id, axis=1)
        buffer = buffer.at[:, t0 + i].set(jnp.where(done, end_id, token))
    return buffer
""",
        "samples_with_carried_key": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 + i - 1]
        token = (jnp.argmax(logits, -1) if greedy
                 else sample_next_token(key, logits, temperature, top_k, top_p))
        done = jnp.any(buffer[:, t0:t0 + i] == end_id, axis=1)
        buffer = buffer.at[:, t0 + i].set(jnp.where(done, end_id, token))
    return buffer
""",
        "fold_in_the_step": """
def generate(key, logits_fn, prompt, num_new_tokens, temperature=1.0, top_k=None, top_p=None,
             greedy=False, end_id=-1):
    prompt = jnp.asarray(prompt, jnp.int32)
    t0 = prompt.shape[1]
    out = jnp.pad(prompt, ((0, 0), (0, num_new_tokens)))
    for i in range(num_new_tokens):
        logits = logits_fn(out)[:, t0 + i - 1]
        if greedy:
            token = jnp.argmax(logits, axis=-1)
        else:
            token = sample_next_token(jax.random.fold_in(key, i), logits, temperature, top_k, top_p)
        if i > 0:
            token = jnp.where(out[:, t0 + i - 1] == end_id, end_id, token)
        out = out.at[:, t0 + i].set(token.astype(jnp.int32))
    return out
""",
    },
    "update_kv_cache": {
        "dynamic_update_slice": """
def update_kv_cache(cache, new, pos):
    start = (0,) * (cache.ndim - 2) + (pos, 0)
    return jax.lax.dynamic_update_slice(cache, new.astype(cache.dtype), start)
""",
        "masked_gather": """
def update_kv_cache(cache, new, pos):
    t_max, t_new = cache.shape[-2], new.shape[-2]
    offset = jnp.arange(t_max) - pos
    inside = (offset >= 0) & (offset < t_new)
    gathered = jnp.take(new, jnp.clip(offset, 0, t_new - 1), axis=-2)
    return jnp.where(inside[:, None], gathered, cache).astype(cache.dtype)
""",
    },
    "teacher_forced_accuracy": {
        "count_then_divide": """
def teacher_forced_accuracy(logits, tokens):
    hits = jnp.argmax(logits, axis=-1)[:, :-1] == tokens[:, 1:]
    return hits.sum() / hits.size
""",
        "numpy_style": """
def teacher_forced_accuracy(logits, tokens):
    guesses = logits[:, :-1].argmax(-1)
    return (guesses == tokens[:, 1:]).mean()
""",
    },
    "nucleus_size": {
        "count_not_minus_inf": """
def nucleus_size(logits, p, temperature=1.0):
    filtered = top_p_filter(apply_temperature(logits, temperature), p)
    return (filtered > -jnp.inf).sum(axis=-1).astype(jnp.int32)
""",
        "direct_count": """
def nucleus_size(logits, p, temperature=1.0):
    probs = jax.nn.softmax(jnp.asarray(logits) / temperature, axis=-1)
    sorted_probs = -jnp.sort(-probs, axis=-1)
    before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    return jnp.maximum(jnp.sum(before < p, axis=-1), 1).astype(jnp.int32)
""",
    },
    "step_keys": {
        "fori_loop_style": """
def step_keys(key, num_steps):
    out = []
    while len(out) < num_steps:
        pair = jax.random.split(key)
        key = pair[0]
        out.append(pair[1])
    return jnp.stack(out)
""",
        "scan": """
def step_keys(key, num_steps):
    def body(k, _):
        k, sub = jax.random.split(k)
        return k, sub
    return jax.lax.scan(body, key, None, length=num_steps)[1]
""",
    },
    "train_step": {
        "cumulative_product_and_optax": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    same_document = jnp.cumprod(inputs != end_id, axis=1)
    def loss_fn(m):
        nll = optax.softmax_cross_entropy_with_integer_labels(m(inputs), targets)
        weight = same_document / jnp.maximum(same_document.sum(), 1)
        return jnp.sum(nll * weight)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    norm = optax.global_norm(grads)
    scale = jnp.minimum(1.0, max_grad_norm / norm)
    optimizer.update(model, jax.tree.map(lambda g: g * scale, grads))
    return loss
""",
        "first_end_position_and_sqrt_of_squares": """
def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    width = inputs.shape[1]
    is_end = inputs == end_id
    first_end = jnp.where(is_end.any(axis=1), jnp.argmax(is_end, axis=1), width)
    scored = jnp.arange(width)[None, :] < first_end[:, None]
    count = jnp.sum(scored)
    def loss_fn(m):
        log_p = jax.nn.log_softmax(m(inputs), axis=-1)
        picked = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
        total = -jnp.sum(jnp.where(scored, picked, 0.0))
        return jnp.where(count > 0, total / jnp.where(count > 0, count, 1), 0.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))
    clipped = lambda g: jnp.where(norm > max_grad_norm, g * max_grad_norm / norm, g)
    optimizer.update(model, jax.tree.map(clipped, grads))
    return loss
""",
    },
    "copy_rate": {
        "count_then_divide": """
def copy_rate(logits, tokens):
    hits = jnp.argmax(logits, axis=-1) == tokens
    return hits.sum() / hits.size
""",
        "numpy_style": """
def copy_rate(logits, tokens):
    return (logits.argmax(-1) == tokens).astype(jnp.float32).mean()
""",
    },
    "batch_dependence": {
        "jacobian_blocks": """
def batch_dependence(fn, x):
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"need B >= 2, got {x.shape}")
    B = x.shape[0]
    jac = jax.jacfwd(lambda v: jnp.asarray(fn(v)).reshape(B, -1))(x)  # (B, N, B, T, D)
    return jnp.max(jnp.abs(jac), axis=(1, 3, 4)) > 1e-6
""",
        "jvp_per_element": """
def batch_dependence(fn, x):
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"need B >= 2, got {x.shape}")
    B = x.shape[0]
    out = np.zeros((B, B), bool)
    tangents = jax.random.uniform(jax.random.key(7), x.shape, minval=-1.0, maxval=1.0)
    for c in range(B):
        t = jnp.zeros_like(x).at[c].set(tangents[c])
        _, moved = jax.jvp(fn, (x,), (t,))
        out[:, c] = np.asarray(jnp.max(jnp.abs(jnp.asarray(moved).reshape(B, -1)), axis=1)) > 1e-6
    return jnp.asarray(out)
""",
        "numpy_uniform_change": """
def batch_dependence(fn, x):
    x = np.asarray(x, np.float32)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError("x must be [B, T, D], B >= 2")
    B = x.shape[0]
    base = np.asarray(fn(jnp.asarray(x))).reshape(B, -1)
    rng = np.random.default_rng(0)
    M = np.zeros((B, B), dtype=bool)
    for c in range(B):
        y = x.copy()
        y[c] += rng.uniform(0.5, 1.5, size=y[c].shape) * rng.choice([-1, 1], size=y[c].shape)
        M[:, c] = (np.abs(np.asarray(fn(jnp.asarray(y))).reshape(B, -1) - base) > 1e-5).any(axis=1)
    return jnp.asarray(M)
""",
    },
    "typical_filter": {
        "numpy_like_loop_free": """
def typical_filter(logits, mass):
    if mass <= 0 or mass > 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    logits = jnp.asarray(logits)
    p = jax.nn.softmax(logits, axis=-1)
    surprisal = -jax.nn.log_softmax(logits, axis=-1)
    H = jnp.sum(jnp.where(p > 0, p * surprisal, 0.0), axis=-1, keepdims=True)
    distance = jnp.where(p > 0, jnp.abs(surprisal - H), jnp.inf)
    order = jnp.argsort(distance, axis=-1)
    sorted_p = jnp.take_along_axis(p, order, axis=-1)
    cum = jnp.cumsum(sorted_p, axis=-1)
    before = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum[..., :-1]], axis=-1)
    keep_sorted = ((before < mass) & (sorted_p > 0)).at[..., 0].set(True)
    keep = jnp.zeros_like(keep_sorted)
    keep = jnp.put_along_axis(keep, order, keep_sorted, axis=-1, inplace=False)
    return jnp.where(keep, logits, -jnp.inf)
""",
        "scipy_style_entropy": """
def typical_filter(logits, mass):
    if not (0 < mass <= 1):
        raise ValueError("mass")
    logits = jnp.asarray(logits)
    log_p = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    p = jnp.exp(log_p)
    H = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1, keepdims=True)
    order = jnp.argsort(jnp.where(p > 0, jnp.abs(log_p + H), jnp.inf), axis=-1, stable=True)
    sorted_p = jnp.take_along_axis(p, order, axis=-1)
    before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
    keep_sorted = ((before < mass) & (sorted_p > 0)) | (jnp.arange(logits.shape[-1]) == 0)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)
""",
    },
}
