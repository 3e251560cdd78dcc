"""Mutants of chapter 06's graded exercises (solutions/06_evaluation/06_evaluation.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources run in the kernel after
the solution notebook, so they may use its imports (``jax``, ``jnp``, ``np``, ``scipy``) and the
earlier exercises (``green_mask``, ``watermark_logits``, ``watermark_z_score``), which the probes
bind to their references. The pitfalls of issue 16 are among the wrong ones: the prompt scored
with the generation and repeated pairs counted (watermark_z_score), a two-sided threshold
(z_threshold), the biased covariance (gaussian_stats), ``eigh`` of the non-symmetric product
(frechet_distance), greedy decoding, one key at every step, a list seeded by the wrong token and
a Python int that breaks jax.jit (watermarked_sample), the null's variance used for the watermarked
count (tokens_for_z).
"""

WRONG = {
    "dequantized_bits_per_dim": {
        "jacobian_sign_flipped": """
def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    if num_dims < 1 or not bin_width > 0:
        raise ValueError("bad input")
    log_prob = jnp.mean(jnp.asarray(log_density), axis=-1) - num_dims * np.log(bin_width)
    return -log_prob / (num_dims * np.log(2.0))
""",
        "no_jacobian": """
def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    if num_dims < 1 or not bin_width > 0:
        raise ValueError("bad input")
    return -jnp.mean(jnp.asarray(log_density, jnp.float32), axis=-1) / (num_dims * np.log(2.0))
""",
        "jacobian_of_one_dimension": """
def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    if num_dims < 1 or not bin_width > 0:
        raise ValueError("bad input")
    log_prob = jnp.mean(jnp.asarray(log_density, jnp.float32), axis=-1) + np.log(bin_width)
    return -log_prob / (num_dims * np.log(2.0))
""",
        "log_of_mean_density": """
def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    if num_dims < 1 or not bin_width > 0:
        raise ValueError("bad input")
    log_density = jnp.asarray(log_density, jnp.float32)
    log_mean = jax.scipy.special.logsumexp(log_density, axis=-1) - np.log(log_density.shape[-1])
    return -(log_mean + num_dims * np.log(bin_width)) / (num_dims * np.log(2.0))
""",
        "nats_not_bits": """
def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    if num_dims < 1 or not bin_width > 0:
        raise ValueError("bad input")
    log_prob = jnp.mean(jnp.asarray(log_density), axis=-1) + num_dims * np.log(bin_width)
    return -log_prob / num_dims
""",
        "no_argument_check": """
def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    log_prob = jnp.mean(jnp.asarray(log_density), axis=-1) + num_dims * np.log(bin_width)
    return -log_prob / (num_dims * np.log(2.0))
""",
    },
    "mixture_bits_cost": {
        "log_of_the_other_weight": """
def mixture_bits_cost(weight, num_dims):
    if num_dims < 1 or not 0.0 < weight <= 1.0:
        raise ValueError("bad input")
    return float(-np.log2(1.0 - weight + 1e-12) / num_dims)
""",
        "nats_not_bits": """
def mixture_bits_cost(weight, num_dims):
    if num_dims < 1 or not 0.0 < weight <= 1.0:
        raise ValueError("bad input")
    return float(-np.log(weight) / num_dims)
""",
        "not_per_dimension": """
def mixture_bits_cost(weight, num_dims):
    if num_dims < 1 or not 0.0 < weight <= 1.0:
        raise ValueError("bad input")
    return float(-np.log2(weight))
""",
        "cost_times_dimensions": """
def mixture_bits_cost(weight, num_dims):
    if num_dims < 1 or not 0.0 < weight <= 1.0:
        raise ValueError("bad input")
    return float(-np.log2(weight) * num_dims)
""",
        "one_minus_weight_linear": """
def mixture_bits_cost(weight, num_dims):
    if num_dims < 1 or not 0.0 < weight <= 1.0:
        raise ValueError("bad input")
    return float((1.0 - weight) / (num_dims * np.log(2.0)))
""",
        "no_weight_check": """
def mixture_bits_cost(weight, num_dims):
    if num_dims < 1:
        raise ValueError("num_dims")
    return float(np.log2(1.0 / weight) / num_dims) if weight > 0 else float("inf")
""",
    },
    "bits_per_dim": {
        "log10_instead_of_log2": """
def bits_per_dim(nll_nats, num_dims):
    if num_dims < 1:
        raise ValueError("num_dims")
    return jnp.asarray(nll_nats, jnp.float32) / (num_dims * np.log(10.0))
""",
        "not_per_dimension": """
def bits_per_dim(nll_nats, num_dims):
    if num_dims < 1:
        raise ValueError("num_dims")
    return jnp.asarray(nll_nats, jnp.float32) / np.log(2.0)
""",
        "multiplied_by_ln2": """
def bits_per_dim(nll_nats, num_dims):
    if num_dims < 1:
        raise ValueError("num_dims")
    return jnp.asarray(nll_nats, jnp.float32) * np.log(2.0) / num_dims
""",
        "no_argument_check": """
def bits_per_dim(nll_nats, num_dims):
    return jnp.asarray(nll_nats, jnp.float32) / (num_dims * np.log(2.0))
""",
    },
    "gaussian_stats": {
        "biased_covariance": """
def gaussian_stats(features):
    x = jnp.asarray(features, jnp.float32)
    mean = x.mean(0)
    return mean, (x - mean).T @ (x - mean) / x.shape[0]
""",
        "not_centered": """
def gaussian_stats(features):
    x = jnp.asarray(features, jnp.float32)
    return x.mean(0), x.T @ x / (x.shape[0] - 1)
""",
        "covariance_of_examples": """
def gaussian_stats(features):
    x = jnp.asarray(features, jnp.float32)
    return x.mean(0), jnp.cov(x)
""",
        "variances_only": """
def gaussian_stats(features):
    x = jnp.asarray(features, jnp.float32)
    return x.mean(0), jnp.diag(x.var(0, ddof=1))
""",
    },
    "frechet_distance": {
        "eigh_of_the_product": """
def frechet_distance(mu1, cov1, mu2, cov2):
    w = jnp.linalg.eigvalsh(cov1 @ cov2)
    return jnp.maximum(jnp.sum((mu1 - mu2) ** 2) + jnp.trace(cov1 + cov2) - 2 * jnp.sum(jnp.sqrt(jnp.clip(w, 0.0))), 0.0)
""",  # noqa: E501
        "elementwise_square_root": """
def frechet_distance(mu1, cov1, mu2, cov2):
    root = jnp.sqrt(jnp.abs(cov1 * cov2))
    return jnp.maximum(jnp.sum((mu1 - mu2) ** 2) + jnp.trace(cov1 + cov2 - 2 * root), 0.0)
""",
        "root_of_the_trace": """
def frechet_distance(mu1, cov1, mu2, cov2):
    return jnp.maximum(jnp.sum((mu1 - mu2) ** 2) + jnp.trace(cov1 + cov2) - 2 * jnp.sqrt(jnp.trace(cov1 @ cov2)), 0.0)
""",  # noqa: E501
        "no_factor_two": """
def frechet_distance(mu1, cov1, mu2, cov2):
    w1, u1 = jnp.linalg.eigh(cov1)
    s = (u1 * jnp.sqrt(jnp.clip(w1, 0.0))) @ u1.T
    tr = jnp.sum(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(s @ cov2 @ s), 0.0)))
    return jnp.maximum(jnp.sum((mu1 - mu2) ** 2) + jnp.trace(cov1) + jnp.trace(cov2) - tr, 0.0)
""",
        "mean_distance_not_squared": """
def frechet_distance(mu1, cov1, mu2, cov2):
    w1, u1 = jnp.linalg.eigh(cov1)
    s = (u1 * jnp.sqrt(jnp.clip(w1, 0.0))) @ u1.T
    tr = jnp.sum(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(s @ cov2 @ s), 0.0)))
    return jnp.maximum(jnp.linalg.norm(mu1 - mu2) + jnp.trace(cov1) + jnp.trace(cov2) - 2 * tr, 0.0)
""",
    },
    "kernel_distance": {
        "plug_in_with_the_diagonal": """
def kernel_distance(real, fake):
    x, y = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    k = lambda a, b: (a @ b.T / x.shape[1] + 1.0) ** 3
    return jnp.mean(k(x, x)) + jnp.mean(k(y, y)) - 2.0 * jnp.mean(k(x, y))
""",
        "diagonal_dropped_but_divided_by_n_squared": """
def kernel_distance(real, fake):
    x, y = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    k = lambda a, b: (a @ b.T / x.shape[1] + 1.0) ** 3
    off = lambda K: (jnp.sum(K) - jnp.trace(K)) / K.shape[0] ** 2
    return off(k(x, x)) + off(k(y, y)) - 2.0 * jnp.mean(k(x, y))
""",
        "diagonal_dropped_from_the_cross_term_too": """
def kernel_distance(real, fake):
    x, y = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    k = lambda a, b: (a @ b.T / x.shape[1] + 1.0) ** 3
    off = lambda K: (jnp.sum(K) - jnp.trace(K)) / (K.shape[0] * K.shape[1] - min(K.shape))
    return off(k(x, x)) + off(k(y, y)) - 2.0 * off(k(x, y))
""",
        "kernel_not_scaled_by_d": """
def kernel_distance(real, fake):
    x, y = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    k = lambda a, b: (a @ b.T + 1.0) ** 3
    n, m = x.shape[0], y.shape[0]
    kxx, kyy = k(x, x), k(y, y)
    return (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1)) + (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1)) - 2.0 * jnp.mean(k(x, y))
""",  # noqa: E501
    },
    "knn_precision_recall": {
        "self_counted_as_neighbour": """
def knn_precision_recall(real, fake, k=3):
    real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    dist = lambda a, b: jnp.sqrt(jnp.sum((a[:, None] - b[None]) ** 2, -1))
    radii = lambda x: jnp.sort(dist(x, x), axis=1)[:, k - 1]
    cross = dist(fake, real)
    return jnp.mean(jnp.any(cross <= radii(real)[None], 1)), jnp.mean(jnp.any(cross <= radii(fake)[:, None], 0))
""",  # noqa: E501
        "swapped_outputs": """
def knn_precision_recall(real, fake, k=3):
    real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    dist = lambda a, b: jnp.sqrt(jnp.sum((a[:, None] - b[None]) ** 2, -1))
    radii = lambda x: jnp.sort(dist(x, x), axis=1)[:, k]
    cross = dist(fake, real)
    return jnp.mean(jnp.any(cross <= radii(fake)[:, None], 0)), jnp.mean(jnp.any(cross <= radii(real)[None], 1))
""",  # noqa: E501
        "radii_from_the_other_set": """
def knn_precision_recall(real, fake, k=3):
    real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    dist = lambda a, b: jnp.sqrt(jnp.sum((a[:, None] - b[None]) ** 2, -1))
    cross = dist(fake, real)  # (M, N)
    r_real = jnp.sort(cross, axis=0)[k - 1]  # k-th nearest fake of each real point
    r_fake = jnp.sort(cross, axis=1)[:, k - 1]
    return jnp.mean(jnp.any(cross <= r_real[None], 1)), jnp.mean(jnp.any(cross <= r_fake[:, None], 0))
""",  # noqa: E501
        "zero_distances_taken_for_the_point_itself": """
def knn_precision_recall(real, fake, k=3):
    real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    dist = lambda a, b: jnp.sqrt(jnp.sum((a[:, None] - b[None]) ** 2, -1))
    def radii(x):
        d = dist(x, x)
        return jnp.sort(jnp.where(d == 0, jnp.inf, d), axis=1)[:, k - 1]
    cross = dist(fake, real)
    return jnp.mean(jnp.any(cross <= radii(real)[None], 1)), jnp.mean(jnp.any(cross <= radii(fake)[:, None], 0))
""",  # noqa: E501
        "expanded_square_in_float32": """
def knn_precision_recall(real, fake, k=3):
    real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    def dist(a, b):
        squared = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None] - 2 * a @ b.T
        return jnp.sqrt(jnp.maximum(squared, 0.0))
    radii = lambda x: jnp.sort(dist(x, x), axis=1)[:, k]
    cross = dist(fake, real)
    return jnp.mean(jnp.any(cross <= radii(real)[None], 1)), jnp.mean(jnp.any(cross <= radii(fake)[:, None], 0))
""",  # noqa: E501
        "nearest_ball_only": """
def knn_precision_recall(real, fake, k=3):
    real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    dist = lambda a, b: jnp.sqrt(jnp.sum((a[:, None] - b[None]) ** 2, -1))
    radii = lambda x: jnp.sort(dist(x, x), axis=1)[:, k]
    cross = dist(fake, real)
    r_real, r_fake = radii(real), radii(fake)
    nearest_real, nearest_fake = jnp.argmin(cross, 1), jnp.argmin(cross, 0)
    precision = jnp.mean(cross[jnp.arange(len(fake)), nearest_real] <= r_real[nearest_real])
    recall = jnp.mean(cross[nearest_fake, jnp.arange(len(real))] <= r_fake[nearest_fake])
    return precision, recall
""",
    },
    "nearest_neighbor_distances": {
        "squared_distances": """
def nearest_neighbor_distances(samples, reference):
    return jnp.min(jnp.sum((samples[:, None] - reference[None]) ** 2, -1), axis=1)
""",
        "mean_over_reference": """
def nearest_neighbor_distances(samples, reference):
    return jnp.mean(jnp.sqrt(jnp.sum((samples[:, None] - reference[None]) ** 2, -1)), axis=1)
""",
        "nearest_sample_of_each_reference": """
def nearest_neighbor_distances(samples, reference):
    return jnp.min(jnp.sqrt(jnp.sum((samples[:, None] - reference[None]) ** 2, -1)), axis=0)
""",
        "manhattan": """
def nearest_neighbor_distances(samples, reference):
    return jnp.min(jnp.sum(jnp.abs(samples[:, None] - reference[None]), -1), axis=1)
""",
    },
    "green_mask": {
        "no_fold_in": """
def green_mask(key, prev_token, vocab_size, gamma):
    order = jax.random.permutation(key, vocab_size)
    return jnp.zeros(vocab_size, bool).at[order[: int(gamma * vocab_size)]].set(True)
""",
        "last_entries": """
def green_mask(key, prev_token, vocab_size, gamma):
    order = jax.random.permutation(jax.random.fold_in(key, prev_token), vocab_size)
    return jnp.zeros(vocab_size, bool).at[order[vocab_size - int(gamma * vocab_size):]].set(True)
""",
        "permutation_values_as_mask": """
def green_mask(key, prev_token, vocab_size, gamma):
    order = jax.random.permutation(jax.random.fold_in(key, prev_token), vocab_size)
    return order < int(gamma * vocab_size)
""",
        "rounded_count": """
def green_mask(key, prev_token, vocab_size, gamma):
    order = jax.random.permutation(jax.random.fold_in(key, prev_token), vocab_size)
    return jnp.zeros(vocab_size, bool).at[order[: round(gamma * vocab_size + 0.5)]].set(True)
""",
        "python_int_of_token": """
def green_mask(key, prev_token, vocab_size, gamma):
    order = jax.random.permutation(jax.random.fold_in(key, int(prev_token)), vocab_size)
    return jnp.zeros(vocab_size, bool).at[order[: int(gamma * vocab_size)]].set(True)
""",
    },
    "watermark_logits": {
        "multiplied": """
def watermark_logits(logits, green, delta):
    return jnp.where(green, logits * delta, logits)
""",
        "red_boosted": """
def watermark_logits(logits, green, delta):
    return logits + delta * (1.0 - jnp.asarray(green, jnp.float32))
""",
        "subtracted": """
def watermark_logits(logits, green, delta):
    return logits - delta * jnp.asarray(green, jnp.float32)
""",
        "boost_in_probability_space": """
def watermark_logits(logits, green, delta):
    return jnp.log(jax.nn.softmax(logits, -1) + delta * jnp.asarray(green, jnp.float32))
""",
    },
    "expected_green_fraction": {
        "not_normalised": """
def expected_green_fraction(gamma, delta):
    return gamma * np.exp(delta)
""",
        "gamma_dropped": """
def expected_green_fraction(gamma, delta):
    return np.exp(delta) / (np.exp(delta) + 1.0)
""",
        "red_mass_forgotten": """
def expected_green_fraction(gamma, delta):
    return gamma * np.exp(delta) / (gamma * np.exp(delta) + 1.0)
""",
        "additive_boost": """
def expected_green_fraction(gamma, delta):
    return gamma * (1.0 + delta) / (gamma * (1.0 + delta) + 1.0 - gamma)
""",
    },
    "tokens_for_z": {
        "power_ignored": """
def tokens_for_z(gamma, delta, target_z, power):
    if not delta > 0 or not target_z > 0 or not 0.5 <= power < 1:
        raise ValueError("bad input")
    g = expected_green_fraction(gamma, delta)
    return float(target_z**2 * gamma * (1 - gamma) / (g - gamma) ** 2)
""",
        "null_variance_for_the_watermarked_count": """
def tokens_for_z(gamma, delta, target_z, power):
    if not delta > 0 or not target_z > 0 or not 0.5 <= power < 1:
        raise ValueError("bad input")
    g = expected_green_fraction(gamma, delta)
    z_p = scipy.stats.norm.ppf(power)
    return float(((target_z + z_p) * np.sqrt(gamma * (1 - gamma)) / (g - gamma)) ** 2)
""",
        "watermarked_variance_for_both": """
def tokens_for_z(gamma, delta, target_z, power):
    if not delta > 0 or not target_z > 0 or not 0.5 <= power < 1:
        raise ValueError("bad input")
    g = expected_green_fraction(gamma, delta)
    z_p = scipy.stats.norm.ppf(power)
    return float(((target_z + z_p) * np.sqrt(g * (1 - g)) / (g - gamma)) ** 2)
""",
        "power_quantile_subtracted": """
def tokens_for_z(gamma, delta, target_z, power):
    if not delta > 0 or not target_z > 0 or not 0.5 <= power < 1:
        raise ValueError("bad input")
    g = expected_green_fraction(gamma, delta)
    z_p = scipy.stats.norm.ppf(power)
    root = target_z * np.sqrt(gamma * (1 - gamma)) - z_p * np.sqrt(g * (1 - g))
    return float((root / (g - gamma)) ** 2)
""",
        "two_sided_power_quantile": """
def tokens_for_z(gamma, delta, target_z, power):
    if not delta > 0 or not target_z > 0 or not 0.5 <= power < 1:
        raise ValueError("bad input")
    g = expected_green_fraction(gamma, delta)
    z_p = scipy.stats.norm.ppf((1 + power) / 2)
    root = target_z * np.sqrt(gamma * (1 - gamma)) + z_p * np.sqrt(g * (1 - g))
    return float((root / (g - gamma)) ** 2)
""",
        "rounded_up": """
def tokens_for_z(gamma, delta, target_z, power):
    import math
    if not delta > 0 or not target_z > 0 or not 0.5 <= power < 1:
        raise ValueError("bad input")
    g = expected_green_fraction(gamma, delta)
    z_p = scipy.stats.norm.ppf(power)
    root = target_z * np.sqrt(gamma * (1 - gamma)) + z_p * np.sqrt(g * (1 - g))
    return float(math.ceil((root / (g - gamma)) ** 2))
""",
        "power_not_checked": """
def tokens_for_z(gamma, delta, target_z, power):
    if not delta > 0 or not target_z > 0:
        raise ValueError("bad input")
    g = expected_green_fraction(gamma, delta)
    z_p = scipy.stats.norm.ppf(power)
    root = target_z * np.sqrt(gamma * (1 - gamma)) + z_p * np.sqrt(g * (1 - g))
    return float((root / (g - gamma)) ** 2)
""",
    },
    "watermark_z_score": {
        "prompt_scored": """
def watermark_z_score(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False):
    tokens = np.asarray(tokens)
    pairs = [(int(tokens[i - 1]), int(tokens[i])) for i in range(1, len(tokens))]
    if ignore_repeated:
        pairs = list(dict.fromkeys(pairs))
    greens = sum(bool(green_mask(key, p, vocab_size, gamma)[t]) for p, t in pairs)
    n = len(pairs)
    return float((greens - gamma * n) / np.sqrt(n * gamma * (1 - gamma)))
""",
        "own_token_list": """
def watermark_z_score(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False):
    tokens = np.asarray(tokens)
    pairs = [(int(tokens[i]), int(tokens[i])) for i in range(max(prompt_len, 1), len(tokens))]
    if ignore_repeated:
        pairs = list(dict.fromkeys((int(tokens[i - 1]), int(tokens[i])) for i in range(max(prompt_len, 1), len(tokens))))
        pairs = [(t, t) for _, t in pairs]
    greens = sum(bool(green_mask(key, p, vocab_size, gamma)[t]) for p, t in pairs)
    n = len(pairs)
    return float((greens - gamma * n) / np.sqrt(n * gamma * (1 - gamma)))
""",  # noqa: E501
        "repeats_always_counted": """
def watermark_z_score(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False):
    tokens = np.asarray(tokens)
    pairs = [(int(tokens[i - 1]), int(tokens[i])) for i in range(max(prompt_len, 1), len(tokens))]
    greens = sum(bool(green_mask(key, p, vocab_size, gamma)[t]) for p, t in pairs)
    n = len(pairs)
    return float((greens - gamma * n) / np.sqrt(n * gamma * (1 - gamma)))
""",
        "variance_not_square_rooted": """
def watermark_z_score(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False):
    tokens = np.asarray(tokens)
    pairs = [(int(tokens[i - 1]), int(tokens[i])) for i in range(max(prompt_len, 1), len(tokens))]
    if ignore_repeated:
        pairs = list(dict.fromkeys(pairs))
    greens = sum(bool(green_mask(key, p, vocab_size, gamma)[t]) for p, t in pairs)
    n = len(pairs)
    return float((greens - gamma * n) / np.sqrt(n) / (gamma * (1 - gamma)))
""",
        "distinct_tokens_not_pairs": """
def watermark_z_score(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False):
    tokens = np.asarray(tokens)
    pairs = [(int(tokens[i - 1]), int(tokens[i])) for i in range(max(prompt_len, 1), len(tokens))]
    if ignore_repeated:
        seen, kept = set(), []
        for p, t in pairs:
            if t not in seen:
                seen.add(t)
                kept.append((p, t))
        pairs = kept
    greens = sum(bool(green_mask(key, p, vocab_size, gamma)[t]) for p, t in pairs)
    n = len(pairs)
    return float((greens - gamma * n) / np.sqrt(n * gamma * (1 - gamma)))
""",
    },
    "watermarked_sample": {
        "one_key_every_step": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    rows = jnp.arange(batch)
    buffer = jnp.where(jnp.arange(t0 + num_new_tokens)[None] < lengths[:, None], jnp.pad(prompts, ((0, 0), (0, num_new_tokens))), 0)
    def step(carry, k):
        tokens, length = carry
        logits = next_logits(tokens, length)
        green = jax.vmap(lambda p: green_mask(wm_key, p, logits.shape[-1], gamma))(tokens[rows, length - 1])
        token = jax.random.categorical(key, watermark_logits(logits, green, delta))
        return (tokens.at[rows, length].set(token.astype(jnp.int32)), length + 1), None
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), jax.random.split(key, num_new_tokens))
    return buffer
