"""Mutants of chapter 01's graded exercises (solutions/01_gan_math/01_gan_math.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources are executed in the
kernel after the solution notebook has run, so they may use what its imports cell defined:
``functools``, ``jax``, ``jnp``, ``np``, ``nnx`` and ``optax``.

The first wrong variant of the first exercise is the "wrong submission" of the nbgrader pipeline
test, so it must fail its own test cell and nothing else.
"""

WRONG = {
    "bce_with_logits": {
        "labels_swapped": """
def bce_with_logits(logits, labels):
    logits = jnp.asarray(logits)
    return jnp.maximum(logits, 0) - logits * (1 - labels) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
""",
        "naive_sigmoid_then_log": """
def bce_with_logits(logits, labels):
    d = jax.nn.sigmoid(logits)
    return -(labels * jnp.log(d) + (1 - labels) * jnp.log(1 - d))
""",
        "missing_abs_overflows": """
def bce_with_logits(logits, labels):
    logits = jnp.asarray(logits)
    return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-logits))
""",
        "clipped_probabilities": """
def bce_with_logits(logits, labels):
    d = jnp.clip(jax.nn.sigmoid(logits), 1e-7, 1 - 1e-7)
    return -(labels * jnp.log(d) + (1 - labels) * jnp.log(1 - d))
""",
        "log_without_1p": """
def bce_with_logits(logits, labels):
    logits = jnp.asarray(logits)
    return jnp.maximum(logits, 0) - logits * labels + jnp.log(jnp.exp(-jnp.abs(logits)))
""",
        "hard_labels_only": """
def bce_with_logits(logits, labels):
    labels = jnp.asarray(labels)
    return jnp.where(labels > 0.5, jax.nn.softplus(-logits), jax.nn.softplus(logits))
""",
    },
    "discriminator_loss": {
        "summed_instead_of_averaged": """
def discriminator_loss(real_logits, fake_logits):
    return jnp.sum(jax.nn.softplus(-real_logits)) + jnp.sum(jax.nn.softplus(fake_logits))
""",
        "labels_swapped": """
def discriminator_loss(real_logits, fake_logits):
    return jnp.mean(jax.nn.softplus(real_logits)) + jnp.mean(jax.nn.softplus(-fake_logits))
""",
        "one_mean_over_both_batches": """
def discriminator_loss(real_logits, fake_logits):
    terms = jnp.concatenate([jax.nn.softplus(-real_logits).ravel(),
                             jax.nn.softplus(fake_logits).ravel()])
    return jnp.mean(terms)
""",
        "naive_log_of_sigmoid": """
def discriminator_loss(real_logits, fake_logits):
    return (-jnp.mean(jnp.log(jax.nn.sigmoid(real_logits)))
            - jnp.mean(jnp.log(1 - jax.nn.sigmoid(fake_logits))))
""",
        "value_not_negated": """
def discriminator_loss(real_logits, fake_logits):
    return -jnp.mean(jax.nn.softplus(-real_logits)) - jnp.mean(jax.nn.softplus(fake_logits))
""",
    },
    "generator_loss": {
        "saturating_wrong_sign": """
def generator_loss(fake_logits, non_saturating=True):
    if non_saturating:
        return jnp.mean(jax.nn.softplus(-fake_logits))
    return jnp.mean(jax.nn.softplus(fake_logits))
""",
        "flag_inverted": """
def generator_loss(fake_logits, non_saturating=True):
    if not non_saturating:
        return jnp.mean(jax.nn.softplus(-fake_logits))
    return -jnp.mean(jax.nn.softplus(fake_logits))
""",
        "non_saturating_as_minus_log_one_minus_d": """
def generator_loss(fake_logits, non_saturating=True):
    if non_saturating:
        return jnp.mean(jax.nn.softplus(fake_logits))
    return -jnp.mean(jax.nn.softplus(fake_logits))
""",
        "summed_instead_of_averaged": """
def generator_loss(fake_logits, non_saturating=True):
    if non_saturating:
        return jnp.sum(jax.nn.softplus(-fake_logits))
    return -jnp.sum(jax.nn.softplus(fake_logits))
""",
        "naive_log_of_sigmoid": """
def generator_loss(fake_logits, non_saturating=True):
    d = jax.nn.sigmoid(fake_logits)
    if non_saturating:
        return -jnp.mean(jnp.log(d))
    return jnp.mean(jnp.log(1 - d))
""",
    },
    "optimal_discriminator": {
        "no_zero_over_zero_case": """
def optimal_discriminator(p_data, p_g):
    return p_data / (p_data + p_g)
""",
        "epsilon_in_denominator": """
def optimal_discriminator(p_data, p_g):
    return p_data / (p_data + p_g + 1e-8)
""",
        "ratio_swapped": """
def optimal_discriminator(p_data, p_g):
    total = p_data + p_g
    return jnp.where(total > 0, p_g / jnp.where(total > 0, total, 1.0), 0.5)
""",
        "zero_case_gives_zero": """
def optimal_discriminator(p_data, p_g):
    total = p_data + p_g
    return jnp.where(total > 0, p_data / jnp.where(total > 0, total, 1.0), 0.0)
""",
        "likelihood_ratio": """
def optimal_discriminator(p_data, p_g):
    return jnp.where(p_g > 0, p_data / jnp.where(p_g > 0, p_g, 1.0), 0.5)
""",
    },
    "kl_divergence": {
        "zeros_give_nan": """
def kl_divergence(p, q):
    return jnp.sum(p * jnp.log(p / q), axis=-1)
""",
        "ignores_zeros_in_q": """
def kl_divergence(p, q):
    ok = (p > 0) & (q > 0)
    terms = jnp.where(ok, p * jnp.log(jnp.where(ok, p, 1.0) / jnp.where(ok, q, 1.0)), 0.0)
    return jnp.sum(terms, axis=-1)
""",
        "arguments_reversed": """
def kl_divergence(p, q):
    return jnp.sum(jax.scipy.special.xlogy(q, q) - jax.scipy.special.xlogy(q, p), axis=-1)
""",
        "log_base_2": """
def kl_divergence(p, q):
    xlogy = jax.scipy.special.xlogy
    return jnp.sum(xlogy(p, p) - xlogy(p, q), axis=-1) / jnp.log(2.0)
""",
        "summed_over_every_axis": """
def kl_divergence(p, q):
    xlogy = jax.scipy.special.xlogy
    return jnp.sum(xlogy(p, p) - xlogy(p, q))
""",
    },
    "js_divergence": {
        "log_base_2": """
def js_divergence(p, q):
    xlogy = jax.scipy.special.xlogy
    m = 0.5 * (p + q)
    kl = lambda a: jnp.sum(xlogy(a, a) - xlogy(a, m), axis=-1)
    return (0.5 * kl(p) + 0.5 * kl(q)) / jnp.log(2.0)
""",
        "square_root_like_scipy": """
def js_divergence(p, q):
    xlogy = jax.scipy.special.xlogy
    m = 0.5 * (p + q)
    kl = lambda a: jnp.sum(xlogy(a, a) - xlogy(a, m), axis=-1)
    return jnp.sqrt(0.5 * kl(p) + 0.5 * kl(q))
""",
        "missing_one_half": """
def js_divergence(p, q):
    xlogy = jax.scipy.special.xlogy
    m = 0.5 * (p + q)
    kl = lambda a: jnp.sum(xlogy(a, a) - xlogy(a, m), axis=-1)
    return kl(p) + kl(q)
""",
        "mixture_not_halved": """
def js_divergence(p, q):
    xlogy = jax.scipy.special.xlogy
    m = p + q
    kl = lambda a: jnp.sum(xlogy(a, a) - xlogy(a, m), axis=-1)
    return 0.5 * kl(p) + 0.5 * kl(q)
""",
        "zeros_give_nan": """
def js_divergence(p, q):
    m = 0.5 * (p + q)
    return 0.5 * jnp.sum(p * jnp.log(p / m), -1) + 0.5 * jnp.sum(q * jnp.log(q / m), -1)
""",
    },
    "gan_value": {
        "zeros_give_nan": """
def gan_value(p_data, p_g, d):
    return jnp.sum(p_data * jnp.log(d) + p_g * jnp.log(1 - d), axis=-1)
""",
        "terms_swapped": """
def gan_value(p_data, p_g, d):
    xlogy = jax.scipy.special.xlogy
    return jnp.sum(xlogy(p_data, 1 - d) + xlogy(p_g, d), axis=-1)
""",
        "mean_instead_of_sum": """
def gan_value(p_data, p_g, d):
    xlogy = jax.scipy.special.xlogy
    return jnp.mean(xlogy(p_data, d) + xlogy(p_g, 1 - d), axis=-1)
""",
        "clipped_d": """
def gan_value(p_data, p_g, d):
    d = jnp.clip(d, 1e-7, 1 - 1e-7)
    return jnp.sum(p_data * jnp.log(d) + p_g * jnp.log(1 - d), axis=-1)
""",
        "summed_over_every_axis": """
def gan_value(p_data, p_g, d):
    xlogy = jax.scipy.special.xlogy
    return jnp.sum(xlogy(p_data, d) + xlogy(p_g, 1 - d))
""",
    },
    "generator_sample_grad": {
        "non_saturating_slope_transcribed_as_minus_d": """
def generator_sample_grad(x, w, b, non_saturating=True):
    import scipy.special
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    logits = x @ w + b
    slope = -scipy.special.expit(logits) if non_saturating else -scipy.special.expit(-logits)
    return slope[:, None] * w[None, :]
""",
        "sign_flipped": """
def generator_sample_grad(x, w, b, non_saturating=True):
    import scipy.special
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    logits = x @ w + b
    slope = scipy.special.expit(-logits) if non_saturating else scipy.special.expit(logits)
    return slope[:, None] * w[None, :]
""",
        "derivative_of_d_not_of_log_d": """
def generator_sample_grad(x, w, b, non_saturating=True):
    import scipy.special
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    d = scipy.special.expit(x @ w + b)
    slope = -d * (1 - d)
    return slope[:, None] * w[None, :]
""",
        "chain_rule_stops_at_the_logit": """
def generator_sample_grad(x, w, b, non_saturating=True):
    import scipy.special
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    logits = x @ w + b
    slope = -scipy.special.expit(-logits) if non_saturating else -scipy.special.expit(logits)
    return np.broadcast_to(slope[:, None], x.shape)
""",
        "one_minus_d_cancels_for_confident_reals": """
def generator_sample_grad(x, w, b, non_saturating=True):
    import scipy.special
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    d = scipy.special.expit(x @ w + b)
    slope = -(1.0 - d) if non_saturating else -d
    return slope[:, None] * w[None, :]
""",
        "vmapped_autodiff_in_float32": """
def generator_sample_grad(x, w, b, non_saturating=True):
    def own_loss(row):
        logit = row @ w + b
        return jax.nn.softplus(-logit) if non_saturating else -jax.nn.softplus(logit)
    return jax.vmap(jax.grad(own_loss))(jnp.asarray(x, jnp.float32))
""",
        "autodiff_through_log_of_sigmoid": """
def generator_sample_grad(x, w, b, non_saturating=True):
    def own_loss(row):
        d = jax.nn.sigmoid(row @ w + b)
        return -jnp.log(d) if non_saturating else jnp.log(1 - d)
    return jax.vmap(jax.grad(own_loss))(jnp.asarray(x, jnp.float32))
""",
    },
    "mode_coverage": {
        "radius_of_the_one_dimensional_rule": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = std * float(jax.scipy.stats.norm.ppf(0.5 + 0.5 * quality))
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = jnp.argmin(distances, axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    return jnp.sum(per_mode >= min_count).astype(jnp.int32), jnp.mean(close.astype(jnp.float32))
""",
        "radius_without_the_factor_two": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = std * np.sqrt(-np.log1p(-quality))
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = jnp.argmin(distances, axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    return jnp.sum(per_mode >= min_count).astype(jnp.int32), jnp.mean(close.astype(jnp.float32))
""",
        "quality_and_its_complement_swapped": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = std * np.sqrt(-2.0 * np.log(quality))
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = jnp.argmin(distances, axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    return jnp.sum(per_mode >= min_count).astype(jnp.int32), jnp.mean(close.astype(jnp.float32))
""",
        "variance_for_the_standard_deviation": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = std**2 * np.sqrt(-2.0 * np.log1p(-quality))
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = jnp.argmin(distances, axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    return jnp.sum(per_mode >= min_count).astype(jnp.int32), jnp.mean(close.astype(jnp.float32))
""",
        "squared_radius_used_as_the_radius": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = -2.0 * std**2 * np.log1p(-quality)
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = jnp.argmin(distances, axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    return jnp.sum(per_mode >= min_count).astype(jnp.int32), jnp.mean(close.astype(jnp.float32))
""",
        "three_std_whatever_the_quality": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = 3.0 * std
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = jnp.argmin(distances, axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    return jnp.sum(per_mode >= min_count).astype(jnp.int32), jnp.mean(close.astype(jnp.float32))
""",
        "min_count_off_by_one": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = std * np.sqrt(-2.0 * np.log1p(-quality))
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = jnp.argmin(distances, axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    return jnp.sum(per_mode > min_count).astype(jnp.int32), jnp.mean(close.astype(jnp.float32))
""",
        "ties_to_the_last_center": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = std * np.sqrt(-2.0 * np.log1p(-quality))
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = centers.shape[0] - 1 - jnp.argmin(distances[:, ::-1], axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    return jnp.sum(per_mode >= min_count).astype(jnp.int32), jnp.mean(close.astype(jnp.float32))
""",
        "quality_share_of_covered_modes": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    radius = std * np.sqrt(-2.0 * np.log1p(-quality))
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = jnp.argmin(distances, axis=-1)
    close = jnp.min(distances, axis=-1) <= radius
    per_mode = jnp.sum(jax.nn.one_hot(nearest, centers.shape[0]) * close[:, None], axis=0)
    covered = jnp.sum(per_mode >= min_count)
    return covered.astype(jnp.int32), covered / centers.shape[0]
""",
    },
    "wasserstein_1d": {
        "not_sorted": """
def wasserstein_1d(x, y):
    return jnp.mean(jnp.abs(x - y), axis=-1)
""",
        "only_x_sorted": """
def wasserstein_1d(x, y):
    return jnp.mean(jnp.abs(jnp.sort(x, axis=-1) - y), axis=-1)
""",
        "difference_of_means": """
def wasserstein_1d(x, y):
    return jnp.abs(jnp.mean(x, axis=-1) - jnp.mean(y, axis=-1))
""",
        "squared_distance": """
def wasserstein_1d(x, y):
    return jnp.mean((jnp.sort(x, axis=-1) - jnp.sort(y, axis=-1)) ** 2, axis=-1)
""",
        "sum_instead_of_mean": """
def wasserstein_1d(x, y):
    return jnp.sum(jnp.abs(jnp.sort(x, axis=-1) - jnp.sort(y, axis=-1)), axis=-1)
""",
    },
    "gradient_penalty": {
        "penalty_on_real_points_only": """
def gradient_penalty(critic_fn, real, fake, key):
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(real)
    norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=1))
    return jnp.mean((norms - 1.0) ** 2)
""",
        "squared_norm": """
def gradient_penalty(critic_fn, real, fake, key):
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    norms = jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=1)
    return jnp.mean((norms - 1.0) ** 2)
""",
        "one_eps_per_entry": """
def gradient_penalty(critic_fn, real, fake, key):
    eps = jax.random.uniform(key, real.shape)
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=1))
    return jnp.mean((norms - 1.0) ** 2)
""",
        "norm_over_the_whole_batch": """
def gradient_penalty(critic_fn, real, fake, key):
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    return (jnp.sqrt(jnp.sum(grads**2)) - 1.0) ** 2
""",
        "interpolation_weights_swapped": """
def gradient_penalty(critic_fn, real, fake, key):
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = (1.0 - eps) * real + eps * fake
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=1))
    return jnp.mean((norms - 1.0) ** 2)
