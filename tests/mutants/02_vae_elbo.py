"""Mutants of chapter 02's graded exercises (solutions/02_vae_elbo/02_vae_elbo.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources are executed in the
kernel after the solution notebook has run, so they may use what its imports cell defined:
``jax``, ``jnp``, ``np``, ``nnx`` and ``optax``.
"""

WRONG = {
    "gaussian_kl_standard": {
        "sign_error": """
def gaussian_kl_standard(mean, log_var):
    return -0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
""",
        "forgets_minus_one": """
def gaussian_kl_standard(mean, log_var):
    return 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - log_var, axis=-1)
""",
        "forgets_log_term": """
def gaussian_kl_standard(mean, log_var):
    return 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0, axis=-1)
""",
        "mean_over_dimensions": """
def gaussian_kl_standard(mean, log_var):
    return 0.5 * jnp.mean(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
""",
        "std_where_variance_belongs": """
def gaussian_kl_standard(mean, log_var):
    return 0.5 * jnp.sum(jnp.exp(0.5 * log_var) + mean**2 - 1.0 - 0.5 * log_var, axis=-1)
""",
        "missing_half": """
def gaussian_kl_standard(mean, log_var):
    return jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
""",
        "popular_formula": """
def gaussian_kl_standard(mean, log_var):
    std = jnp.exp(0.5 * log_var)
    return jnp.sum(mean * jnp.log(jnp.abs(mean) / std + 1e-12) + std - 1.0, axis=-1)
""",
    },
    "gaussian_kl": {
        "direction_swapped": """
def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    terms = log_var_q - log_var_p + (jnp.exp(log_var_p) + (mean_q - mean_p) ** 2) / jnp.exp(
        log_var_q) - 1.0
    return 0.5 * jnp.sum(terms, axis=-1)
""",
        "mean_term_not_scaled": """
def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    terms = log_var_p - log_var_q + jnp.exp(log_var_q - log_var_p) + (mean_q - mean_p) ** 2 - 1.0
    return 0.5 * jnp.sum(terms, axis=-1)
""",
        "log_ratio_sign": """
def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    terms = log_var_q - log_var_p + (jnp.exp(log_var_q) + (mean_q - mean_p) ** 2) / jnp.exp(
        log_var_p) - 1.0
    return 0.5 * jnp.sum(terms, axis=-1)
""",
        "mean_over_dimensions": """
def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    terms = log_var_p - log_var_q + (jnp.exp(log_var_q) + (mean_q - mean_p) ** 2) / jnp.exp(
        log_var_p) - 1.0
    return 0.5 * jnp.mean(terms, axis=-1)
""",
        "ignores_p": """
def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    return 0.5 * jnp.sum(jnp.exp(log_var_q) + mean_q**2 - 1.0 - log_var_q, axis=-1)
""",
    },
    "gaussian_log_likelihood": {
        "no_constant": """
def gaussian_log_likelihood(x, mean, log_var):
    return jnp.sum(-0.5 * (log_var + (x - mean) ** 2 / jnp.exp(log_var)), axis=-1)
""",
        "divides_by_std": """
def gaussian_log_likelihood(x, mean, log_var):
    per_dim = -0.5 * (jnp.log(2 * jnp.pi) + log_var + (x - mean) ** 2 / jnp.exp(0.5 * log_var))
    return jnp.sum(per_dim, axis=-1)
""",
        "mean_over_dimensions": """
def gaussian_log_likelihood(x, mean, log_var):
    per_dim = -0.5 * (jnp.log(2 * jnp.pi) + log_var + (x - mean) ** 2 / jnp.exp(log_var))
    return jnp.mean(per_dim, axis=-1)
""",
        "log_var_not_halved": """
def gaussian_log_likelihood(x, mean, log_var):
    per_dim = -0.5 * jnp.log(2 * jnp.pi) - log_var - 0.5 * (x - mean) ** 2 / jnp.exp(log_var)
    return jnp.sum(per_dim, axis=-1)
""",
        "log_var_as_std": """
def gaussian_log_likelihood(x, mean, log_var):
    return jax.scipy.stats.norm.logpdf(x, mean, log_var).sum(-1)
""",
    },
    "bernoulli_log_likelihood": {
        "naive_log_sigmoid": """
def bernoulli_log_likelihood(x, logits):
    p = jax.nn.sigmoid(logits)
    return jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log(1 - p), axis=-1)
""",
        "binary_cross_entropy_sign": """
def bernoulli_log_likelihood(x, logits):
    per_dim = x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits)
    return -jnp.sum(per_dim, axis=-1)
""",
        "mean_over_dimensions": """
def bernoulli_log_likelihood(x, logits):
    per_dim = x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits)
    return jnp.mean(per_dim, axis=-1)
""",
        "forgets_the_zeros": """
def bernoulli_log_likelihood(x, logits):
    return jnp.sum(x * jax.nn.log_sigmoid(logits), axis=-1)
""",
        "sigmoid_of_wrong_sign": """
def bernoulli_log_likelihood(x, logits):
    per_dim = x * jax.nn.log_sigmoid(-logits) + (1 - x) * jax.nn.log_sigmoid(logits)
    return jnp.sum(per_dim, axis=-1)
""",
    },
    "reparameterize": {
        "exp_log_var_as_std": """
def reparameterize(key, mean, log_var):
    return mean + jnp.exp(log_var) * jax.random.normal(key, mean.shape)
""",
        "log_var_as_std": """
def reparameterize(key, mean, log_var):
    return mean + log_var * jax.random.normal(key, mean.shape)
""",
        "splits_the_key": """
def reparameterize(key, mean, log_var):
    _, sub = jax.random.split(key)
    return mean + jnp.exp(0.5 * log_var) * jax.random.normal(sub, mean.shape)
""",
        "one_noise_per_row": """
def reparameterize(key, mean, log_var):
    eps = jax.random.normal(key, mean.shape[-1:])
    return mean + jnp.exp(0.5 * log_var) * eps
""",
        "uniform_noise": """
def reparameterize(key, mean, log_var):
    eps = jax.random.uniform(key, mean.shape, minval=-1.7320508, maxval=1.7320508)
    return mean + jnp.exp(0.5 * log_var) * eps
""",
    },
    "score_function_grad": {
        "with_a_baseline": """
def score_function_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    z = theta + eps
    f = z**2
    return jnp.mean((f - jnp.mean(f, axis=0)) * (z - theta), axis=0)
""",
        "forgets_the_score": """
def score_function_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    return jnp.mean((theta + eps) ** 2, axis=0)
""",
        "score_is_z": """
def score_function_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    z = theta + eps
    return jnp.mean(z**2 * z, axis=0)
""",
        "sum_instead_of_mean": """
def score_function_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    z = theta + eps
    return jnp.sum(z**2 * (z - theta), axis=0)
""",
        "reparameterization_instead": """
def score_function_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    return jnp.mean(2.0 * (theta + eps), axis=0)
""",
    },
    "reparameterization_grad": {
        "function_value_not_gradient": """
def reparameterization_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    return jnp.mean((theta + eps) ** 2, axis=0)
""",
        "forgets_theta": """
def reparameterization_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    return jnp.mean(2.0 * eps, axis=0)
""",
        "missing_factor_two": """
def reparameterization_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    return jnp.mean(theta + eps, axis=0)
""",
        "noise_shape_transposed": """
def reparameterization_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (*theta.shape, num_samples))
    return jnp.mean(2.0 * (theta[..., None] + eps), axis=-1)
""",
    },
    "iwae_bound": {
        "mean_of_log_weights": """
def iwae_bound(log_weights):
    return jnp.mean(log_weights, axis=0)
""",
        "forgets_log_k": """
def iwae_bound(log_weights):
    return jax.nn.logsumexp(log_weights, axis=0)
""",
        "naive_exp": """
def iwae_bound(log_weights):
    return jnp.log(jnp.mean(jnp.exp(log_weights), axis=0))
""",
        "wrong_axis": """
def iwae_bound(log_weights):
    return jax.nn.logsumexp(log_weights, axis=-1) - jnp.log(log_weights.shape[-1])
""",
        "max_weight_only": """
def iwae_bound(log_weights):
    return jnp.max(log_weights, axis=0) - jnp.log(log_weights.shape[0])
""",
        "max_trick_nan_on_all_minus_inf": """
def iwae_bound(log_weights):
    m = jnp.max(log_weights, axis=0)
    return m + jnp.log(jnp.mean(jnp.exp(log_weights - m), axis=0))
""",
    },
    "elbo": {
        "kl_added": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    logits = decode(z)
    rec = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, -1)
    return rec + beta * kl
""",
        "beta_on_reconstruction": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    logits = decode(z)
    rec = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, -1)
    return beta * rec - kl
""",
        "decodes_the_mean": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    logits = decode(mean)
    rec = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, -1)
    return rec - beta * kl
