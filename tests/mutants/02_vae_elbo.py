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
        "trapezoid_on_a_fixed_grid": """
def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    grid = jnp.linspace(-40.0, 40.0, 4001)
    s_q, s_p = jnp.exp(log_var_q / 2)[..., None], jnp.exp(log_var_p / 2)[..., None]
    log_q = jax.scipy.stats.norm.logpdf(grid, mean_q[..., None], s_q)
    log_p = jax.scipy.stats.norm.logpdf(grid, mean_p[..., None], s_p)
    return jnp.trapezoid(jnp.exp(log_q) * (log_q - log_p), grid, axis=-1).sum(-1)
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
        "arrays_only": """
def gaussian_log_likelihood(x, mean, log_var):
    var = jnp.exp(log_var.astype(x.dtype))
    per_dim = -0.5 * (jnp.log(2 * jnp.pi) + log_var + (x - mean) ** 2 / var)
    return jnp.sum(per_dim, axis=-1)
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
    "vae_train_step": {
        "forgets_the_update": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    x = jnp.where(valid[:, None], x, 0.0)
    def loss_fn(m):
        values = elbo(key, x, m.encode, m.decode, beta)
        return -jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    return loss
""",
        "weighted_mean_of_the_raw_batch": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    w = jnp.ones(x.shape[0]) if valid is None else valid.astype(jnp.float32)
    def loss_fn(m):  # the padded rows' values are multiplied by 0, but 0 * NaN is NaN
        return -jnp.sum(w * elbo(key, x, m.encode, m.decode, beta)) / jnp.sum(w)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "masks_the_values_but_not_the_inputs": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    def loss_fn(m):  # a finite loss, but NaN reaches the gradient through the unused branch
        values = elbo(key, x, m.encode, m.decode, beta)
        return -jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "divides_by_the_padded_batch_size": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    x = jnp.where(valid[:, None], x, 0.0)
    def loss_fn(m):
        values = elbo(key, x, m.encode, m.decode, beta)
        return -jnp.mean(jnp.where(valid, values, 0.0))
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "cleans_the_padding_but_averages_every_row": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    x = jnp.where(valid[:, None], x, 0.0)
    loss_fn = lambda m: -jnp.mean(elbo(key, x, m.encode, m.decode, beta))
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "seed_loss_kl_decoder_vs_data": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    def loss_fn(m):  # KL(p(x|z) || p(x)) on prior samples: the encoder is never used
        z = jax.random.normal(key, (x.shape[0], m.config.latent_dim))
        p = jax.nn.sigmoid(m.decode(z))
        q = jnp.clip(jnp.mean(x, axis=0), 1e-3, 1 - 1e-3)
        kl = p * jnp.log(p / q) + (1 - p) * jnp.log((1 - p) / (1 - q))
        return jnp.mean(jnp.sum(kl, axis=-1))
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "ascends_the_loss": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    x = jnp.where(valid[:, None], x, 0.0)
    def loss_fn(m):
        values = elbo(key, x, m.encode, m.decode, beta)
        return jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return -loss
""",
        "encoder_detached": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    x = jnp.where(valid[:, None], x, 0.0)
    def loss_fn(m):
        encode = lambda v: jax.tree_util.tree_map(jax.lax.stop_gradient, m.encode(v))
        values = elbo(key, x, encode, m.decode, beta)
        return -jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "ignores_beta": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    x = jnp.where(valid[:, None], x, 0.0)
    def loss_fn(m):
        values = elbo(key, x, m.encode, m.decode)
        return -jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "returns_the_loss_after_the_update": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    x = jnp.where(valid[:, None], x, 0.0)
    def loss_fn(m):
        values = elbo(key, x, m.encode, m.decode, beta)
        return -jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)
    optimizer.update(model, nnx.grad(loss_fn)(model))
    return loss_fn(model)
""",
        "sum_over_the_batch": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    valid = jnp.ones(x.shape[0], bool) if valid is None else valid
    x = jnp.where(valid[:, None], x, 0.0)
    def loss_fn(m):
        values = elbo(key, x, m.encode, m.decode, beta)
        return -jnp.sum(jnp.where(valid, values, 0.0))
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
    },
    "encoder_decoder_grad_norms": {
        "squared_norms": """