""",
    },
    "wgan_critic_loss": {
        "sign_swapped": """
def wgan_critic_loss(critic_fn, real, fake, key, gp_weight=10.0):
    gp = gradient_penalty(critic_fn, real, fake, key)
    return jnp.mean(critic_fn(real)) - jnp.mean(critic_fn(fake)) + gp_weight * gp
""",
        "sigmoid_bce_critic": """
def wgan_critic_loss(critic_fn, real, fake, key, gp_weight=10.0):
    gp = gradient_penalty(critic_fn, real, fake, key)
    bce = jnp.mean(jax.nn.softplus(-critic_fn(real))) + jnp.mean(jax.nn.softplus(critic_fn(fake)))
    return bce + gp_weight * gp
""",
        "penalty_not_weighted": """
def wgan_critic_loss(critic_fn, real, fake, key, gp_weight=10.0):
    gp = gradient_penalty(critic_fn, real, fake, key)
    return jnp.mean(critic_fn(fake)) - jnp.mean(critic_fn(real)) + gp
""",
        "penalty_at_real_points_only": """
def wgan_critic_loss(critic_fn, real, fake, key, gp_weight=10.0):
    gp = gradient_penalty(critic_fn, real, real, key)
    return jnp.mean(critic_fn(fake)) - jnp.mean(critic_fn(real)) + gp_weight * gp