""",
        "averaged_over_batch": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    logits = decode(z)
    rec = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, -1)
    return jnp.mean(rec - beta * kl)
""",
        "kl_averaged_over_latents": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    logits = decode(z)
    rec = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    kl = 0.5 * jnp.mean(jnp.exp(log_var) + mean**2 - 1.0 - log_var, -1)
    return rec - beta * kl
""",
        "exp_log_var_as_std": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    z = mean + jnp.exp(log_var) * jax.random.normal(key, mean.shape)
    logits = decode(z)
    rec = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, -1)
    return rec - beta * kl
""",
        "beta_as_python_float": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    logits = decode(z)
    rec = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, -1)
    return rec - float(beta) * kl
""",
    },
}

CORRECT = {
    "gaussian_kl_standard": {
        "textbook_sign": """
def gaussian_kl_standard(mean, log_var):
    return -0.5 * jnp.sum(1.0 + log_var - jnp.square(mean) - jnp.exp(log_var), axis=-1)
""",
        "expm1": """
def gaussian_kl_standard(mean, log_var):
    return 0.5 * (jnp.sum(jnp.expm1(log_var) - log_var, axis=-1) + jnp.sum(mean * mean, axis=-1))
""",
    },
    "gaussian_kl": {
        "variances": """
def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    var_q, var_p = jnp.exp(log_var_q), jnp.exp(log_var_p)
    terms = jnp.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0
    return 0.5 * jnp.sum(terms, axis=-1)