""",  # noqa: E501
        "list_of_the_slot_being_filled": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    rows = jnp.arange(batch)
    buffer = jnp.where(jnp.arange(t0 + num_new_tokens)[None] < lengths[:, None], jnp.pad(prompts, ((0, 0), (0, num_new_tokens))), 0)
    def step(carry, k):
        tokens, length = carry
        logits = next_logits(tokens, length)
        green = jax.vmap(lambda p: green_mask(wm_key, p, logits.shape[-1], gamma))(tokens[rows, length])
        token = jax.random.categorical(k, watermark_logits(logits, green, delta))
        return (tokens.at[rows, length].set(token.astype(jnp.int32)), length + 1), None
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), jax.random.split(key, num_new_tokens))
    return buffer
""",  # noqa: E501
        "boost_not_applied": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    rows = jnp.arange(batch)
    buffer = jnp.where(jnp.arange(t0 + num_new_tokens)[None] < lengths[:, None], jnp.pad(prompts, ((0, 0), (0, num_new_tokens))), 0)
    def step(carry, k):
        tokens, length = carry
        token = jax.random.categorical(k, next_logits(tokens, length))
        return (tokens.at[rows, length].set(token.astype(jnp.int32)), length + 1), None
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), jax.random.split(key, num_new_tokens))
    return buffer