""",
        "penalty_with_a_new_key": """
def wgan_critic_loss(critic_fn, real, fake, key, gp_weight=10.0):
    gp = gradient_penalty(critic_fn, real, fake, jax.random.split(key)[0])
    return jnp.mean(critic_fn(fake)) - jnp.mean(critic_fn(real)) + gp_weight * gp
""",
        "summed_scores": """
def wgan_critic_loss(critic_fn, real, fake, key, gp_weight=10.0):
    gp = gradient_penalty(critic_fn, real, fake, key)
    return jnp.sum(critic_fn(fake)) - jnp.sum(critic_fn(real)) + gp_weight * gp
""",
    },
    "gan_step": {
        "fakes_outside_the_tape": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    fake = jax.lax.stop_gradient(generator(z))
    d_loss, grads = nnx.value_and_grad(lambda d: discriminator_loss(d(real), d(fake)))(discriminator)
    opt_d.update(discriminator, grads)
    g_loss, grads = nnx.value_and_grad(lambda g: generator_loss(discriminator(fake)))(generator)
    opt_g.update(generator, grads)
    return d_loss, g_loss
""",  # noqa: E501
        "generator_toward_the_fake_label": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    fake = jax.lax.stop_gradient(generator(z))
    d_loss, grads = nnx.value_and_grad(lambda d: discriminator_loss(d(real), d(fake)))(discriminator)
    opt_d.update(discriminator, grads)
    g_loss, grads = nnx.value_and_grad(
        lambda g: jnp.mean(bce_with_logits(discriminator(g(z)), 0.0)))(generator)
    opt_g.update(generator, grads)
    return d_loss, g_loss