def encoder_decoder_grad_norms(loss_fn, model, batch):
    grads = nnx.grad(loss_fn)(model, batch)
    return tuple(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grads[p]))
                 for p in ("encoder", "decoder"))
""",
        "whole_model_norm_twice": """
def encoder_decoder_grad_norms(loss_fn, model, batch):
    grads = nnx.grad(loss_fn)(model, batch)
    n = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grads)))
    return n, n
""",
        "largest_entry": """
def encoder_decoder_grad_norms(loss_fn, model, batch):
    grads = nnx.grad(loss_fn)(model, batch)
    return tuple(max(jnp.max(jnp.abs(g)) for g in jax.tree_util.tree_leaves(grads[p]))
                 for p in ("encoder", "decoder"))
""",
        "sum_of_per_array_norms": """
def encoder_decoder_grad_norms(loss_fn, model, batch):
    grads = nnx.grad(loss_fn)(model, batch)
    return tuple(sum(jnp.linalg.norm(g.ravel()) for g in jax.tree_util.tree_leaves(grads[p]))
                 for p in ("encoder", "decoder"))
""",
        "swapped": """
def encoder_decoder_grad_norms(loss_fn, model, batch):
    grads = nnx.grad(loss_fn)(model, batch)
    return tuple(optax.global_norm(grads[p]) for p in ("decoder", "encoder"))
""",
    },
    "kl_direction": {
        "equal_variances_only": """
def kl_direction(kl_fn):
    rng = np.random.default_rng(0)
    mq, vq, mp = (jnp.asarray(rng.uniform(-3, 3, (50, 3)), jnp.float32) for _ in range(3))
    got = np.asarray(kl_fn(mq, vq, mp, vq))
    if np.allclose(got, gaussian_kl(mq, vq, mp, vq), rtol=1e-3, atol=1e-4):
        return "forward"
    if np.allclose(got, gaussian_kl(mp, vq, mq, vq), rtol=1e-3, atol=1e-4):
        return "reverse"
    return "neither"
""",
        "one_dimension_only": """
def kl_direction(kl_fn):
    rng = np.random.default_rng(0)
    mq, vq, mp, vp = (jnp.asarray(rng.uniform(-3, 3, (200, 1)), jnp.float32) for _ in range(4))
    got = np.asarray(kl_fn(mq, vq, mp, vp))
    if np.allclose(got, gaussian_kl(mq, vq, mp, vp), rtol=1e-3, atol=1e-4):
        return "forward"
    if np.allclose(got, gaussian_kl(mp, vp, mq, vq), rtol=1e-3, atol=1e-4):
        return "reverse"
    return "neither"
""",
        "p_is_the_prior": """
def kl_direction(kl_fn):
    rng = np.random.default_rng(0)
    mq, vq = (jnp.asarray(rng.uniform(-3, 3, (50, 3)), jnp.float32) for _ in range(2))
    zero = jnp.zeros_like(mq)
    got = np.asarray(kl_fn(mq, vq, zero, zero))
    if np.allclose(got, gaussian_kl(mq, vq, zero, zero), rtol=1e-3, atol=1e-4):
        return "forward"
    if np.allclose(got, gaussian_kl(zero, zero, mq, vq), rtol=1e-3, atol=1e-4):
        return "reverse"
    return "neither"
""",
        "exact_equality": """
def kl_direction(kl_fn):
    rng = np.random.default_rng(0)
    mq, vq, mp, vp = (jnp.asarray(rng.uniform(-3, 3, (50, 3)), jnp.float32) for _ in range(4))
    got = np.asarray(kl_fn(mq, vq, mp, vp))
    if np.array_equal(got, np.asarray(gaussian_kl(mq, vq, mp, vp))):
        return "forward"
    if np.array_equal(got, np.asarray(gaussian_kl(mp, vp, mq, vq))):
        return "reverse"
    return "neither"
""",
        "closest_direction_never_neither": """
def kl_direction(kl_fn):
    rng = np.random.default_rng(0)
    mq, vq, mp, vp = (jnp.asarray(rng.uniform(-3, 3, (50, 3)), jnp.float32) for _ in range(4))
    got = np.asarray(kl_fn(mq, vq, mp, vp))
    forward = np.max(np.abs(got - np.asarray(gaussian_kl(mq, vq, mp, vp))))
    reverse = np.max(np.abs(got - np.asarray(gaussian_kl(mp, vp, mq, vq))))
    return "forward" if forward <= reverse else "reverse"