""",  # noqa: E501
        "greedy": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    rows = jnp.arange(batch)
    buffer = jnp.where(jnp.arange(t0 + num_new_tokens)[None] < lengths[:, None], jnp.pad(prompts, ((0, 0), (0, num_new_tokens))), 0)
    def step(carry, k):
        tokens, length = carry
        logits = next_logits(tokens, length)
        green = jax.vmap(lambda p: green_mask(wm_key, p, logits.shape[-1], gamma))(tokens[rows, length - 1])
        token = jnp.argmax(watermark_logits(logits, green, delta), axis=-1)
        return (tokens.at[rows, length].set(token.astype(jnp.int32)), length + 1), None
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), jax.random.split(key, num_new_tokens))
    return buffer
""",  # noqa: E501
        "first_row_list_for_every_row": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    rows = jnp.arange(batch)
    buffer = jnp.where(jnp.arange(t0 + num_new_tokens)[None] < lengths[:, None], jnp.pad(prompts, ((0, 0), (0, num_new_tokens))), 0)
    def step(carry, k):
        tokens, length = carry
        logits = next_logits(tokens, length)
        green = green_mask(wm_key, tokens[0, length[0] - 1], logits.shape[-1], gamma)
        token = jax.random.categorical(k, watermark_logits(logits, green, delta))
        return (tokens.at[rows, length].set(token.astype(jnp.int32)), length + 1), None
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), jax.random.split(key, num_new_tokens))
    return buffer