""",  # noqa: E501
        "fake_loss_on_the_real_logits": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    d_loss, grads = nnx.value_and_grad(lambda d: discriminator_loss(d(real), d(real)))(discriminator)
    opt_d.update(discriminator, grads)
    g_loss, grads = nnx.value_and_grad(lambda g: generator_loss(discriminator(g(z))))(generator)
    opt_g.update(generator, grads)
    return d_loss, g_loss
""",  # noqa: E501
        "double_sigmoid": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    fake = jax.lax.stop_gradient(generator(z))
    d_prob = lambda d, x: jax.nn.sigmoid(d(x))
    d_loss, grads = nnx.value_and_grad(
        lambda d: discriminator_loss(d_prob(d, real), d_prob(d, fake)))(discriminator)
    opt_d.update(discriminator, grads)
    g_loss, grads = nnx.value_and_grad(
        lambda g: generator_loss(d_prob(discriminator, g(z))))(generator)
    opt_g.update(generator, grads)
    return d_loss, g_loss
""",
        "one_joint_minimisation": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    def joint(g, d):
        fake_logits = d(g(z))
        return discriminator_loss(d(real), fake_logits) + generator_loss(fake_logits)
    d_loss = discriminator_loss(discriminator(real), discriminator(generator(z)))
    g_loss = generator_loss(discriminator(generator(z)))
    g_grads, d_grads = nnx.grad(joint, argnums=(0, 1))(generator, discriminator)
    opt_d.update(discriminator, d_grads)
    opt_g.update(generator, g_grads)
    return d_loss, g_loss
""",
        "saturating_generator_loss": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    fake = jax.lax.stop_gradient(generator(z))
    d_loss, grads = nnx.value_and_grad(lambda d: discriminator_loss(d(real), d(fake)))(discriminator)
    opt_d.update(discriminator, grads)
    g_loss, grads = nnx.value_and_grad(
        lambda g: generator_loss(discriminator(g(z)), non_saturating=False))(generator)
    opt_g.update(generator, grads)
    return d_loss, g_loss