""",
        "the_text_pair_only": """
def kl_direction(kl_fn):
    q_and_p = (jnp.array([1.0]), jnp.array([0.0]), jnp.array([0.0]), jnp.array([np.log(4.0)]))
    got = float(kl_fn(*q_and_p))
    if abs(got - 0.4431) < 1e-3:
        return "forward"
    return "reverse" if abs(got - 1.3069) < 1e-3 else "neither"
""",
    },
    "kl_diagnostics": {
        "the_texts_points_only": """
def kl_diagnostics(kl_fn):
    found = set()
    prior = np.asarray(kl_fn(jnp.zeros((1, 1)), jnp.zeros((1, 1))))
    if not np.all(np.isfinite(prior)):
        found |= {"nonzero at the prior", "not finite"}
    elif np.abs(prior).max() > 1e-5:
        found.add("nonzero at the prior")
    mus = jnp.linspace(-2.0, 2.0, 401)[:, None]
    values = np.asarray(kl_fn(mus, jnp.zeros_like(mus)))
    if not np.all(np.isfinite(values)):
        found.add("not finite")
    if np.any(values[np.isfinite(values)] < -1e-5):
        found.add("negative")
    return found
""",
        "nonnegative_means_only": """
def kl_diagnostics(kl_fn):
    found = set()
    prior = np.asarray(kl_fn(jnp.zeros((1, 1)), jnp.zeros((1, 1))))
    if not np.all(np.isfinite(prior)):
        found |= {"nonzero at the prior", "not finite"}
    elif np.abs(prior).max() > 1e-5:
        found.add("nonzero at the prior")
    m, v = jnp.meshgrid(jnp.linspace(0.0, 3.0, 31), jnp.linspace(-3.0, 3.0, 61))
    values = np.asarray(kl_fn(m[..., None], v[..., None]))
    if not np.all(np.isfinite(values)):
        found.add("not finite")
    if np.any(values[np.isfinite(values)] < -1e-5):
        found.add("negative")
    return found
""",
        "nan_at_the_prior_missed": """
def kl_diagnostics(kl_fn):
    found = set()
    prior = np.asarray(kl_fn(jnp.zeros((1, 1)), jnp.zeros((1, 1))))
    if np.abs(prior).max() > 1e-5:
        found.add("nonzero at the prior")
    m, v = jnp.meshgrid(jnp.linspace(-3.0, 3.0, 61), jnp.linspace(-3.0, 3.0, 61))
    values = np.asarray(kl_fn(m[..., None], v[..., None]))
    if not np.all(np.isfinite(values)):
        found.add("not finite")
    if np.any(values[np.isfinite(values)] < -1e-5):
        found.add("negative")
    return found
""",
        "minimum_through_nan": """
def kl_diagnostics(kl_fn):
    found = set()
    prior = np.asarray(kl_fn(jnp.zeros((1, 1)), jnp.zeros((1, 1))))
    if not np.all(np.isfinite(prior)):
        found |= {"nonzero at the prior", "not finite"}
    elif np.abs(prior).max() > 1e-5:
        found.add("nonzero at the prior")
    m, v = jnp.meshgrid(jnp.linspace(-3.0, 3.0, 61), jnp.linspace(-3.0, 3.0, 61))
    values = np.asarray(kl_fn(m[..., None], v[..., None]))
    if not np.all(np.isfinite(values)):
        found.add("not finite")
    if np.min(values) < -1e-5:
        found.add("negative")
    return found
""",
    },
    "log_normalizer": {
        "mean_not_sum": """
def log_normalizer(log_likelihood, logits):
    d = logits.shape[0]
    x = (jnp.arange(2**d)[:, None] >> jnp.arange(d)) & 1
    lp = log_likelihood(x.astype(jnp.float32), logits)
    return jax.nn.logsumexp(lp) - jnp.log(2.0**d)
""",
        "naive_exp": """
def log_normalizer(log_likelihood, logits):
    d = logits.shape[0]
    x = (jnp.arange(2**d)[:, None] >> jnp.arange(d)) & 1
    return jnp.log(jnp.sum(jnp.exp(log_likelihood(x.astype(jnp.float32), logits))))