""",  # noqa: E501
        "one_key_for_every_row": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    rows = jnp.arange(batch)
    buffer = jnp.where(jnp.arange(t0 + num_new_tokens)[None] < lengths[:, None], jnp.pad(prompts, ((0, 0), (0, num_new_tokens))), 0)
    def step(carry, k):
        tokens, length = carry
        logits = next_logits(tokens, length)
        green = jax.vmap(lambda p: green_mask(wm_key, p, logits.shape[-1], gamma))(tokens[rows, length - 1])
        token = jax.vmap(lambda row: jax.random.categorical(k, row))(watermark_logits(logits, green, delta))
        return (tokens.at[rows, length].set(token.astype(jnp.int32)), length + 1), None
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), jax.random.split(key, num_new_tokens))
    return buffer
""",  # noqa: E501
        "model_shown_the_empty_slot": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    rows = jnp.arange(batch)
    buffer = jnp.where(jnp.arange(t0 + num_new_tokens)[None] < lengths[:, None], jnp.pad(prompts, ((0, 0), (0, num_new_tokens))), 0)
    def step(carry, k):
        tokens, length = carry
        logits = next_logits(tokens, length + 1)
        green = jax.vmap(lambda p: green_mask(wm_key, p, logits.shape[-1], gamma))(tokens[rows, length - 1])
        token = jax.random.categorical(k, watermark_logits(logits, green, delta))
        return (tokens.at[rows, length].set(token.astype(jnp.int32)), length + 1), None
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), jax.random.split(key, num_new_tokens))
    return buffer