""",  # noqa: E501
        "generator_step_through_the_old_discriminator": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    fake = jax.lax.stop_gradient(generator(z))
    d_loss, d_grads = nnx.value_and_grad(lambda d: discriminator_loss(d(real), d(fake)))(discriminator)
    g_loss, g_grads = nnx.value_and_grad(lambda g: generator_loss(discriminator(g(z))))(generator)
    opt_d.update(discriminator, d_grads)
    opt_g.update(generator, g_grads)
    return d_loss, g_loss
""",  # noqa: E501
    },
    "generator_grad_norm": {
        "sum_of_per_array_norms": """
def generator_grad_norm(g_objective, generator, discriminator, z):
    grads = nnx.grad(g_objective)(generator, discriminator, z)
    return sum(jnp.linalg.norm(g.ravel()) for g in jax.tree.leaves(grads))
""",
        "squared_norm": """
def generator_grad_norm(g_objective, generator, discriminator, z):
    grads = nnx.grad(g_objective)(generator, discriminator, z)
    return sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))
""",
        "discriminator_gradient": """
def generator_grad_norm(g_objective, generator, discriminator, z):
    grads = nnx.grad(lambda d, g: g_objective(g, d, z))(discriminator, generator)
    return optax.global_norm(grads)
""",
        "largest_entry": """
def generator_grad_norm(g_objective, generator, discriminator, z):
    grads = nnx.grad(g_objective)(generator, discriminator, z)
    return max(jnp.max(jnp.abs(g)) for g in jax.tree.leaves(grads))
""",
    },
    "logit_gradient": {
        "not_scaled_by_the_count": """
def logit_gradient(loss_fn, logits):
    return jax.grad(loss_fn)(logits)
""",
        "scaled_by_the_first_axis": """
def logit_gradient(loss_fn, logits):
    return logits.shape[0] * jax.grad(loss_fn)(logits)
""",
        "sign_flipped": """
def logit_gradient(loss_fn, logits):
    return -logits.size * jax.grad(loss_fn)(logits)
""",
        "coarse_finite_difference": """
def logit_gradient(loss_fn, logits):
    flat = logits.ravel()
    eye = jnp.eye(flat.size) * 0.1
    slopes = jnp.array([(loss_fn((flat + e).reshape(logits.shape))
                         - loss_fn(logits)) / 0.1 for e in eye])
    return flat.size * slopes.reshape(logits.shape)
""",
    },
    "diagnose_generator_loss": {
        "push_read_as_the_slope_itself": """
def diagnose_generator_loss(loss_fn, fraction):
    grid = np.linspace(-7.0, 7.0, 1401)
    push = np.asarray(logit_gradient(loss_fn, jnp.asarray(grid, jnp.float32)), np.float64)
    weak = np.ones(grid.shape, bool) if push.max() <= 0 else push < fraction * push.max()
    cuts = np.concatenate([[-7.0], 0.5 * (grid[1:] + grid[:-1]), [7.0]])
    edges = np.diff(np.concatenate([[0], weak.astype(int), [0]]))
    return np.stack([cuts[edges == 1], cuts[edges == -1]], axis=-1).reshape(-1, 2)
""",
        "size_of_the_slope_only": """
def diagnose_generator_loss(loss_fn, fraction):
    grid = np.linspace(-7.0, 7.0, 1401)
    size = np.abs(np.asarray(logit_gradient(loss_fn, jnp.asarray(grid, jnp.float32)), np.float64))
    weak = np.ones(grid.shape, bool) if size.max() <= 0 else size < fraction * size.max()
    cuts = np.concatenate([[-7.0], 0.5 * (grid[1:] + grid[:-1]), [7.0]])
    edges = np.diff(np.concatenate([[0], weak.astype(int), [0]]))
    return np.stack([cuts[edges == 1], cuts[edges == -1]], axis=-1).reshape(-1, 2)
""",
        "no_push_anywhere_gives_no_interval": """
def diagnose_generator_loss(loss_fn, fraction):
    grid = np.linspace(-7.0, 7.0, 1401)
    push = -np.asarray(logit_gradient(loss_fn, jnp.asarray(grid, jnp.float32)), np.float64)
    weak = push < fraction * push.max()
    cuts = np.concatenate([[-7.0], 0.5 * (grid[1:] + grid[:-1]), [7.0]])
    edges = np.diff(np.concatenate([[0], weak.astype(int), [0]]))
    return np.stack([cuts[edges == 1], cuts[edges == -1]], axis=-1).reshape(-1, 2)
""",
        "threshold_from_the_push_at_logit_0": """
def diagnose_generator_loss(loss_fn, fraction):
    grid = np.linspace(-7.0, 7.0, 1401)
    push = -np.asarray(logit_gradient(loss_fn, jnp.asarray(grid, jnp.float32)), np.float64)
    weak = np.ones(grid.shape, bool) if push.max() <= 0 else push < fraction * abs(push[700])
    cuts = np.concatenate([[-7.0], 0.5 * (grid[1:] + grid[:-1]), [7.0]])
    edges = np.diff(np.concatenate([[0], weak.astype(int), [0]]))
    return np.stack([cuts[edges == 1], cuts[edges == -1]], axis=-1).reshape(-1, 2)
""",
        "grid_of_spacing_a_quarter": """
def diagnose_generator_loss(loss_fn, fraction):
    grid = np.linspace(-7.0, 7.0, 57)
    push = -np.asarray(logit_gradient(loss_fn, jnp.asarray(grid, jnp.float32)), np.float64)
    weak = np.ones(grid.shape, bool) if push.max() <= 0 else push < fraction * push.max()
    cuts = np.concatenate([[-7.0], 0.5 * (grid[1:] + grid[:-1]), [7.0]])
    edges = np.diff(np.concatenate([[0], weak.astype(int), [0]]))
    return np.stack([cuts[edges == 1], cuts[edges == -1]], axis=-1).reshape(-1, 2)
""",
        "endpoints_on_the_first_and_last_weak_point_of_a_coarse_grid": """
def diagnose_generator_loss(loss_fn, fraction):
    grid = np.linspace(-7.0, 7.0, 281)  # spacing 0.05
    push = -np.asarray(logit_gradient(loss_fn, jnp.asarray(grid, jnp.float32)), np.float64)
    weak = np.ones(grid.shape, bool) if push.max() <= 0 else push < fraction * push.max()
    edges = np.diff(np.concatenate([[0], weak.astype(int), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return np.stack([grid[starts], grid[stops]], axis=-1).reshape(-1, 2)
""",
        "only_the_first_interval": """
def diagnose_generator_loss(loss_fn, fraction):
    grid = np.linspace(-7.0, 7.0, 1401)
    push = -np.asarray(logit_gradient(loss_fn, jnp.asarray(grid, jnp.float32)), np.float64)
    weak = np.ones(grid.shape, bool) if push.max() <= 0 else push < fraction * push.max()
    cuts = np.concatenate([[-7.0], 0.5 * (grid[1:] + grid[:-1]), [7.0]])
    edges = np.diff(np.concatenate([[0], weak.astype(int), [0]]))
    found = np.stack([cuts[edges == 1], cuts[edges == -1]], axis=-1).reshape(-1, 2)
    return found[:1]
""",
    },
    "sliced_wasserstein": {
        "directions_not_normalised": """
def sliced_wasserstein(key, x, y, num_projections):
    directions = jax.random.normal(key, (num_projections, x.shape[1]))
    return jnp.mean(wasserstein_1d(directions @ x.T, directions @ y.T))
""",
        "directions_drawn_as_d_by_p": """
def sliced_wasserstein(key, x, y, num_projections):
    directions = jax.random.normal(key, (x.shape[1], num_projections))
    directions = directions / jnp.linalg.norm(directions, axis=0, keepdims=True)
    return jnp.mean(wasserstein_1d((x @ directions).T, (y @ directions).T))
""",
        "largest_projection": """
def sliced_wasserstein(key, x, y, num_projections):
    directions = jax.random.normal(key, (num_projections, x.shape[1]))
    directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    return jnp.max(wasserstein_1d(directions @ x.T, directions @ y.T))
""",
        "projections_along_the_wrong_axis": """
def sliced_wasserstein(key, x, y, num_projections):
    directions = jax.random.normal(key, (num_projections, x.shape[1]))
    directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    return jnp.mean(wasserstein_1d(x @ directions.T, y @ directions.T))
""",
    },
    "sliced_shift_factor": {
        "two_over_pi_in_every_dimension": """
def sliced_shift_factor(dim):
    return 2.0 / np.pi
""",
        "root_mean_square_not_mean": """
def sliced_shift_factor(dim):
    return 1.0 / np.sqrt(dim)
""",
        "large_dimension_limit_everywhere": """
def sliced_shift_factor(dim):
    return float(np.sqrt(2.0 / (np.pi * dim)))
""",
        "gamma_ratio_inverted": """
def sliced_shift_factor(dim):
    import math
    return math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2)) / math.sqrt(math.pi)
""",
        "gamma_without_logs_overflows": """
def sliced_shift_factor(dim):
    import math
    return math.gamma(dim / 2) / (math.sqrt(math.pi) * math.gamma((dim + 1) / 2))
""",
    },
}