""",
        "cross_entropy_minus_entropy": """
def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    cross = 0.5 * (jnp.log(2 * jnp.pi) + log_var_p
                   + (jnp.exp(log_var_q) + (mean_q - mean_p) ** 2) * jnp.exp(-log_var_p))
    entropy = 0.5 * (jnp.log(2 * jnp.pi) + log_var_q + 1.0)
    return jnp.sum(cross - entropy, axis=-1)
""",
    },
    "gaussian_log_likelihood": {
        "scipy_norm": """
def gaussian_log_likelihood(x, mean, log_var):
    return jnp.sum(jax.scipy.stats.norm.logpdf(x, mean, jnp.exp(0.5 * log_var)), axis=-1)
""",
        "standardized": """
def gaussian_log_likelihood(x, mean, log_var):
    u = (x - mean) * jnp.exp(-0.5 * log_var)
    return -0.5 * jnp.sum(u**2 + log_var + np.log(2 * np.pi), axis=-1)
""",
    },
    "bernoulli_log_likelihood": {
        "softplus": """
def bernoulli_log_likelihood(x, logits):
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)
""",
        "optax_bce": """
def bernoulli_log_likelihood(x, logits):
    return -jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)
""",
    },
    "reparameterize": {
        "sqrt_of_variance": """
def reparameterize(key, mean, log_var):
    std = jnp.sqrt(jnp.exp(log_var))
    return mean + std * jax.random.normal(key, mean.shape)
""",
        "explicit_dtype": """
def reparameterize(key, mean, log_var):
    eps = jax.random.normal(key, mean.shape, dtype=mean.dtype)
    return eps * jnp.exp(log_var / 2) + mean
""",
    },
    "score_function_grad": {
        "eps_is_the_score": """
def score_function_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    return jnp.mean((theta + eps) ** 2 * eps, axis=0)
""",
        "score_by_autodiff": """
def score_function_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    z = theta + eps
    score = jax.vmap(lambda zi: jax.grad(
        lambda t: jnp.sum(jax.scipy.stats.norm.logpdf(zi, t, 1.0)))(theta))(z)
    return jnp.mean(z**2 * score, axis=0)
""",
    },
    "reparameterization_grad": {
        "jax_grad": """
def reparameterization_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    return jax.grad(lambda t: jnp.sum(jnp.mean((t + eps) ** 2, axis=0)))(theta)
""",
        "closed_form_mean": """
def reparameterization_grad(key, theta, num_samples):
    eps = jax.random.normal(key, (num_samples, *theta.shape))
    return 2.0 * theta + 2.0 * eps.mean(axis=0)
""",
    },
    "iwae_bound": {
        "scipy_logsumexp_b": """
def iwae_bound(log_weights):
    k = log_weights.shape[0]
    return jax.scipy.special.logsumexp(log_weights, axis=0, b=1.0 / k)
""",
        "max_trick_by_hand": """
def iwae_bound(log_weights):
    m = jnp.max(log_weights, axis=0)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return m + jnp.log(jnp.mean(jnp.exp(log_weights - m), axis=0))
""",
    },
    "elbo": {
        "softplus_and_textbook_kl": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    eps = jax.random.normal(key, mean.shape)
    logits = decode(mean + jnp.sqrt(jnp.exp(log_var)) * eps)
    log_lik = jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)
    kl = -0.5 * jnp.sum(1.0 + log_var - mean**2 - jnp.exp(log_var), axis=-1)
    return log_lik - beta * kl
""",
        "optax_bce": """
def elbo(key, x, encode, decode, beta=1.0):
    mu, lv = encode(x)
    z = mu + jnp.exp(lv / 2) * jax.random.normal(key, mu.shape)
    rec = -optax.sigmoid_binary_cross_entropy(decode(z), x).sum(-1)
    return rec - beta * 0.5 * (jnp.exp(lv) + mu**2 - 1 - lv).sum(-1)
""",
        "calls_the_chapter_helpers": """
def elbo(key, x, encode, decode, beta=1.0):
    mean, log_var = encode(x)
    z = reparameterize(key, mean, log_var)
    return bernoulli_log_likelihood(x, decode(z)) - beta * gaussian_kl_standard(mean, log_var)
""",
    },
}