""",  # noqa: E501
        "every_row_continues_after_the_longest_prompt": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    buffer = jnp.pad(prompts, ((0, 0), (0, num_new_tokens)))
    def step(carry, k):
        tokens, pos = carry
        logits = next_logits(tokens, jnp.full(batch, pos))
        green = jax.vmap(lambda p: green_mask(wm_key, p, logits.shape[-1], gamma))(tokens[:, pos - 1])
        token = jax.random.categorical(k, watermark_logits(logits, green, delta))
        return (tokens.at[:, pos].set(token.astype(jnp.int32)), pos + 1), None
    (buffer, _), _ = jax.lax.scan(step, (buffer, jnp.int32(t0)), jax.random.split(key, num_new_tokens))
    return buffer
""",  # noqa: E501
        "python_int_breaks_jit": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts = np.asarray(prompts)
    out = []
    for b, start in enumerate(np.asarray(lengths)):
        tokens = np.zeros(prompts.shape[1] + num_new_tokens, np.int32)
        tokens[:start] = prompts[b, :start]
        for length in range(int(start), int(start) + num_new_tokens):
            batch = jnp.asarray(np.repeat(tokens[None], prompts.shape[0], axis=0))
            logits = next_logits(batch, jnp.full(prompts.shape[0], length))[b]
            green = green_mask(wm_key, int(tokens[length - 1]), logits.shape[-1], gamma)
            key, subkey = jax.random.split(key)
            tokens[length] = int(jax.random.categorical(subkey, watermark_logits(logits, green, delta)))
        out.append(tokens)
    return jnp.asarray(np.stack(out))
""",  # noqa: E501
    },
    "z_threshold": {
        "two_sided": """
def z_threshold(false_positive_rate):
    if not 0 < false_positive_rate < 1:
        raise ValueError("false_positive_rate")
    return float(scipy.stats.norm.isf(false_positive_rate / 2))
""",
        "sign_flipped": """
def z_threshold(false_positive_rate):
    if not 0 < false_positive_rate < 1:
        raise ValueError("false_positive_rate")
    return float(scipy.stats.norm.ppf(false_positive_rate))
""",
        "log_scale_guess": """
def z_threshold(false_positive_rate):
    if not 0 < false_positive_rate < 1:
        raise ValueError("false_positive_rate")
    return float(np.sqrt(-2 * np.log(false_positive_rate)))
""",
        "no_argument_check": """
def z_threshold(false_positive_rate):
    return float(scipy.stats.norm.isf(false_positive_rate))
""",
    },
    "repeated_pair_fraction": {
        "repeated_tokens_not_pairs": """
def repeated_pair_fraction(tokens, prompt_len=0):
    tokens = [int(t) for t in np.asarray(tokens)]
    scored = tokens[max(prompt_len, 1):]
    return 1.0 - len(set(scored)) / len(scored) if scored else 0.0
""",
        "distinct_share": """
def repeated_pair_fraction(tokens, prompt_len=0):
    tokens = [int(t) for t in np.asarray(tokens)]
    pairs = [(tokens[i - 1], tokens[i]) for i in range(max(prompt_len, 1), len(tokens))]
    return len(set(pairs)) / len(pairs) if pairs else 0.0
""",
        "first_occurrence_counted": """
def repeated_pair_fraction(tokens, prompt_len=0):
    from collections import Counter
    tokens = [int(t) for t in np.asarray(tokens)]
    pairs = [(tokens[i - 1], tokens[i]) for i in range(max(prompt_len, 1), len(tokens))]
    counts = Counter(pairs)
    return sum(c for c in counts.values() if c > 1) / len(pairs) if pairs else 0.0
""",
        "prompt_included": """
def repeated_pair_fraction(tokens, prompt_len=0):
    tokens = [int(t) for t in np.asarray(tokens)]
    pairs = [(tokens[i - 1], tokens[i]) for i in range(1, len(tokens))]
    return 1.0 - len(set(pairs)) / len(pairs) if pairs else 0.0
""",
    },
    "frechet_floor": {
        "same_sample_twice": """
def frechet_floor(features, n, key):
    features = jnp.asarray(features, jnp.float32)
    if n < 2 or 2 * n > features.shape[0]:
        raise ValueError("n")
    sample = features[jax.random.permutation(key, features.shape[0])[:n]]
    return frechet_distance(*gaussian_stats(sample), *gaussian_stats(sample))
""",
        "sample_against_the_whole_set": """
def frechet_floor(features, n, key):
    features = jnp.asarray(features, jnp.float32)
    if n < 2 or 2 * n > features.shape[0]:
        raise ValueError("n")
    sample = features[jax.random.permutation(key, features.shape[0])[:n]]
    return frechet_distance(*gaussian_stats(sample), *gaussian_stats(features))
""",
        "no_shuffle": """
def frechet_floor(features, n, key):
    features = jnp.asarray(features, jnp.float32)
    if n < 2 or 2 * n > features.shape[0]:
        raise ValueError("n")
    return frechet_distance(*gaussian_stats(features[:n]), *gaussian_stats(features[n:2 * n]))
""",
        "overlapping_halves": """