""",
        "misses_the_last_bit": """
def log_normalizer(log_likelihood, logits):
    d = logits.shape[0]
    x = (jnp.arange(2 ** (d - 1))[:, None] >> jnp.arange(d)) & 1
    return jax.nn.logsumexp(log_likelihood(x.astype(jnp.float32), logits))
""",
        "one_hot_images_only": """
def log_normalizer(log_likelihood, logits):
    x = jnp.eye(logits.shape[0])
    return jax.nn.logsumexp(log_likelihood(x, logits))
""",
    },
    "smallest_kl": {
        "one_coarse_grid": """
def smallest_kl(head, low, high):
    a, b = jnp.meshgrid(jnp.linspace(low, high, 61), jnp.linspace(low, high, 61))
    mean, log_var = head(a, b)
    return jnp.min(gaussian_kl_standard(mean[..., None], log_var[..., None]))
""",
        "corners_only": """
def smallest_kl(head, low, high):
    a, b = jnp.meshgrid(jnp.array([low, high]), jnp.array([low, high]))
    mean, log_var = head(a, b)
    return jnp.min(gaussian_kl_standard(mean[..., None], log_var[..., None]))
""",
        "diagonal_pairs_only": """
def smallest_kl(head, low, high):
    a = jnp.linspace(low, high, 100_001)
    mean, log_var = head(a, a)
    return jnp.min(gaussian_kl_standard(mean[:, None], log_var[:, None]))
""",
        "zoom_leaves_the_box": """
def smallest_kl(head, low, high):
    ca = cb = (low + high) / 2
    width, best = (high - low) / 2, jnp.inf
    for _ in range(40):
        steps = width * jnp.linspace(-1, 1, 41)
        a, b = jnp.meshgrid(ca + steps, cb + steps)
        mean, log_var = head(a, b)
        values = gaussian_kl_standard(mean[..., None], log_var[..., None])
        i = jnp.argmin(values)
        best, ca, cb = jnp.minimum(best, values.ravel()[i]), a.ravel()[i], b.ravel()[i]
        width = width / 2
    return best
""",
        "second_output_as_sigma": """
def smallest_kl(head, low, high):
    ca = cb = (low + high) / 2
    width, best = (high - low) / 2, jnp.inf
    for _ in range(40):
        a, b = jnp.meshgrid(jnp.clip(ca + width * jnp.linspace(-1, 1, 41), low, high),
                            jnp.clip(cb + width * jnp.linspace(-1, 1, 41), low, high))
        mean, sigma = head(a, b)
        values = 0.5 * (sigma**2 + mean**2 - 1.0 - 2.0 * jnp.log(jnp.abs(sigma)))
        i = jnp.argmin(values)
        best, ca, cb = jnp.minimum(best, values.ravel()[i]), a.ravel()[i], b.ravel()[i]
        width = width / 2
    return best
""",
        "largest_not_smallest": """
def smallest_kl(head, low, high):
    a, b = jnp.meshgrid(jnp.linspace(low, high, 401), jnp.linspace(low, high, 401))
    mean, log_var = head(a, b)
    return jnp.max(gaussian_kl_standard(mean[..., None], log_var[..., None]))
""",
    },
    "active_latents": {
        "standard_deviation": """
def active_latents(mean, threshold=0.01):
    return jnp.std(mean, axis=0) > threshold
""",
        "sample_variance": """
def active_latents(mean, threshold=0.01):
    return jnp.var(mean, axis=0, ddof=1) > threshold
""",
        "wrong_axis": """
def active_latents(mean, threshold=0.01):
    return jnp.var(mean, axis=1) > threshold
""",
        "at_least_the_threshold": """
def active_latents(mean, threshold=0.01):
    return jnp.var(mean, axis=0) >= threshold
""",
    },
    "elbo_gap": {
        "reversed_kl": """
def elbo_gap(x, weight, bias, noise_var, mean_q, log_var_q):
    from genlab.vae import linear_gaussian_posterior
    pm, pc = linear_gaussian_posterior(x, weight, bias, noise_var)
    z = weight.shape[1]
    inv_q = jnp.exp(-log_var_q)
    d = pm - mean_q
    return 0.5 * ((jnp.diag(pc) * inv_q).sum(-1) + (d * d * inv_q).sum(-1) - z
                  + log_var_q.sum(-1) - jnp.linalg.slogdet(pc)[1])