CORRECT = {
    "generator_sample_grad": {
        "expit_of_plus_or_minus_the_logit": """
def generator_sample_grad(x, w, b, non_saturating=True):
    from scipy.special import expit
    x, w = np.asarray(x, dtype=float), np.asarray(w, dtype=float)
    logits = np.einsum("bd,d->b", x, w) + float(b)
    push = expit(-logits) if non_saturating else expit(logits)
    return -np.outer(push, w)
""",
        "stable_sigmoid_by_cases": """
def generator_sample_grad(x, w, b, non_saturating=True):
    def sigmoid(t):
        e = np.exp(-np.abs(t))
        return np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    logits = x @ w + np.float64(b)
    slope = -sigmoid(-logits) if non_saturating else -sigmoid(logits)
    return slope[:, None] * w
""",
    },
    "diagnose_generator_loss": {
        "vmap_over_single_logits_and_python_runs": """
def diagnose_generator_loss(loss_fn, fraction):
    grid = np.arange(-7.0, 7.0 + 1e-9, 0.02)
    slopes = jax.vmap(jax.grad(loss_fn))(jnp.asarray(grid[:, None], jnp.float32))[:, 0]
    push = -np.asarray(slopes, np.float64)
    weak = [True] * len(grid) if push.max() <= 0 else list(push < fraction * push.max())
    intervals, start = [], None
    for i, w in enumerate(weak + [False]):
        if w and start is None:
            start = -7.0 if i == 0 else 0.5 * (grid[i - 1] + grid[i])
        if not w and start is not None:
            intervals.append((start, 7.0 if i == len(grid) else 0.5 * (grid[i - 1] + grid[i])))
            start = None
    return np.array(intervals, dtype=float).reshape(-1, 2)
""",
        "coarse_scan_then_bisection": """
def diagnose_generator_loss(loss_fn, fraction):
    def push(s):
        s = jnp.atleast_1d(jnp.asarray(s, jnp.float32))
        return -np.asarray(s.size * jax.grad(loss_fn)(s), np.float64)
    grid = np.linspace(-7.0, 7.0, 281)  # spacing 0.05
    p = push(grid)
    if p.max() <= 0:
        return np.array([[-7.0, 7.0]])
    level = fraction * p.max()
    weak = p < level
    cuts = []
    for i in np.flatnonzero(weak[1:] != weak[:-1]):
        lo, hi = grid[i], grid[i + 1]
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if (push(np.array([mid]))[0] < level) == weak[i]:
                lo = mid
            else:
                hi = mid
        cuts.append(0.5 * (lo + hi))
    points = ([-7.0] if weak[0] else []) + cuts + ([7.0] if weak[-1] else [])
    return np.array(points, dtype=float).reshape(-1, 2)
""",
    },
    "sliced_shift_factor": {
        "recursion_in_steps_of_two": """
def sliced_shift_factor(dim):
    c, d = (1.0, 1) if dim % 2 else (2.0 / np.pi, 2)
    while d < dim:
        c, d = c * d / (d + 1), d + 2
    return c
""",
        "jax_gammaln_float32": """
def sliced_shift_factor(dim):
    from jax.scipy.special import gammaln
    return jnp.exp(gammaln(dim / 2.0) - gammaln((dim + 1) / 2.0)) / jnp.sqrt(jnp.pi)
""",
        "beta_function": """
def sliced_shift_factor(dim):
    import scipy.special
    return 1.0 / (dim - 1) / scipy.special.beta(0.5, (dim - 1) / 2) * 2 if dim > 1 else 1.0
""",
    },
    "bce_with_logits": {
        "log_sigmoid_pair": """
def bce_with_logits(logits, labels):
    return -(labels * jax.nn.log_sigmoid(logits) + (1 - labels) * jax.nn.log_sigmoid(-logits))
""",
        "softplus_minus_xy": """
def bce_with_logits(logits, labels):
    return jax.nn.softplus(logits) - logits * labels
""",
        "optax": """
def bce_with_logits(logits, labels):
    logits, labels = jnp.broadcast_arrays(jnp.asarray(logits), jnp.asarray(labels, jnp.float32))
    return optax.sigmoid_binary_cross_entropy(logits, labels)
""",
    },
    "discriminator_loss": {
        "log_sigmoid": """
def discriminator_loss(real_logits, fake_logits):
    return -jnp.mean(jax.nn.log_sigmoid(real_logits)) - jnp.mean(jax.nn.log_sigmoid(-fake_logits))
""",
        "optax_bce": """
def discriminator_loss(real_logits, fake_logits):
    bce = optax.sigmoid_binary_cross_entropy
    return (jnp.mean(bce(real_logits, jnp.ones_like(real_logits)))
            + jnp.mean(bce(fake_logits, jnp.zeros_like(fake_logits))))
""",
        "logaddexp": """
def discriminator_loss(real_logits, fake_logits):
    return jnp.mean(jnp.logaddexp(0.0, -real_logits)) + jnp.mean(jnp.logaddexp(0.0, fake_logits))
""",
    },
    "generator_loss": {
        "log_sigmoid": """
def generator_loss(fake_logits, non_saturating=True):
    if non_saturating:
        return -jnp.mean(jax.nn.log_sigmoid(fake_logits))
    return jnp.mean(jax.nn.log_sigmoid(-fake_logits))
""",
        "optax_bce": """
def generator_loss(fake_logits, non_saturating=True):
    bce = optax.sigmoid_binary_cross_entropy
    if non_saturating:
        return jnp.mean(bce(fake_logits, jnp.ones_like(fake_logits)))
    return -jnp.mean(bce(fake_logits, jnp.zeros_like(fake_logits)))
""",
    },
    "optimal_discriminator": {
        "divide_then_fill": """
def optimal_discriminator(p_data, p_g):
    p_data, p_g = jnp.broadcast_arrays(jnp.asarray(p_data), jnp.asarray(p_g))
    both_zero = (p_data == 0) & (p_g == 0)
    ratio = p_data / jnp.where(both_zero, 1.0, p_data + p_g)
    return jnp.where(both_zero, 0.5, ratio)
""",
        "one_plus_ratio": """
def optimal_discriminator(p_data, p_g):
    p_data, p_g = jnp.broadcast_arrays(jnp.asarray(p_data), jnp.asarray(p_g))
    total = p_data + p_g
    half_difference = (p_data - p_g) / jnp.where(total > 0, total, 1.0)
    return 0.5 + 0.5 * half_difference
""",
    },
    "kl_divergence": {
        "xlogy": """
def kl_divergence(p, q):
    xlogy = jax.scipy.special.xlogy
    return jnp.sum(xlogy(p, p) - xlogy(p, q), axis=-1)
""",
        "rel_entr": """
def kl_divergence(p, q):
    return jnp.sum(jax.scipy.special.rel_entr(p, q), axis=-1)
""",
    },
    "js_divergence": {
        "entropy_form": """
def js_divergence(p, q):
    def entropy(a):
        return -jnp.sum(jax.scipy.special.xlogy(a, a), axis=-1)
    return entropy(0.5 * (p + q)) - 0.5 * (entropy(p) + entropy(q))
""",
        "rel_entr": """
def js_divergence(p, q):
    m = 0.5 * (p + q)
    rel = jax.scipy.special.rel_entr
    return 0.5 * jnp.sum(rel(p, m), axis=-1) + 0.5 * jnp.sum(rel(q, m), axis=-1)
""",
    },
    "gan_value": {
        "xlogy": """
def gan_value(p_data, p_g, d):
    xlogy = jax.scipy.special.xlogy
    return jnp.sum(xlogy(p_data, d) + xlogy(p_g, 1 - d), axis=-1)
""",
        "xlog1py": """
def gan_value(p_data, p_g, d):
    special = jax.scipy.special
    return jnp.sum(special.xlogy(p_data, d), axis=-1) + jnp.sum(special.xlog1py(p_g, -d), axis=-1)
""",
    },
    "mode_coverage": {
        "chi_square_quantile_and_bincount": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    import scipy.stats
    sq = jnp.sum((samples[:, None, :] - centers[None]) ** 2, axis=-1)
    nearest = jnp.argmin(sq, axis=1)
    close = jnp.min(sq, axis=1) <= std**2 * scipy.stats.chi2.ppf(quality, df=2)
    counts = jnp.bincount(nearest, weights=close.astype(jnp.float32), length=centers.shape[0])
    return jnp.sum(counts >= min_count), jnp.mean(close)
""",
        "loop_over_modes_in_numpy": """
def mode_coverage(samples, centers, std, quality, min_count=1):
    samples, centers = np.asarray(samples), np.asarray(centers)
    radius = std * np.sqrt(2.0 * np.log(1.0 / (1.0 - quality)))
    distances = np.linalg.norm(samples[:, None, :] - centers[None], axis=-1)
    nearest = distances.argmin(axis=1)
    close = distances.min(axis=1) <= radius
    covered = 0
    for m in range(len(centers)):
        if np.sum(close & (nearest == m)) >= min_count:
            covered += 1
    return np.int32(covered), np.float32(close.mean())
""",
    },
    "wasserstein_1d": {
        "sum_over_n": """
def wasserstein_1d(x, y):
    n = x.shape[-1]
    return jnp.sum(jnp.abs(jnp.sort(x, axis=-1) - jnp.sort(y, axis=-1)), axis=-1) / n
""",
        "broadcast_first": """
def wasserstein_1d(x, y):
    x, y = jnp.broadcast_arrays(jnp.asarray(x), jnp.asarray(y))
    return jnp.abs(jnp.sort(y) - jnp.sort(x)).mean(-1)
""",
    },
    "gradient_penalty": {
        "vmap_per_example": """
def gradient_penalty(critic_fn, real, fake, key):
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    one = lambda x: jnp.sum(critic_fn(x[None]))
    grads = jax.vmap(jax.grad(one))(x_hat)
    norms = jnp.linalg.norm(grads.reshape(grads.shape[0], -1), axis=1)
    return jnp.mean(jnp.square(norms - 1.0))
""",
        "vjp_with_ones": """
def gradient_penalty(critic_fn, real, fake, key):
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = fake + eps * (real - fake)
    out, pullback = jax.vjp(critic_fn, x_hat)
    (grads,) = pullback(jnp.ones_like(out))
    axes = tuple(range(1, grads.ndim))
    return jnp.mean((jnp.sqrt(jnp.sum(grads * grads, axis=axes)) - 1.0) ** 2)
""",
    },
    "wgan_critic_loss": {
        "one_critic_call": """
def wgan_critic_loss(critic_fn, real, fake, key, gp_weight=10.0):
    scores = critic_fn(jnp.concatenate([fake, real])).reshape(2, real.shape[0], -1)
    penalty = gradient_penalty(critic_fn, real, fake, key)
    return jnp.mean(scores[0]) - jnp.mean(scores[1]) + gp_weight * penalty
""",
        "negated_wasserstein_estimate": """
def wgan_critic_loss(critic_fn, real, fake, key, gp_weight=10.0):
    w1_estimate = jnp.mean(critic_fn(real)) - jnp.mean(critic_fn(fake))
    penalty = gradient_penalty(critic_fn, real, fake, key)
    return -w1_estimate + gp_weight * penalty
""",
    },
    "gan_step": {
        "fakes_recomputed_grad_then_update": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    def d_objective(d, fake):
        return discriminator_loss(d(real), d(fake))
    fake = generator(z)
    d_loss = d_objective(discriminator, fake)
    opt_d.update(discriminator, nnx.grad(d_objective)(discriminator, fake))
    def g_objective(g, d):
        return generator_loss(d(g(z)))
    g_loss = g_objective(generator, discriminator)
    opt_g.update(generator, nnx.grad(g_objective)(generator, discriminator))
    return d_loss, g_loss
""",
        "jitted_with_optax_losses": """
@nnx.jit
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    bce = optax.sigmoid_binary_cross_entropy
    fake = jax.lax.stop_gradient(generator(z))
    def d_objective(d):
        r, f = d(real), d(fake)
        return jnp.mean(bce(r, jnp.ones_like(r))) + jnp.mean(bce(f, jnp.zeros_like(f)))
    d_loss, grads = nnx.value_and_grad(d_objective)(discriminator)
    opt_d.update(discriminator, grads)
    def g_objective(g):
        logits = discriminator(g(z))
        return jnp.mean(bce(logits, jnp.ones_like(logits)))
    g_loss, grads = nnx.value_and_grad(g_objective)(generator)
    opt_g.update(generator, grads)
    return d_loss, g_loss
""",
        "one_forward_pass_of_d_on_both_batches": """
def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    fake = jax.lax.stop_gradient(generator(z))
    both = jnp.concatenate([real, fake])
    def d_objective(d):
        logits = d(both)
        return discriminator_loss(logits[: real.shape[0]], logits[real.shape[0]:])
    d_loss, grads = nnx.value_and_grad(d_objective)(discriminator)
    opt_d.update(discriminator, grads)
    g_loss, grads = nnx.value_and_grad(
        lambda g, d: generator_loss(d(g(z))))(generator, discriminator)
    opt_g.update(generator, grads)
    return d_loss, g_loss
""",
    },
    "generator_grad_norm": {
        "optax_global_norm": """
def generator_grad_norm(g_objective, generator, discriminator, z):
    return optax.global_norm(nnx.grad(g_objective)(generator, discriminator, z))
""",
        "ravel_pytree": """
def generator_grad_norm(g_objective, generator, discriminator, z):
    grads = nnx.grad(g_objective)(generator, discriminator, z)
    flat, _ = jax.flatten_util.ravel_pytree(grads)
    return jnp.linalg.norm(flat)
""",
    },
    "logit_gradient": {
        "vjp": """
def logit_gradient(loss_fn, logits):
    _, pullback = jax.vjp(loss_fn, logits)
    return pullback(jnp.ones(()))[0] * logits.size
""",
        "loss_rescaled_first": """
def logit_gradient(loss_fn, logits):
    n = np.prod(logits.shape)
    return jax.grad(lambda l: n * loss_fn(l))(logits)
""",
    },
    "sliced_wasserstein": {
        "vmap_over_directions": """
def sliced_wasserstein(key, x, y, num_projections):
    directions = jax.random.normal(key, (num_projections, x.shape[1]))
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    one = lambda u: wasserstein_1d(x @ u, y @ u)
    return jnp.mean(jax.vmap(one)(directions))
""",
        "loop_with_einsum": """
def sliced_wasserstein(key, x, y, num_projections):
    directions = jax.random.normal(key, (num_projections, x.shape[1]))
    total = 0.0
    for u in directions:
        u = u / jnp.sqrt(jnp.sum(u * u))
        total = total + wasserstein_1d(jnp.einsum("nd,d->n", x, u), jnp.einsum("nd,d->n", y, u))
    return total / num_projections
""",
    },
}