def frechet_floor(features, n, key):
    features = jnp.asarray(features, jnp.float32)
    if n < 2 or 2 * n > features.shape[0]:
        raise ValueError("n")
    order = jax.random.permutation(key, features.shape[0])
    return frechet_distance(*gaussian_stats(features[order[:n]]), *gaussian_stats(features[order[n // 2:n // 2 + n]]))
""",  # noqa: E501
        "no_argument_check": """
def frechet_floor(features, n, key):
    features = jnp.asarray(features, jnp.float32)
    order = jax.random.permutation(key, features.shape[0])
    return frechet_distance(*gaussian_stats(features[order[:n]]), *gaussian_stats(features[order[n:2 * n]]))
""",  # noqa: E501
    },
    "min_substitutions": {
        "one_green_per_edit": """
def min_substitutions(tokens, key, vocab_size, gamma, threshold, prompt_len=0):
    tokens = np.asarray(tokens)
    flags = [bool(green_mask(key, tokens[i - 1], vocab_size, gamma)[tokens[i]]) for i in range(max(prompt_len, 1), len(tokens))]
    n, greens = len(flags), sum(flags)
    allowed = greens
    while allowed >= 0 and (allowed - gamma * n) / np.sqrt(n * gamma * (1 - gamma)) >= threshold:
        allowed -= 1
    return max(greens - allowed, 0)
""",  # noqa: E501
        "two_greens_per_edit_always": """
def min_substitutions(tokens, key, vocab_size, gamma, threshold, prompt_len=0):
    tokens = np.asarray(tokens)
    flags = [bool(green_mask(key, tokens[i - 1], vocab_size, gamma)[tokens[i]]) for i in range(max(prompt_len, 1), len(tokens))]
    n, greens = len(flags), sum(flags)
    allowed = greens
    while allowed >= 0 and (allowed - gamma * n) / np.sqrt(n * gamma * (1 - gamma)) >= threshold:
        allowed -= 1
    return (max(greens - allowed, 0) + 1) // 2
""",  # noqa: E501
        "pairs_counted_over_all_greens": """
def min_substitutions(tokens, key, vocab_size, gamma, threshold, prompt_len=0):
    tokens = np.asarray(tokens)
    flags = [bool(green_mask(key, tokens[i - 1], vocab_size, gamma)[tokens[i]]) for i in range(max(prompt_len, 1), len(tokens))]
    n, greens = len(flags), sum(flags)
    allowed = greens
    while allowed >= 0 and (allowed - gamma * n) / np.sqrt(n * gamma * (1 - gamma)) >= threshold:
        allowed -= 1
    excess, doubles = greens - allowed, sum(a and b for a, b in zip(flags, flags[1:]))
    if excess <= 0:
        return 0
    return (excess + 1) // 2 if excess <= 2 * doubles else doubles + excess - 2 * doubles
""",  # noqa: E501
        "z_at_threshold_allowed": """
def min_substitutions(tokens, key, vocab_size, gamma, threshold, prompt_len=0):
    tokens = np.asarray(tokens)
    flags = [bool(green_mask(key, tokens[i - 1], vocab_size, gamma)[tokens[i]]) for i in range(max(prompt_len, 1), len(tokens))]
    n, greens = len(flags), sum(flags)
    allowed = int(np.floor(gamma * n + threshold * np.sqrt(n * gamma * (1 - gamma)))) + 1
    excess = greens - allowed
    if excess <= 0:
        return 0
    doubles, run = 0, 0
    for flag in flags + [False]:
        doubles, run = (doubles, run + 1) if flag else (doubles + run // 2, 0)
    return (excess + 1) // 2 if excess <= 2 * doubles else doubles + excess - 2 * doubles
""",  # noqa: E501
    },
}

CORRECT = {
    "dequantized_bits_per_dim": {
        "log2_throughout": """
def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    if int(num_dims) != num_dims or num_dims < 1:
        raise ValueError("num_dims must be a positive integer")
    if bin_width <= 0:
        raise ValueError("bin_width must be positive")
    bits = np.asarray(log_density, np.float64) / np.log(2.0)  # (..., K) log2 densities
    return -(bits.mean(axis=-1) / num_dims + np.log2(bin_width))
""",
        "per_copy_then_average": """
def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    import math
    if not isinstance(num_dims, (int, np.integer)) or num_dims <= 0:
        raise ValueError("num_dims")
    if not (bin_width > 0):
        raise ValueError("bin_width")
    log_p_levels = jnp.asarray(log_density) + num_dims * math.log(bin_width)  # on the level scale
    per_copy = -log_p_levels / (num_dims * math.log(2))
    return per_copy.mean(axis=-1)
""",
    },
    "mixture_bits_cost": {
        "natural_log_converted": """
def mixture_bits_cost(weight, num_dims):
    import math
    if num_dims < 1 or weight <= 0 or weight > 1:
        raise ValueError("bad input")
    return -math.log(weight) / (num_dims * math.log(2))
""",
        "bits_of_the_share": """
def mixture_bits_cost(weight, num_dims):
    if not (0 < weight <= 1):
        raise ValueError("weight")
    if num_dims <= 0 or int(num_dims) != num_dims:
        raise ValueError("num_dims")
    return float(np.log2(1.0 / np.float64(weight))) / int(num_dims)
""",
    },
    "bits_per_dim": {
        "times_log2_e": """
def bits_per_dim(nll_nats, num_dims):
    if isinstance(num_dims, bool) or int(num_dims) != num_dims or num_dims < 1:
        raise ValueError(f"num_dims must be a positive int, got {num_dims}")
    return jnp.asarray(nll_nats, jnp.float32) / num_dims * jnp.log2(jnp.e)
""",
        "numpy_float64": """
def bits_per_dim(nll_nats, num_dims):
    if num_dims < 1:
        raise ValueError("num_dims must be at least 1")
    return np.asarray(nll_nats, np.float64) / num_dims / np.log(2)
""",
    },
    "gaussian_stats": {
        "numpy_cov": """
def gaussian_stats(features):
    x = np.asarray(features, np.float64)
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
""",
        "outer_products": """
def gaussian_stats(features):
    x = jnp.asarray(features, jnp.float32)
    mean = x.mean(0)
    d = x - mean
    return mean, jnp.einsum("ni,nj->ij", d, d) / (len(x) - 1)
""",
    },
    "frechet_distance": {
        "scipy_sqrtm_float64": """
def frechet_distance(mu1, cov1, mu2, cov2):
    c1, c2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return max(float(diff @ diff + np.trace(c1 + c2 - 2 * root)), 0.0)
""",
        "symmetric_root_of_both": """
def frechet_distance(mu1, cov1, mu2, cov2):
    def root(a):
        w, u = np.linalg.eigh(np.asarray(a, np.float64))
        return (u * np.sqrt(np.clip(w, 0, None))) @ u.T
    s1 = root(cov1)
    middle = root(s1 @ np.asarray(cov2, np.float64) @ s1)
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return max(float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(middle)), 0.0)
""",
    },
    "kernel_distance": {
        "numpy_float64_masks": """
def kernel_distance(real, fake):
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    k = lambda a, b: (a @ b.T / x.shape[1] + 1.0) ** 3
    off = lambda K: K[~np.eye(len(K), dtype=bool)].mean()
    return off(k(x, x)) + off(k(y, y)) - 2.0 * k(x, y).mean()
""",
        "where_and_einsum": """
def kernel_distance(real, fake):
    x, y = jnp.asarray(real), jnp.asarray(fake)
    d = x.shape[-1]
    def within(a):
        n = a.shape[0]
        K = (jnp.einsum("id,jd->ij", a, a) / d + 1) ** 3
        return jnp.where(jnp.eye(n, dtype=bool), 0.0, K).sum() / (n * (n - 1))
    cross = ((jnp.einsum("id,jd->ij", x, y) / d + 1) ** 3).mean()
    return within(x) + within(y) - 2 * cross
""",
    },
    "knn_precision_recall": {
        "exact_differences_inf_diagonal": """
def knn_precision_recall(real, fake, k=3):
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    dist = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    def radii(x):
        d = dist(x, x)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]
    cross = dist(fake, real)
    return float((cross <= radii(real)[None]).any(1).mean()), float((cross <= radii(fake)[:, None]).any(0).mean())
""",  # noqa: E501
        "scipy_cdist_loops": """
def knn_precision_recall(real, fake, k=3):
    from scipy.spatial.distance import cdist
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    r_real = np.sort(cdist(real, real), axis=1)[:, k]
    r_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
    cross = cdist(fake, real)
    precision = np.mean([np.any(row <= r_real) for row in cross])
    recall = np.mean([np.any(col <= r_fake) for col in cross.T])
    return precision, recall
""",
    },
    "nearest_neighbor_distances": {
        "gram_trick": """
def nearest_neighbor_distances(samples, reference):
    s, r = jnp.asarray(samples, jnp.float32), jnp.asarray(reference, jnp.float32)
    squared = jnp.sum(s**2, 1)[:, None] + jnp.sum(r**2, 1)[None] - 2 * s @ r.T
    return jnp.sqrt(jnp.maximum(jnp.min(squared, axis=1), 0.0))
""",
        "numpy_loop": """
def nearest_neighbor_distances(samples, reference):
    r = np.asarray(reference, np.float64)
    return np.array([np.linalg.norm(r - s, axis=1).min() for s in np.asarray(samples, np.float64)])
""",
    },
    "green_mask": {
        "scatter_via_argsort": """
def green_mask(key, prev_token, vocab_size, gamma):
    order = jax.random.permutation(jax.random.fold_in(key, prev_token), vocab_size)
    rank = jnp.argsort(order)
    return rank < int(gamma * vocab_size)
""",
        "isin": """
def green_mask(key, prev_token, vocab_size, gamma):
    count = int(gamma * vocab_size)
    order = jax.random.permutation(jax.random.fold_in(key, prev_token), vocab_size)
    return jnp.isin(jnp.arange(vocab_size), order[:count])
""",
    },
    "watermark_logits": {
        "where": """
def watermark_logits(logits, green, delta):
    return jnp.where(green, logits + delta, logits)
""",
        "log_of_scaled_weights": """
def watermark_logits(logits, green, delta):
    return logits + jnp.log(jnp.where(green, jnp.exp(delta), 1.0))
""",
    },
    "expected_green_fraction": {
        "sigmoid_form": """
def expected_green_fraction(gamma, delta):
    return float(jax.nn.sigmoid(delta + np.log(gamma) - np.log(1 - gamma)))
""",
        "by_simulation_free_counting": """
def expected_green_fraction(gamma, delta):
    green_weight = gamma * np.exp(delta)
    red_weight = 1 - gamma
    return green_weight / (green_weight + red_weight)
""",
    },
    "tokens_for_z": {
        "root_finding_on_the_power": """
def tokens_for_z(gamma, delta, target_z, power):
    import scipy.optimize
    if delta <= 0 or target_z <= 0 or not 0.5 <= power < 1:
        raise ValueError("need delta > 0, target_z > 0, power in [1/2, 1)")
    g = expected_green_fraction(gamma, delta)
    def shortfall(t):  # P(count >= threshold count) - power, normal approximation
        threshold = gamma * t + target_z * np.sqrt(t * gamma * (1 - gamma))
        return scipy.stats.norm.sf((threshold - g * t) / np.sqrt(t * g * (1 - g))) - power
    return float(scipy.optimize.brentq(shortfall, 1e-9, 1e12, xtol=1e-12, rtol=1e-14))
""",
        "sigmoid_and_ndtri": """
def tokens_for_z(gamma, delta, target_z, power):
    if delta <= 0 or target_z <= 0 or power < 0.5 or power >= 1:
        raise ValueError("need delta > 0, target_z > 0, power in [1/2, 1)")
    g = 1.0 / (1.0 + (1.0 - gamma) / (gamma * np.exp(delta)))
    z_beta = float(scipy.special.ndtri(power))
    return float(((target_z * (gamma * (1 - gamma)) ** 0.5 + z_beta * (g * (1 - g)) ** 0.5) / (g - gamma)) ** 2)
""",  # noqa: E501
    },
    "watermark_z_score": {
        "vectorised_with_vmap": """
def watermark_z_score(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False):
    tokens = np.asarray(tokens)
    start = max(prompt_len, 1)
    prev, nxt = tokens[start - 1:-1], tokens[start:]
    if ignore_repeated:
        _, first = np.unique(np.stack([prev, nxt], 1), axis=0, return_index=True)
        prev, nxt = prev[first], nxt[first]
    masks = jax.vmap(lambda p: green_mask(key, p, vocab_size, gamma))(jnp.asarray(prev))
    greens = float(jnp.sum(masks[jnp.arange(len(nxt)), jnp.asarray(nxt)]))
    n = len(nxt)
    return (greens - gamma * n) / np.sqrt(n * gamma * (1 - gamma))
""",
        "set_of_pairs": """
def watermark_z_score(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False):
    tokens = [int(t) for t in np.asarray(tokens)]
    pairs = list(zip(tokens[max(prompt_len, 1) - 1:-1], tokens[max(prompt_len, 1):]))
    if ignore_repeated:
        pairs = set(pairs)
    green = [bool(green_mask(key, p, vocab_size, gamma)[t]) for p, t in pairs]
    n = len(green)
    return (np.mean(green) - gamma) * np.sqrt(n) / np.sqrt(gamma * (1 - gamma))
""",
    },
    "watermarked_sample": {
        "fori_loop_fold_in_one_hot_writes": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    positions = jnp.arange(t0 + num_new_tokens)
    tokens = jnp.where(positions[None] < lengths[:, None], jnp.pad(prompts, ((0, 0), (0, num_new_tokens))), 0)
    def body(i, tokens):
        length = lengths + i
        logits = next_logits(tokens, length)
        previous = jnp.take_along_axis(tokens, (length - 1)[:, None], axis=1)[:, 0]
        green = jnp.stack([green_mask(wm_key, previous[b], logits.shape[-1], gamma) for b in range(batch)])
        token = jax.random.categorical(jax.random.fold_in(key, i), watermark_logits(logits, green, delta))
        return jnp.where(positions[None] == length[:, None], token[:, None].astype(jnp.int32), tokens)
    return jax.lax.fori_loop(0, num_new_tokens, body, tokens)
""",  # noqa: E501
        "scan_carrying_the_key_gumbel_max": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts = jnp.asarray(prompts).astype(jnp.int32)
    lengths = jnp.asarray(lengths).astype(jnp.int32)
    mask = jnp.arange(prompts.shape[1] + num_new_tokens)[None, :] < lengths[:, None]
    buffer = jnp.pad(prompts, ((0, 0), (0, num_new_tokens))) * mask
    def step(carry, _):
        key, tokens, pos = carry
        key, noise_key = jax.random.split(key)
        logits = next_logits(tokens, pos)
        previous = tokens[jnp.arange(tokens.shape[0]), pos - 1]
        green = jax.vmap(green_mask, in_axes=(None, 0, None, None))(wm_key, previous, logits.shape[-1], gamma)
        boosted = watermark_logits(logits, green, delta)
        token = jnp.argmax(boosted + jax.random.gumbel(noise_key, boosted.shape), axis=-1)
        return (key, tokens.at[jnp.arange(tokens.shape[0]), pos].set(token.astype(jnp.int32)), pos + 1), None
    (_, buffer, _), _ = jax.lax.scan(step, (key, buffer, lengths), None, length=num_new_tokens)
    return buffer
""",  # noqa: E501
        "one_key_per_row_and_step": """
def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    prompts, lengths = jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32)
    batch, t0 = prompts.shape
    rows = jnp.arange(batch)
    buffer = jnp.where(jnp.arange(t0)[None] < lengths[:, None], prompts, 0)
    buffer = jnp.concatenate([buffer, jnp.zeros((batch, num_new_tokens), jnp.int32)], axis=1)
    def step(carry, row_keys):
        tokens, length = carry
        logits = next_logits(tokens, length)
        green = jax.vmap(lambda p: green_mask(wm_key, p, logits.shape[-1], gamma))(tokens[rows, length - 1])
        token = jax.vmap(jax.random.categorical)(row_keys, watermark_logits(logits, green, delta))
        return (tokens.at[rows, length].set(token.astype(jnp.int32)), length + 1), None
    keys = jax.vmap(lambda k: jax.random.split(k, batch))(jax.random.split(key, num_new_tokens))
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), keys)
    return buffer