""",
        "diagonal_posterior_only": """
def elbo_gap(x, weight, bias, noise_var, mean_q, log_var_q):
    from genlab.vae import linear_gaussian_posterior
    pm, pc = linear_gaussian_posterior(x, weight, bias, noise_var)
    lv = jnp.log(jnp.diag(pc))
    t = lv - log_var_q + (jnp.exp(log_var_q) + (mean_q - pm) ** 2) * jnp.exp(-lv) - 1.0
    return 0.5 * jnp.sum(t, axis=-1)
""",
        "forgets_the_spread_term": """
def elbo_gap(x, weight, bias, noise_var, mean_q, log_var_q):
    from genlab.vae import linear_gaussian_log_marginal
    d = weight.shape[0]
    r = x - mean_q @ weight.T - bias
    log_lik = -0.5 * (d * jnp.log(2 * jnp.pi * noise_var) + jnp.sum(r**2, -1) / noise_var)
    kl = 0.5 * jnp.sum(jnp.exp(log_var_q) + mean_q**2 - 1.0 - log_var_q, -1)
    return linear_gaussian_log_marginal(x, weight, bias, noise_var) - (log_lik - kl)
""",
        "forgets_the_log_determinants": """
def elbo_gap(x, weight, bias, noise_var, mean_q, log_var_q):
    from genlab.vae import linear_gaussian_posterior
    pm, pc = linear_gaussian_posterior(x, weight, bias, noise_var)
    prec = jnp.linalg.inv(pc)
    d = pm - mean_q
    tr = jnp.exp(log_var_q) @ jnp.diag(prec)
    return 0.5 * (tr + jnp.einsum("...i,ij,...j->...", d, prec, d) - weight.shape[1])
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
    "vae_train_step": {
        "weights_after_a_neutral_fill_and_nnx_grad": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    if valid is None:
        valid = jnp.ones(x.shape[0], bool)
    weights = valid.astype(jnp.float32)
    x = jnp.where(valid[:, None], x, 0.5)  # any finite fill: the weights drop these rows
    def negative_elbo(m):
        values = elbo(key, x, m.encode, m.decode, beta=beta)
        return -jnp.sum(weights * values) / jnp.sum(weights)
    loss = negative_elbo(model)
    optimizer.update(model, nnx.grad(negative_elbo)(model))
    return loss
""",
        "decorated_with_nnx_jit": """
@nnx.jit
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    if valid is None:
        valid = jnp.ones(x.shape[0], bool)
    x = jnp.where(valid[:, None], x, 0.0)
    def loss_fn(m):
        values = elbo(key, x, m.encode, m.decode, beta)
        return -jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "copies_a_valid_row_and_jax_grad": """
def vae_train_step(model, optimizer, x, key, beta=1.0, valid=None):
    if valid is None:
        valid = jnp.ones(x.shape[0], bool)
    first_valid = x[jnp.argmax(valid)]  # (D,) a real row stands in for every padded one
    x = jnp.where(valid[:, None], x, first_valid)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    def loss_fn(p):
        m = nnx.merge(graphdef, p, rest)
        values = elbo(key, x, m.encode, m.decode, beta)
        return -jnp.where(valid, values, 0.0).sum() / valid.sum()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    optimizer.update(model, grads)
    return loss
""",
    },
    "encoder_decoder_grad_norms": {
        "optax_global_norm": """
def encoder_decoder_grad_norms(loss_fn, model, batch):
    grads = nnx.grad(loss_fn)(model, batch)
    return optax.global_norm(grads["encoder"]), optax.global_norm(grads["decoder"])
""",
        "ravel_pytree": """
def encoder_decoder_grad_norms(loss_fn, model, batch):
    from jax.flatten_util import ravel_pytree
    _, grads = nnx.value_and_grad(loss_fn)(model, batch)
    flat_enc, _ = ravel_pytree(grads["encoder"])
    flat_dec, _ = ravel_pytree(grads["decoder"])
    return jnp.linalg.norm(flat_enc), jnp.linalg.norm(flat_dec)
""",
        "grad_of_split_parts": """
def encoder_decoder_grad_norms(loss_fn, model, batch):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest), batch))(params)
    sq = lambda t: sum(jnp.vdot(g, g) for g in jax.tree_util.tree_leaves(t))
    return jnp.sqrt(sq(grads["encoder"])), jnp.sqrt(sq(grads["decoder"]))
""",
    },
    "kl_direction": {
        "float64_closed_form": """
def kl_direction(kl_fn):
    def kl64(m1, v1, m2, v2):
        return 0.5 * np.sum(v2 - v1 + (np.exp(v1) + (m1 - m2) ** 2) / np.exp(v2) - 1.0, axis=-1)

    rng = np.random.default_rng(11)
    fits = {"forward": [], "reverse": []}
    for z in (1, 2, 5):
        inputs = rng.uniform(-3, 3, size=(4, 30, z)).astype(np.float32)
        got = np.asarray(kl_fn(*map(jnp.asarray, inputs)), np.float64)
        m1, v1, m2, v2 = inputs.astype(np.float64)
        for name, want in [("forward", kl64(m1, v1, m2, v2)), ("reverse", kl64(m2, v2, m1, v1))]:
            close = np.abs(got - want) <= 1e-3 + 1e-3 * np.abs(want)
            ok = got.shape == want.shape and np.all(close)
            fits[name].append(bool(ok))
    for name in ("forward", "reverse"):
        if all(fits[name]):
            return name
    return "neither"
""",
        "jax_random_relative_error": """
def kl_direction(kl_fn):
    keys = jax.random.split(jax.random.key(3), 4)
    q_and_p = [jax.random.uniform(k, (6, 40, 3), minval=-3.0, maxval=3.0) for k in keys]
    mq, vq, mp, vp = q_and_p
    got = kl_fn(mq, vq, mp, vp)
    for verdict, want in (("forward", gaussian_kl(mq, vq, mp, vp)),
                          ("reverse", gaussian_kl(mp, vp, mq, vq))):
        relative = float(jnp.max(jnp.abs(got - want) / (1.0 + want)))
        if jnp.shape(got) == want.shape and relative < 1e-3:
            return verdict
    return "neither"
""",
    },
    "kl_diagnostics": {
        "random_search": """
def kl_diagnostics(kl_fn):
    k1, k2 = jax.random.split(jax.random.key(0))
    mean = jax.random.uniform(k1, (20_000, 1), minval=-3.0, maxval=3.0)
    log_var = jax.random.uniform(k2, (20_000, 1), minval=-3.0, maxval=3.0)
    prior = kl_fn(jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    values = kl_fn(mean, log_var)
    symptoms = []
    if not bool(jnp.all(jnp.abs(prior) <= 1e-5)):  # NaN fails the comparison
        symptoms.append("nonzero at the prior")
    if not (bool(jnp.all(jnp.isfinite(prior))) and bool(jnp.all(jnp.isfinite(values)))):
        symptoms.append("not finite")
    if bool(jnp.any(jnp.where(jnp.isfinite(values), values, 0.0) < -1e-5)):
        symptoms.append("negative")
    return frozenset(symptoms)
""",
        "numpy_grid_in_two_dimensions": """
def kl_diagnostics(kl_fn):
    axis = np.linspace(-3.0, 3.0, 121, dtype=np.float32)
    m, v = np.meshgrid(axis, axis, indexing="ij")
    inputs = [(np.zeros((1, 1), np.float32),) * 2,
              (m.reshape(-1, 1), v.reshape(-1, 1)),
              (np.stack([m.ravel(), np.zeros(m.size, np.float32)], -1),
               np.stack([v.ravel(), np.zeros(m.size, np.float32)], -1))]
    out = [np.asarray(kl_fn(jnp.asarray(a), jnp.asarray(b)), np.float64) for a, b in inputs]
    result = set()
    if not (np.isfinite(out[0]).all() and np.abs(out[0]).max() <= 1e-5):
        result.add("nonzero at the prior")
    values = np.concatenate([o.ravel() for o in out])
    if not np.isfinite(values).all():
        result.add("not finite")
    if np.nanmin(np.where(np.isfinite(values), values, np.nan)) < -1e-5:
        result.add("negative")
    return result
""",
    },
    "log_normalizer": {
        "itertools_product": """
def log_normalizer(log_likelihood, logits):
    import itertools
    x = jnp.array(list(itertools.product([0.0, 1.0], repeat=logits.shape[0])))
    return jax.scipy.special.logsumexp(log_likelihood(x, logits))
""",
        "max_trick_by_hand": """
def log_normalizer(log_likelihood, logits):
    d = logits.shape[0]
    bits = (np.arange(2**d)[:, None] // 2 ** np.arange(d)[::-1]) % 2
    lp = log_likelihood(jnp.asarray(bits, jnp.float32), logits)
    m = jnp.max(lp)
    return m + jnp.log(jnp.sum(jnp.exp(lp - m)))
""",
    },
    "smallest_kl": {
        "fine_grid_then_a_finer_local_grid": """
def smallest_kl(head, low, high):
    def kl(a, b):
        mean, log_var = head(a, b)
        return 0.5 * (jnp.exp(log_var) + mean**2 - 1.0 - log_var)

    step = (high - low) / 1000
    a, b = jnp.meshgrid(jnp.linspace(low, high, 1001), jnp.linspace(low, high, 1001))
    values = kl(a, b)
    i = jnp.argmin(values)
    a0, b0 = a.ravel()[i], b.ravel()[i]
    la = jnp.clip(a0 + jnp.linspace(-2 * step, 2 * step, 1001), low, high)
    lb = jnp.clip(b0 + jnp.linspace(-2 * step, 2 * step, 1001), low, high)
    a, b = jnp.meshgrid(la, lb)
    return jnp.minimum(values.ravel()[i], jnp.min(kl(a, b)))
""",
        "zoom_by_fifths_in_numpy": """
def smallest_kl(head, low, high):
    best, centre, width = np.inf, np.array([(low + high) / 2] * 2), high - low
    for _ in range(12):
        axes = [np.clip(c + width * np.linspace(-0.5, 0.5, 101), low, high) for c in centre]
        a, b = np.meshgrid(*axes, indexing="ij")
        mean, log_var = head(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
        values = np.asarray(gaussian_kl_standard(mean[..., None], log_var[..., None]))
        i = np.unravel_index(np.argmin(values), values.shape)
        best = min(best, float(values[i]))
        centre, width = np.array([a[i], b[i]]), width / 5
    return best
""",
    },
    "active_latents": {
        "numpy_var": """
def active_latents(mean, threshold=0.01):
    return np.var(np.asarray(mean), axis=0) > threshold
""",
        "by_hand": """
def active_latents(mean, threshold=0.01):
    centered = mean - mean.mean(axis=0, keepdims=True)
    return (centered**2).mean(axis=0) > threshold
""",
    },
    "elbo_gap": {
        "marginal_minus_closed_form_elbo": """
def elbo_gap(x, weight, bias, noise_var, mean_q, log_var_q):
    from genlab.vae import linear_gaussian_log_marginal
    d = weight.shape[0]
    r = x - mean_q @ weight.T - bias
    spread = jnp.exp(log_var_q) @ jnp.sum(weight**2, axis=0)
    log_lik = -0.5 * (d * jnp.log(2 * jnp.pi * noise_var) + (jnp.sum(r**2, -1) + spread) / noise_var)
    kl = 0.5 * jnp.sum(jnp.exp(log_var_q) + mean_q**2 - 1.0 - log_var_q, -1)
    return linear_gaussian_log_marginal(x, weight, bias, noise_var) - (log_lik - kl)
""",  # noqa: E501
        "precision_form": """
def elbo_gap(x, weight, bias, noise_var, mean_q, log_var_q):
    z = weight.shape[1]
    prec = weight.T @ weight / noise_var + jnp.eye(z)
    pm = jnp.linalg.solve(prec, ((x - bias) @ weight / noise_var)[..., None])[..., 0]
    d = pm - mean_q
    tr = jnp.exp(log_var_q) @ jnp.diag(prec)
    quad = jnp.sum(d * (d @ prec), axis=-1)
    return 0.5 * (tr + quad - z - jnp.linalg.slogdet(prec)[1] - jnp.sum(log_var_q, -1))
""",
    },
}