""",  # noqa: E501
    },
    "z_threshold": {
        "ppf_of_complement": """
def z_threshold(false_positive_rate):
    if not 0 < false_positive_rate < 1:
        raise ValueError("the rate must be in (0, 1)")
    return float(scipy.stats.norm.ppf(1 - false_positive_rate))
""",
        "jax_ndtri": """
def z_threshold(false_positive_rate):
    if not 0.0 < false_positive_rate < 1.0:
        raise ValueError("false_positive_rate must be in (0, 1)")
    return -float(jax.scipy.special.ndtri(false_positive_rate))
""",
    },
    "repeated_pair_fraction": {
        "counter": """
def repeated_pair_fraction(tokens, prompt_len=0):
    tokens = np.asarray(tokens)
    seen, repeats, total = set(), 0, 0
    for i in range(max(prompt_len, 1), len(tokens)):
        pair = (int(tokens[i - 1]), int(tokens[i]))
        repeats += pair in seen
        seen.add(pair)
        total += 1
    return repeats / total if total else 0.0
""",
        "numpy_unique": """
def repeated_pair_fraction(tokens, prompt_len=0):
    tokens = np.asarray(tokens)
    start = max(prompt_len, 1)
    if len(tokens) <= start:
        return 0.0
    pairs = np.stack([tokens[start - 1:-1], tokens[start:]], 1)
    return 1.0 - len(np.unique(pairs, axis=0)) / len(pairs)
""",
    },
    "frechet_floor": {
        "permuted_copy": """
def frechet_floor(features, n, key):
    x = np.asarray(features, np.float32)
    if int(n) != n or n < 2 or 2 * n > len(x):
        raise ValueError(f"bad n {n}")
    shuffled = x[np.asarray(jax.random.permutation(key, len(x)))]
    a, b = shuffled[:n], shuffled[n:2 * n]
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
""",
        "take_and_split": """
def frechet_floor(features, n, key):
    features = jnp.asarray(features)
    if not 2 <= n <= features.shape[0] // 2:
        raise ValueError("n out of range")
    rows = jnp.take(features, jax.random.permutation(key, features.shape[0])[: 2 * n], axis=0)
    first, second = jnp.split(rows, 2)
    return frechet_distance(*gaussian_stats(first), *gaussian_stats(second))
""",
    },
    "min_substitutions": {
        "greedy_simulation": """
def min_substitutions(tokens, key, vocab_size, gamma, threshold, prompt_len=0):
    tokens = np.asarray(tokens)
    start = max(prompt_len, 1)
    flags = [bool(green_mask(key, tokens[i - 1], vocab_size, gamma)[tokens[i]]) for i in range(start, len(tokens))]
    n = len(flags)
    z = lambda g: (g - gamma * n) / np.sqrt(n * gamma * (1 - gamma))
    greens, edits = sum(flags), 0
    doubles = [i for i in range(n - 1) if flags[i] and flags[i + 1]]
    # remove pairs first: walk runs, one edit per two greens
    i, pair_edits = 0, 0
    while i < n - 1:
        if flags[i] and flags[i + 1]:
            pair_edits += 1
            i += 2
        else:
            i += 1
    while z(greens) >= threshold:
        greens -= 2 if pair_edits > 0 else 1
        pair_edits -= 1
        edits += 1
    return edits
""",  # noqa: E501
        "closed_form_runs": """
def min_substitutions(tokens, key, vocab_size, gamma, threshold, prompt_len=0):
    import itertools, math
    tokens = np.asarray(tokens)
    start = max(prompt_len, 1)
    flags = np.array([bool(green_mask(key, tokens[i - 1], vocab_size, gamma)[tokens[i]]) for i in range(start, len(tokens))])
    n, greens = len(flags), int(flags.sum())
    sd = math.sqrt(n * gamma * (1 - gamma))
    need = next(e for e in range(greens + 1) if (greens - e - gamma * n) / sd < threshold)
    runs = [len(list(g)) for v, g in itertools.groupby(flags) if v]
    pairs = sum(r // 2 for r in runs)
    return math.ceil(need / 2) if need <= 2 * pairs else pairs + need - 2 * pairs
""",  # noqa: E501
    },
}
