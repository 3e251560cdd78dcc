"""Mutants of chapter 05's graded exercises (solutions/05_diffusion/05_diffusion.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources are executed in the
kernel after the solution notebook has run, so they may use what its imports cell defined:
``jax``, ``jnp``, ``np``, ``nnx``, ``optax``, ``data`` and ``diffusion``. The pitfalls of issue 15
are among the wrong ones: the step index broadcast along the data axis (q_sample), the wrapped
index at t = 0 (posterior_mean_var), training with another schedule (train_step), the Ho &
Salimans guidance convention (cfg_combine), a Python branch on a traced step (ddpm_step).
"""

WRONG = {
    "linear_beta_schedule": {
        "endpoint_excluded": """
def linear_beta_schedule(num_steps, beta_start=1e-4, beta_end=0.02):
    return jnp.linspace(beta_start, beta_end, num_steps + 1, dtype=jnp.float32)[:-1]
""",
        "reversed": """
def linear_beta_schedule(num_steps, beta_start=1e-4, beta_end=0.02):
    return jnp.linspace(beta_end, beta_start, num_steps, dtype=jnp.float32)
""",
        "geometric_spacing": """
def linear_beta_schedule(num_steps, beta_start=1e-4, beta_end=0.02):
    return jnp.geomspace(beta_start, beta_end, num_steps).astype(jnp.float32)
""",
        "float64_numpy": """
def linear_beta_schedule(num_steps, beta_start=1e-4, beta_end=0.02):
    return np.linspace(beta_start, beta_end, num_steps)
""",
    },
    "alpha_bars": {
        "cumprod_of_betas": """
def alpha_bars(betas):
    return jnp.cumprod(betas)
""",
        "exclusive_product": """
def alpha_bars(betas):
    return jnp.concatenate([jnp.ones(1), jnp.cumprod(1.0 - betas)[:-1]])
""",
        "first_order_sum": """
def alpha_bars(betas):
    return 1.0 - jnp.cumsum(betas)
""",
        "alphas_not_cumulative": """
def alpha_bars(betas):
    return 1.0 - betas
""",
    },
    "q_sample": {
        "t_broadcast_along_last_axis": """
def q_sample(key, x0, t, alpha_bars):
    eps = jax.random.normal(key, x0.shape)
    return jnp.sqrt(alpha_bars[t]) * x0 + jnp.sqrt(1.0 - alpha_bars[t]) * eps, eps
""",
        "only_two_axes": """
def q_sample(key, x0, t, alpha_bars):
    eps = jax.random.normal(key, x0.shape)
    ab = alpha_bars[t][:, None]
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps, eps
""",
        "variances_as_scales": """
def q_sample(key, x0, t, alpha_bars):
    eps = jax.random.normal(key, x0.shape)
    ab = alpha_bars[t].reshape((-1,) + (1,) * (x0.ndim - 1))
    return ab * x0 + (1.0 - ab) * eps, eps
""",
        "split_key": """
def q_sample(key, x0, t, alpha_bars):
    _, key_eps = jax.random.split(key)
    eps = jax.random.normal(key_eps, x0.shape)
    ab = alpha_bars[t].reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps, eps
""",
        "previous_step": """
def q_sample(key, x0, t, alpha_bars):
    eps = jax.random.normal(key, x0.shape)
    ab = alpha_bars[jnp.maximum(t - 1, 0)].reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps, eps
""",
    },
    "posterior_mean_var": {
        "wrapped_index_at_t0": """
def posterior_mean_var(x_t, x0, t, betas, alpha_bars):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    beta, ab, ab_prev = (a.reshape(shape) for a in (betas[t], alpha_bars[t], alpha_bars[t - 1]))
    mean = (jnp.sqrt(ab_prev) * beta * x0 + jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) * x_t) / (1.0 - ab)
    var = (1.0 - ab_prev) / (1.0 - ab) * beta
    return mean, jnp.broadcast_to(var, mean.shape)
""",  # noqa: E501
        "fixed_large_variance": """
def posterior_mean_var(x_t, x0, t, betas, alpha_bars):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    ab_prev_all = jnp.concatenate([jnp.ones(1), alpha_bars[:-1]])
    beta, ab, ab_prev = (a[t].reshape(shape) for a in (betas, alpha_bars, ab_prev_all))
    mean = (jnp.sqrt(ab_prev) * beta * x0 + jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) * x_t) / (1.0 - ab)
    return mean, jnp.broadcast_to(beta, mean.shape)
""",  # noqa: E501
        "variance_not_broadcast": """
def posterior_mean_var(x_t, x0, t, betas, alpha_bars):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    ab_prev_all = jnp.concatenate([jnp.ones(1), alpha_bars[:-1]])
    beta, ab, ab_prev = (a[t].reshape(shape) for a in (betas, alpha_bars, ab_prev_all))
    mean = (jnp.sqrt(ab_prev) * beta * x0 + jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) * x_t) / (1.0 - ab)
    return mean, (1.0 - ab_prev) / (1.0 - ab) * beta
""",  # noqa: E501
        "current_alpha_bar_on_x0": """
def posterior_mean_var(x_t, x0, t, betas, alpha_bars):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    ab_prev_all = jnp.concatenate([jnp.ones(1), alpha_bars[:-1]])
    beta, ab, ab_prev = (a[t].reshape(shape) for a in (betas, alpha_bars, ab_prev_all))
    mean = (jnp.sqrt(ab) * beta * x0 + jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) * x_t) / (1.0 - ab)
    var = (1.0 - ab_prev) / (1.0 - ab) * beta
    return mean, jnp.broadcast_to(var, mean.shape)
""",
    },
    "ddpm_loss": {
        "keys_swapped": """
def ddpm_loss(key, eps_model, x0, alpha_bars):
    key_eps, key_t = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, alpha_bars.shape[0])
    x_t, eps = q_sample(key_eps, x0, t, alpha_bars)
    return jnp.mean((eps_model(x_t, t) - eps) ** 2)
""",
        "predicts_x0": """
def ddpm_loss(key, eps_model, x0, alpha_bars):
    key_t, key_eps = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, alpha_bars.shape[0])
    x_t, eps = q_sample(key_eps, x0, t, alpha_bars)
    return jnp.mean((eps_model(x_t, t) - x0) ** 2)
""",
        "sum_not_mean": """
def ddpm_loss(key, eps_model, x0, alpha_bars):
    key_t, key_eps = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, alpha_bars.shape[0])
    x_t, eps = q_sample(key_eps, x0, t, alpha_bars)
    return jnp.sum((eps_model(x_t, t) - eps) ** 2) / x0.shape[0]
""",
        "steps_from_one": """
def ddpm_loss(key, eps_model, x0, alpha_bars):
    key_t, key_eps = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 1, alpha_bars.shape[0])
    x_t, eps = q_sample(key_eps, x0, t, alpha_bars)
    return jnp.mean((eps_model(x_t, t) - eps) ** 2)
""",
    },
    "train_step": {
        "no_update": """
def train_step(model, optimizer, key, x0, alpha_bars):
    return ddpm_loss(key, model, x0, alpha_bars)
""",
        "loss_after_update": """
def train_step(model, optimizer, key, x0, alpha_bars):
    grads = nnx.grad(lambda m: ddpm_loss(key, m, x0, alpha_bars))(model)
    optimizer.update(model, grads)
    return ddpm_loss(key, model, x0, alpha_bars)
""",
        "gradient_ascent": """
def train_step(model, optimizer, key, x0, alpha_bars):
    loss, grads = nnx.value_and_grad(lambda m: ddpm_loss(key, m, x0, alpha_bars))(model)
    optimizer.update(model, jax.tree.map(lambda g: -g, grads))
    return loss
""",
        "trains_with_another_schedule": """
def train_step(model, optimizer, key, x0, alpha_bars):
    other = diffusion.alpha_bars(diffusion.cosine_beta_schedule(alpha_bars.shape[0]))
    loss, grads = nnx.value_and_grad(lambda m: ddpm_loss(key, m, x0, other))(model)
    optimizer.update(model, grads)
    return loss
""",
        "regresses_the_data": """
def train_step(model, optimizer, key, x0, alpha_bars):
    def loss_fn(model):
        key_t, key_eps = jax.random.split(key)
        t = jax.random.randint(key_t, (x0.shape[0],), 0, alpha_bars.shape[0])
        x_t, eps = q_sample(key_eps, x0, t, alpha_bars)
        return jnp.mean((model(x_t, t) - x0) ** 2)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
    },
    "mixture_score": {
        "noise_variance_forgotten": """
def mixture_score(x, centers, std, alpha_bar):
    var = alpha_bar * std**2
    diff = jnp.sqrt(alpha_bar) * centers[None] - x[:, None]
    resp = jax.nn.softmax(-0.5 * jnp.sum(diff**2, axis=-1) / var, axis=-1)
    return jnp.sum(resp[..., None] * diff, axis=1) / var
""",
        "centers_not_scaled": """
def mixture_score(x, centers, std, alpha_bar):
    var = alpha_bar * std**2 + 1.0 - alpha_bar
    diff = centers[None] - x[:, None]
    resp = jax.nn.softmax(-0.5 * jnp.sum(diff**2, axis=-1) / var, axis=-1)
    return jnp.sum(resp[..., None] * diff, axis=1) / var
""",
        "sign_flipped": """
def mixture_score(x, centers, std, alpha_bar):
    var = alpha_bar * std**2 + 1.0 - alpha_bar
    diff = x[:, None] - jnp.sqrt(alpha_bar) * centers[None]
    resp = jax.nn.softmax(-0.5 * jnp.sum(diff**2, axis=-1) / var, axis=-1)
    return jnp.sum(resp[..., None] * diff, axis=1) / var
""",
        "unstable_normalisation": """
def mixture_score(x, centers, std, alpha_bar):
    var = alpha_bar * std**2 + 1.0 - alpha_bar
    diff = jnp.sqrt(alpha_bar) * centers[None] - x[:, None]
    weights = jnp.exp(-0.5 * jnp.sum(diff**2, axis=-1) / var)
    resp = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return jnp.sum(resp[..., None] * diff, axis=1) / var
""",
    },
    "flow_matching_loss": {
        "target_reversed": """
def flow_matching_loss(key, v_model, x1):
    key_t, key_0 = jax.random.split(key)
    t = jax.random.uniform(key_t, (x1.shape[0],))
    x0 = jax.random.normal(key_0, x1.shape)
    t_b = t.reshape((-1,) + (1,) * (x1.ndim - 1))
    return jnp.mean((v_model(t_b * x1 + (1 - t_b) * x0, t) - (x0 - x1)) ** 2)
""",
        "time_reversed_path": """
def flow_matching_loss(key, v_model, x1):
    key_t, key_0 = jax.random.split(key)
    t = jax.random.uniform(key_t, (x1.shape[0],))
    x0 = jax.random.normal(key_0, x1.shape)
    t_b = t.reshape((-1,) + (1,) * (x1.ndim - 1))
    return jnp.mean((v_model(t_b * x0 + (1 - t_b) * x1, t) - (x1 - x0)) ** 2)
""",
        "keys_swapped": """
def flow_matching_loss(key, v_model, x1):
    key_0, key_t = jax.random.split(key)
    t = jax.random.uniform(key_t, (x1.shape[0],))
    x0 = jax.random.normal(key_0, x1.shape)
    t_b = t.reshape((-1,) + (1,) * (x1.ndim - 1))
    return jnp.mean((v_model(t_b * x1 + (1 - t_b) * x0, t) - (x1 - x0)) ** 2)
""",
        "time_for_two_axes_only": """
def flow_matching_loss(key, v_model, x1):
    key_t, key_0 = jax.random.split(key)
    t = jax.random.uniform(key_t, (x1.shape[0],))
    x0 = jax.random.normal(key_0, x1.shape)
    x_t = t[:, None] * x1 + (1 - t[:, None]) * x0
    return jnp.mean((v_model(x_t, t) - (x1 - x0)) ** 2)
""",
    },
    "euler_sample": {
        "time_at_end_of_step": """
def euler_sample(v_model, x0, num_steps):
    x = x0
    for k in range(num_steps):
        x = x + v_model(x, jnp.full((x.shape[0],), (k + 1) / num_steps)) / num_steps
    return x
""",
        "no_step_size": """
def euler_sample(v_model, x0, num_steps):
    x = x0
    for k in range(num_steps):
        x = x + v_model(x, jnp.full((x.shape[0],), k / num_steps))
    return x
""",
        "scalar_time": """
def euler_sample(v_model, x0, num_steps):
    x = x0
    for k in range(num_steps):
        x = x + v_model(x, jnp.asarray(k / num_steps)) / num_steps
    return x
""",
        "one_step_too_many": """
def euler_sample(v_model, x0, num_steps):
    x = x0
    for k in range(num_steps + 1):
        x = x + v_model(x, jnp.full((x.shape[0],), k / num_steps)) / num_steps
    return x
""",
    },
    "ddpm_step": {
        "wrapped_index_at_t0": """
def ddpm_step(key, eps_model, x_t, t, betas, alpha_bars):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    beta, ab, ab_prev = betas[t], alpha_bars[t], alpha_bars[t - 1]
    mean = (x_t - beta / jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(1.0 - beta)
    std = jnp.sqrt((1.0 - ab_prev) / (1.0 - ab) * beta)
    return mean + std * jax.random.normal(key, x_t.shape)
""",
        "python_branch_on_t": """
def ddpm_step(key, eps_model, x_t, t, betas, alpha_bars):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    beta, ab = betas[t], alpha_bars[t]
    mean = (x_t - beta / jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(1.0 - beta)
    if t > 0:
        var = (1.0 - alpha_bars[t - 1]) / (1.0 - ab) * beta
        return mean + jnp.sqrt(var) * jax.random.normal(key, x_t.shape)
    return mean
""",
        "fixed_large_variance": """
def ddpm_step(key, eps_model, x_t, t, betas, alpha_bars):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    beta, ab = betas[t], alpha_bars[t]
    mean = (x_t - beta / jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(1.0 - beta)
    return mean + jnp.where(t > 0, jnp.sqrt(beta), 0.0) * jax.random.normal(key, x_t.shape)
""",
        "alpha_bar_in_the_denominator": """
def ddpm_step(key, eps_model, x_t, t, betas, alpha_bars):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    beta, ab = betas[t], alpha_bars[t]
    ab_prev = jnp.where(t > 0, alpha_bars[t - 1], 1.0)
    mean = (x_t - beta / jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    std = jnp.sqrt((1.0 - ab_prev) / (1.0 - ab) * beta)
    return mean + jnp.where(t > 0, std, 0.0) * jax.random.normal(key, x_t.shape)
""",
        "scalar_step_to_the_model": """
def ddpm_step(key, eps_model, x_t, t, betas, alpha_bars):
    eps_hat = eps_model(x_t, jnp.asarray(t))
    beta, ab = betas[t], alpha_bars[t]
    ab_prev = jnp.where(t > 0, alpha_bars[t - 1], 1.0)
    mean = (x_t - beta / jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(1.0 - beta)
    std = jnp.sqrt((1.0 - ab_prev) / (1.0 - ab) * beta)
    return mean + jnp.where(t > 0, std, 0.0) * jax.random.normal(key, x_t.shape)
""",
    },
    "eps_to_flow": {
        "time_is_alpha_bar": """
def eps_to_flow(x_t, eps, alpha_bar):
    ab = alpha_bar.reshape((-1,) + (1,) * (x_t.ndim - 1))
    x0 = (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)
    scale = jnp.sqrt(ab) + jnp.sqrt(1.0 - ab)
    return x_t / scale, alpha_bar, x0 - eps
""",
        "unscaled_point": """
def eps_to_flow(x_t, eps, alpha_bar):
    ab = alpha_bar.reshape((-1,) + (1,) * (x_t.ndim - 1))
    x0 = (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)
    tau = jnp.sqrt(ab) / (jnp.sqrt(ab) + jnp.sqrt(1.0 - ab))
    return x_t, tau.reshape(-1), x0 - eps
""",
        "variance_weights": """
def eps_to_flow(x_t, eps, alpha_bar):
    ab = alpha_bar.reshape((-1,) + (1,) * (x_t.ndim - 1))
    x0 = (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)
    return ab * x0 + (1.0 - ab) * eps, alpha_bar, x0 - eps
""",
        "velocity_towards_noise": """
def eps_to_flow(x_t, eps, alpha_bar):
    ab = alpha_bar.reshape((-1,) + (1,) * (x_t.ndim - 1))
    x0 = (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)
    scale = jnp.sqrt(ab) + jnp.sqrt(1.0 - ab)
    return x_t / scale, (jnp.sqrt(ab) / scale).reshape(-1), eps - x0
""",
    },
    "ddim_step": {
        "wrapped_index_at_clean_data": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    ab = alpha_bars[t]
    ab_prev = alpha_bars[t_prev]
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    z = jax.random.normal(key, x_t.shape)
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    return jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1.0 - ab_prev - var) * eps_hat + jnp.sqrt(var) * z
""",
        "noise_added_on_top_of_ddim": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    ab = alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    z = jax.random.normal(key, x_t.shape)
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    return jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1.0 - ab_prev) * eps_hat + jnp.sqrt(var) * z
""",
        "one_step_beta_for_a_skip": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    ab = alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    z = jax.random.normal(key, x_t.shape)
    beta = 1.0 - ab / jnp.where(t > 0, alpha_bars[t - 1], 1.0)
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * beta
    return jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1.0 - ab_prev - var) * eps_hat + jnp.sqrt(var) * z
""",
        "eta_scales_the_variance": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    ab = alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    z = jax.random.normal(key, x_t.shape)
    var = eta * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    return jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1.0 - ab_prev - var) * eps_hat + jnp.sqrt(var) * z
""",
        "ddpm_large_variance": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    ab = alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    z = jax.random.normal(key, x_t.shape)
    var = eta**2 * (1.0 - ab / ab_prev)
    direction = jnp.sqrt(jnp.maximum(1.0 - ab_prev - var, 0.0))
    return jnp.sqrt(ab_prev) * x0_hat + direction * eps_hat + jnp.sqrt(var) * z
""",
        "variances_as_scales": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    ab = alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    z = jax.random.normal(key, x_t.shape)
    std = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
    return ab_prev * x0_hat + (1.0 - ab_prev - std**2) * eps_hat + std * z
""",
        "model_at_the_target_step": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), jnp.maximum(t_prev, 0), dtype=jnp.int32))
    ab = alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    z = jax.random.normal(key, x_t.shape)
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    return jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1.0 - ab_prev - var) * eps_hat + jnp.sqrt(var) * z
""",
        "noise_scale_kept": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    ab = alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    z = jax.random.normal(key, x_t.shape)
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    keep = jnp.where(t_prev >= 0, jnp.sqrt(jnp.maximum(1.0 - ab - var, 0.0)), 0.0)
    return jnp.sqrt(ab_prev) * x0_hat + keep * eps_hat + jnp.sqrt(var) * z
""",
        "python_branch_on_t_prev": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    ab = alpha_bars[t]
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    if t_prev < 0:
        return x0_hat
    ab_prev = alpha_bars[t_prev]
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    z = jax.random.normal(key, x_t.shape)
    return jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1.0 - ab_prev - var) * eps_hat + jnp.sqrt(var) * z
""",
    },
    "cfg_combine": {
        "ho_salimans_convention": """
def cfg_combine(eps_cond, eps_uncond, w):
    return (1.0 + w) * eps_cond - w * eps_uncond
""",
        "roles_swapped": """
def cfg_combine(eps_cond, eps_uncond, w):
    return eps_cond + w * (eps_uncond - eps_cond)
""",
        "difference_only": """
def cfg_combine(eps_cond, eps_uncond, w):
    return w * (eps_cond - eps_uncond)
""",
    },
    "classifier_guided_eps": {
        "score_sign_flipped": """
def classifier_guided_eps(eps_uncond, grad_log_classifier, alpha_bar, w):
    return eps_uncond + w * jnp.sqrt(1.0 - alpha_bar) * grad_log_classifier
""",
        "variance_not_std": """
def classifier_guided_eps(eps_uncond, grad_log_classifier, alpha_bar, w):
    return eps_uncond - w * (1.0 - alpha_bar) * grad_log_classifier
""",
        "divided_by_std": """
def classifier_guided_eps(eps_uncond, grad_log_classifier, alpha_bar, w):
    return eps_uncond - w * grad_log_classifier / jnp.sqrt(1.0 - alpha_bar)
""",
        "signal_fraction": """
def classifier_guided_eps(eps_uncond, grad_log_classifier, alpha_bar, w):
    return eps_uncond - w * jnp.sqrt(alpha_bar) * grad_log_classifier
""",
    },
    "discretized_gaussian_log_prob": {
        "density_times_spacing": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    log_density = -0.5 * ((x0 - mean) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)
    log_p = log_density + jnp.log(2.0 / (num_levels - 1))
    return jnp.sum(log_p.reshape(x0.shape[0], -1), axis=-1)
""",
        "extreme_cells_not_open": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    half = 1.0 / (num_levels - 1)
    hi, lo = (x0 + half - mean) / std, (x0 - half - mean) / std
    flip = lo + hi > 0
    lo, hi = jnp.where(flip, -hi, lo), jnp.where(flip, -lo, hi)
    log_hi = jax.scipy.special.log_ndtr(hi)
    gap = jnp.minimum(jax.scipy.special.log_ndtr(lo) - log_hi, -1e-30)
    log_p = log_hi + jnp.log(-jnp.expm1(gap))
    return jnp.sum(log_p.reshape(x0.shape[0], -1), axis=-1)
""",
        "half_width_of_8bit_code": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    half = 1.0 / 255.0  # transcribed from published code for 8-bit images
    lower = jnp.where(x0 < -0.999, -jnp.inf, (x0 - half - mean) / std)
    upper = jnp.where(x0 > 0.999, jnp.inf, (x0 + half - mean) / std)
    flip = lower + upper > 0
    lo, hi = jnp.where(flip, -upper, lower), jnp.where(flip, -lower, upper)
    log_hi = jax.scipy.special.log_ndtr(hi)
    gap = jnp.minimum(jax.scipy.special.log_ndtr(lo) - log_hi, -1e-30)
    return jnp.sum((log_hi + jnp.log(-jnp.expm1(gap))).reshape(x0.shape[0], -1), axis=-1)
""",
        "clipped_like_published_code": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    half = 1.0 / (num_levels - 1)
    cdf_hi = jnp.where(x0 > 1.0 - half, 1.0, jax.scipy.stats.norm.cdf((x0 + half - mean) / std))
    cdf_lo = jnp.where(x0 < -1.0 + half, 0.0, jax.scipy.stats.norm.cdf((x0 - half - mean) / std))
    log_p = jnp.log(jnp.maximum(cdf_hi - cdf_lo, 1e-12))
    return jnp.sum(log_p.reshape(x0.shape[0], -1), axis=-1)
""",
        "naive_difference_of_cdfs": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    half = 1.0 / (num_levels - 1)
    cdf_hi = jnp.where(x0 > 1.0 - half, 1.0, jax.scipy.special.ndtr((x0 + half - mean) / std))
    cdf_lo = jnp.where(x0 < -1.0 + half, 0.0, jax.scipy.special.ndtr((x0 - half - mean) / std))
    return jnp.sum(jnp.log(cdf_hi - cdf_lo).reshape(x0.shape[0], -1), axis=-1)
""",
        "cells_a_full_spacing_wide_each_side": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    half = 2.0 / (num_levels - 1)
    lower = jnp.where(x0 < -1.0 + half / 2, -jnp.inf, (x0 - half - mean) / std)
    upper = jnp.where(x0 > 1.0 - half / 2, jnp.inf, (x0 + half - mean) / std)
    flip = lower + upper > 0
    lo, hi = jnp.where(flip, -upper, lower), jnp.where(flip, -lower, upper)
    log_hi = jax.scipy.special.log_ndtr(hi)
    gap = jnp.minimum(jax.scipy.special.log_ndtr(lo) - log_hi, -1e-30)
    return jnp.sum((log_hi + jnp.log(-jnp.expm1(gap))).reshape(x0.shape[0], -1), axis=-1)
""",
        "mean_over_entries": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    half = 1.0 / (num_levels - 1)
    lower = jnp.where(x0 < -1.0 + half, -jnp.inf, (x0 - half - mean) / std)
    upper = jnp.where(x0 > 1.0 - half, jnp.inf, (x0 + half - mean) / std)
    flip = lower + upper > 0
    lo, hi = jnp.where(flip, -upper, lower), jnp.where(flip, -lower, upper)
    log_hi = jax.scipy.special.log_ndtr(hi)
    gap = jnp.minimum(jax.scipy.special.log_ndtr(lo) - log_hi, -1e-30)
    return jnp.mean((log_hi + jnp.log(-jnp.expm1(gap))).reshape(x0.shape[0], -1), axis=-1)
""",
    },
    "schedule_mismatch": {
        "old_vocabulary": """
def schedule_mismatch(train_alpha_bars, sample_alpha_bars):
    a = np.asarray(train_alpha_bars, np.float64)
    b = np.asarray(sample_alpha_bars, np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"expected two [T] schedules, got shapes {a.shape} and {b.shape}")
    equal = lambda x, y: x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1e-5))
    n, m = a.size, b.size
    if n != m:
        return "different length"
    if equal(a, b):
        return "same"
    if n >= 2 and (equal(a[1:], b[:-1]) or equal(a[:-1], b[1:])):
        return "off by one"
    return "reversed" if equal(a[::-1], b) else "other schedule"
""",
        "only_one_index_off": """
def schedule_mismatch(train_alpha_bars, sample_alpha_bars):
    a = np.asarray(train_alpha_bars, np.float64)
    b = np.asarray(sample_alpha_bars, np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"expected two [T] schedules, got shapes {a.shape} and {b.shape}")
    equal = lambda x, y: x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1e-5))
    n, m = a.size, b.size
    if equal(a, b):
        return "same", 0
    if n == m and n >= 2:
        if equal(a[1:], b[:-1]):
            return "shift", 1
        if equal(a[:-1], b[1:]):
            return "shift", -1
    for k in range(2, n // m + 1):
        if equal(a[k - 1::k][:m], b):
            return "stride", k
    if equal(a[::-1], b):
        return "reversed", 0
    return "other", 0
""",
        "shift_sign_flipped": """
def schedule_mismatch(train_alpha_bars, sample_alpha_bars):
    a = np.asarray(train_alpha_bars, np.float64)
    b = np.asarray(sample_alpha_bars, np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"expected two [T] schedules, got shapes {a.shape} and {b.shape}")
    equal = lambda x, y: x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1e-5))
    n, m = a.size, b.size
    if equal(a, b):
        return "same", 0
    if n == m:
        for size in range(1, n // 2 + 1):
            for k in (size, -size):
                if equal(a[k:], b[:n - k]) if k > 0 else equal(a[:n + k], b[-k:]):
                    return "shift", -k
    for k in range(2, n // m + 1):
        if equal(a[k - 1::k][:m], b):
            return "stride", k
    if equal(a[::-1], b):
        return "reversed", 0
    return "other", 0
""",
        "stride_from_index_0": """
def schedule_mismatch(train_alpha_bars, sample_alpha_bars):
    a = np.asarray(train_alpha_bars, np.float64)
    b = np.asarray(sample_alpha_bars, np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"expected two [T] schedules, got shapes {a.shape} and {b.shape}")
    equal = lambda x, y: x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1e-5))
    n, m = a.size, b.size
    if equal(a, b):
        return "same", 0
    if n == m:
        for size in range(1, n // 2 + 1):
            for k in (size, -size):
                if equal(a[k:], b[:n - k]) if k > 0 else equal(a[:n + k], b[-k:]):
                    return "shift", k
    for k in range(2, n // m + 1):
        if equal(a[::k][:m], b):
            return "stride", k
    if equal(a[::-1], b):
        return "reversed", 0
    return "other", 0
""",
        "stride_from_the_lengths": """
def schedule_mismatch(train_alpha_bars, sample_alpha_bars):
    a = np.asarray(train_alpha_bars, np.float64)
    b = np.asarray(sample_alpha_bars, np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"expected two [T] schedules, got shapes {a.shape} and {b.shape}")
    equal = lambda x, y: x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1e-5))
    n, m = a.size, b.size
    if equal(a, b):
        return "same", 0
    if n == m:
        for size in range(1, n // 2 + 1):
            for k in (size, -size):
                if equal(a[k:], b[:n - k]) if k > 0 else equal(a[:n + k], b[-k:]):
                    return "shift", k
    if m < n and n % m == 0:
        return "stride", n // m
    if equal(a[::-1], b):
        return "reversed", 0
    return "other", 0
""",
        "same_by_noise_gap": """
def schedule_mismatch(train_alpha_bars, sample_alpha_bars):
    a = np.asarray(train_alpha_bars, np.float64)
    b = np.asarray(sample_alpha_bars, np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"expected two [T] schedules, got shapes {a.shape} and {b.shape}")
    equal = lambda x, y: x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1e-5))
    n, m = a.size, b.size
    if n == m and np.max(np.abs(np.sqrt(1 - a) - np.sqrt(1 - b))) < 0.01:
        return "same", 0
    if n == m:
        for size in range(1, n // 2 + 1):
            for k in (size, -size):
                if equal(a[k:], b[:n - k]) if k > 0 else equal(a[:n + k], b[-k:]):
                    return "shift", k
    for k in range(2, n // m + 1):
        if equal(a[k - 1::k][:m], b):
            return "stride", k
    if equal(a[::-1], b):
        return "reversed", 0
    return "other", 0
""",
    },
}

CORRECT = {
    "linear_beta_schedule": {
        "arange": """
def linear_beta_schedule(num_steps, beta_start=1e-4, beta_end=0.02):
    fraction = jnp.arange(num_steps, dtype=jnp.float32) / max(num_steps - 1, 1)
    return (beta_start + (beta_end - beta_start) * fraction).astype(jnp.float32)
""",
        "numpy_then_float32": """
def linear_beta_schedule(num_steps, beta_start=1e-4, beta_end=0.02):
    return jnp.asarray(np.linspace(beta_start, beta_end, num_steps), dtype=jnp.float32)
""",
    },
    "alpha_bars": {
        "sum_of_logs": """
def alpha_bars(betas):
    return jnp.exp(jnp.cumsum(jnp.log1p(-jnp.asarray(betas, jnp.float32))))
""",
        "associative_scan": """
def alpha_bars(betas):
    return jax.lax.associative_scan(jnp.multiply, 1.0 - jnp.asarray(betas, jnp.float32))
""",
    },
    "q_sample": {
        "expand_dims": """
def q_sample(key, x0, t, alpha_bars):
    eps = jax.random.normal(key, x0.shape)
    ab = jnp.expand_dims(alpha_bars[t], tuple(range(1, x0.ndim)))
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps, eps
""",
        "vmap_over_examples": """
def q_sample(key, x0, t, alpha_bars):
    eps = jax.random.normal(key, x0.shape)
    one = lambda x, ab, e: jnp.sqrt(ab) * x + jnp.sqrt(1.0 - ab) * e
    return jax.vmap(one)(x0, alpha_bars[t], eps), eps
""",
    },
    "posterior_mean_var": {
        "precision_form": """
def posterior_mean_var(x_t, x0, t, betas, alpha_bars):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    beta = betas[t].reshape(shape)
    ab_prev = jnp.where(t > 0, alpha_bars[jnp.maximum(t - 1, 0)], 1.0).reshape(shape)
    var = 1.0 / ((1.0 - beta) / beta + 1.0 / (1.0 - ab_prev))
    mean = var * (jnp.sqrt(1.0 - beta) / beta * x_t + jnp.sqrt(ab_prev) / (1.0 - ab_prev) * x0)
    mean = jnp.where(ab_prev == 1.0, x0, mean)
    return mean, jnp.broadcast_to(var, mean.shape)
""",
        "padded_alpha_bars": """
def posterior_mean_var(x_t, x0, t, betas, alpha_bars):
    padded = jnp.pad(alpha_bars, (1, 0), constant_values=1.0)
    expand = lambda a: jnp.expand_dims(a, tuple(range(1, x0.ndim)))
    beta, ab, ab_prev = expand(betas[t]), expand(padded[t + 1]), expand(padded[t])
    coef_x0 = jnp.sqrt(ab_prev) * beta / (1.0 - ab)
    coef_xt = jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)
    var = (1.0 - ab_prev) * beta / (1.0 - ab)
    return coef_x0 * x0 + coef_xt * x_t, var * jnp.ones_like(x0)
""",
    },
    "ddpm_loss": {
        "noising_inline": """
def ddpm_loss(key, eps_model, x0, alpha_bars):
    key_t, key_eps = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, len(alpha_bars))
    eps = jax.random.normal(key_eps, x0.shape)
    ab = jnp.expand_dims(alpha_bars[t], tuple(range(1, x0.ndim)))
    return jnp.mean(jnp.square(eps_model(jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * eps, t) - eps))
""",
        "per_example_then_batch": """
def ddpm_loss(key, eps_model, x0, alpha_bars):
    key_t, key_eps = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, alpha_bars.shape[0])
    x_t, eps = q_sample(key_eps, x0, t, alpha_bars)
    per_example = jnp.mean(((eps_model(x_t, t) - eps) ** 2).reshape(x0.shape[0], -1), axis=1)
    return jnp.mean(per_example)
""",
    },
    "train_step": {
        "grad_then_loss": """
def train_step(model, optimizer, key, x0, alpha_bars):
    loss = ddpm_loss(key, model, x0, alpha_bars)
    grads = nnx.grad(lambda m: ddpm_loss(key, m, x0, alpha_bars))(model)
    optimizer.update(model, grads)
    return loss
""",
        "split_and_merge": """
def train_step(model, optimizer, key, x0, alpha_bars):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        return ddpm_loss(key, nnx.merge(graphdef, params, rest), x0, alpha_bars)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    optimizer.update(model, grads)
    return loss
""",
    },
    "mixture_score": {
        "grad_of_logsumexp": """
def mixture_score(x, centers, std, alpha_bar):
    var = alpha_bar * std**2 + 1.0 - alpha_bar
    def log_q(point):
        return jax.nn.logsumexp(-0.5 * jnp.sum((point - jnp.sqrt(alpha_bar) * centers) ** 2, -1) / var)
    return jax.vmap(jax.grad(log_q))(x)
""",  # noqa: E501
        "posterior_mean_of_the_means": """
def mixture_score(x, centers, std, alpha_bar):
    var = alpha_bar * std**2 + 1.0 - alpha_bar
    means = jnp.sqrt(alpha_bar) * centers
    logits = -0.5 * (jnp.sum(x**2, -1)[:, None] - 2 * x @ means.T + jnp.sum(means**2, -1)) / var
    expected_mean = jax.nn.softmax(logits, axis=-1) @ means
    return (expected_mean - x) / var
""",
    },
    "flow_matching_loss": {
        "lerp_form": """
def flow_matching_loss(key, v_model, x1):
    key_t, key_0 = jax.random.split(key)
    t = jax.random.uniform(key_t, (x1.shape[0],))
    x0 = jax.random.normal(key_0, x1.shape)
    t_b = jnp.expand_dims(t, tuple(range(1, x1.ndim)))
    return jnp.mean(jnp.square(v_model(x0 + t_b * (x1 - x0), t) - (x1 - x0)))
""",
        "vmapped_path": """
def flow_matching_loss(key, v_model, x1):
    key_t, key_0 = jax.random.split(key)
    t = jax.random.uniform(key_t, (x1.shape[0],))
    x0 = jax.random.normal(key_0, x1.shape)
    x_t = jax.vmap(lambda a, b, s: s * b + (1 - s) * a)(x0, x1, t)
    return jnp.mean((v_model(x_t, t) - (x1 - x0)) ** 2)
""",
    },
    "euler_sample": {
        "lax_scan": """
def euler_sample(v_model, x0, num_steps):
    def body(x, k):
        return x + v_model(x, jnp.full((x.shape[0],), k / num_steps)) / num_steps, None
    return jax.lax.scan(body, x0, jnp.arange(num_steps, dtype=jnp.float32))[0]
""",
        "fori_loop": """
def euler_sample(v_model, x0, num_steps):
    dt = 1.0 / num_steps
    body = lambda k, x: x + dt * v_model(x, jnp.full((x.shape[0],), k * dt, dtype=jnp.float32))
    return jax.lax.fori_loop(0, num_steps, body, x0)
""",
    },
    "ddpm_step": {
        "through_the_posterior": """
def ddpm_step(key, eps_model, x_t, t, betas, alpha_bars):
    t_batch = jnp.full((x_t.shape[0],), t, dtype=jnp.int32)
    eps_hat = eps_model(x_t, t_batch)
    ab = alpha_bars[t]
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    mean, var = posterior_mean_var(x_t, x0_hat, t_batch, betas, alpha_bars)
    return mean + jnp.sqrt(var) * jax.random.normal(key, x_t.shape)
""",
        "mask_the_noise": """
def ddpm_step(key, eps_model, x_t, t, betas, alpha_bars):
    t = jnp.asarray(t)
    eps_hat = eps_model(x_t, jnp.broadcast_to(t, (x_t.shape[0],)).astype(jnp.int32))
    alpha = 1.0 - betas[t]
    mean = (x_t - (1.0 - alpha) / jnp.sqrt(1.0 - alpha_bars[t]) * eps_hat) / jnp.sqrt(alpha)
    ab_prev = alpha_bars[jnp.maximum(t - 1, 0)]
    var = (1.0 - ab_prev) / (1.0 - alpha_bars[t]) * betas[t]
    return mean + (t > 0) * jnp.sqrt(var) * jax.random.normal(key, x_t.shape)
""",
    },
    "eps_to_flow": {
        "through_the_ratio": """
def eps_to_flow(x_t, eps, alpha_bar):
    if alpha_bar.shape != (x_t.shape[0],):
        raise ValueError("alpha_bar must have one entry per example")
    snr_root = jnp.sqrt(alpha_bar / (1.0 - alpha_bar + 1e-30))
    tau = jnp.where(alpha_bar < 1.0, snr_root / (1.0 + snr_root), 1.0)
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    s, n = jnp.sqrt(alpha_bar).reshape(shape), jnp.sqrt(1.0 - alpha_bar).reshape(shape)
    x0 = (x_t - n * eps) / s
    return tau.reshape(shape) * x0 + (1.0 - tau.reshape(shape)) * eps, tau, x0 - eps
""",
        "numpy_float64": """
def eps_to_flow(x_t, eps, alpha_bar):
    x_t, eps = np.asarray(x_t, np.float64), np.asarray(eps, np.float64)
    ab = np.asarray(alpha_bar, np.float64)
    ab = ab.reshape(ab.shape + (1,) * (x_t.ndim - 1))
    a, b = np.sqrt(ab), np.sqrt(1 - ab)
    x0 = (x_t - b * eps) / a
    z = x_t / (a + b)
    tau = (a / (a + b)).reshape(-1)
    return z.astype(np.float32), tau.astype(np.float32), (x0 - eps).astype(np.float32)
""",
    },
    "ddim_step": {
        "posterior_mean_form": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    a = alpha_bars[t]
    a_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    sigma = eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a)) * jnp.sqrt(1.0 - a / a_prev)
    ratio = jnp.sqrt(a_prev / a)
    weight = jnp.sqrt(jnp.clip(1.0 - a_prev - sigma**2, 0.0, None)) - ratio * jnp.sqrt(1.0 - a)
    return ratio * x_t + weight * eps_hat + sigma * jax.random.normal(key, x_t.shape)
""",
        "sigma_first_with_clip": """
def ddim_step(eps_model, x_t, t, t_prev, alpha_bars, eta, key):
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, dtype=jnp.int32))
    a = alpha_bars[t]
    a_prev = jnp.where(t_prev < 0, 1.0, alpha_bars[jnp.clip(t_prev, 0, None)])
    posterior_var = (1.0 - a_prev) * (1.0 - a / a_prev) / (1.0 - a)
    sigma = jnp.sqrt(posterior_var) * eta
    clean = (x_t - jnp.sqrt(1.0 - a) * eps_hat) / jnp.sqrt(a)
    noise = jax.random.normal(key, x_t.shape)
    spread = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma * sigma, 0.0))
    return (jnp.sqrt(a_prev) * clean + spread * eps_hat + sigma * noise).astype(jnp.float32)
""",
    },
    "cfg_combine": {
        "convex_form": """
def cfg_combine(eps_cond, eps_uncond, w):
    return (1.0 - w) * eps_uncond + w * eps_cond
""",
        "rewritten": """
def cfg_combine(eps_cond, eps_uncond, w):
    return w * eps_cond - (w - 1.0) * eps_uncond
""",
    },
    "classifier_guided_eps": {
        "through_the_score": """
def classifier_guided_eps(eps_uncond, grad_log_classifier, alpha_bar, w):
    sigma = jnp.sqrt(1.0 - jnp.asarray(alpha_bar, jnp.float32))
    score = -eps_uncond / jnp.maximum(sigma, 1e-20) + w * grad_log_classifier
    return jnp.where(sigma > 0, -sigma * score, eps_uncond)
""",
        "numpy": """
def classifier_guided_eps(eps_uncond, grad_log_classifier, alpha_bar, w):
    e, g = np.asarray(eps_uncond, np.float64), np.asarray(grad_log_classifier, np.float64)
    out = e - np.asarray(w, np.float64) * np.sqrt(1.0 - np.asarray(alpha_bar, np.float64)) * g
    return out.astype(np.float32)
""",
    },
    "discretized_gaussian_log_prob": {
        "scipy_float64_by_cases": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    from scipy.special import log_ndtr

    x, m = np.asarray(x0, np.float64), np.asarray(mean, np.float64)
    s = np.broadcast_to(np.asarray(std, np.float64), x.shape)
    half = 1.0 / (num_levels - 1)
    a, b = (x - half - m) / s, (x + half - m) / s
    bottom, top = x < -1.0 + half, x > 1.0 - half
    with np.errstate(divide="ignore", invalid="ignore"):
        left = log_ndtr(b) + np.log1p(-np.exp(log_ndtr(a) - log_ndtr(b)))
        right = log_ndtr(-a) + np.log1p(-np.exp(log_ndtr(-b) - log_ndtr(-a)))
    middle = np.where(a + b <= 0, left, right)
    log_p = np.where(bottom, log_ndtr(b), np.where(top, log_ndtr(-a), middle))
    return log_p.reshape(x.shape[0], -1).sum(-1).astype(np.float32)
""",
        "logcdf_at_every_edge": """
def discretized_gaussian_log_prob(x0, mean, std, num_levels=17):
    from jax.scipy.stats import norm

    level = jnp.round((x0 + 1.0) * (num_levels - 1) / 2.0)  # 0 .. K - 1
    spacing = 2.0 / (num_levels - 1)
    lower_edge = -1.0 + (level - 0.5) * spacing
    upper_edge = lower_edge + spacing
    z_lo = jnp.where(level == 0, -jnp.inf, (lower_edge - mean) / std)
    z_hi = jnp.where(level == num_levels - 1, jnp.inf, (upper_edge - mean) / std)
    # the mass of (z_lo, z_hi) from whichever side of the mean is the far one
    use_right = z_lo > -z_hi
    near, far = jnp.where(use_right, -z_lo, z_hi), jnp.where(use_right, -z_hi, z_lo)
    log_near, log_far = norm.logcdf(near), norm.logcdf(far)
    ratio = jnp.exp(log_far - log_near)
    log_p = log_near + jnp.log1p(-jnp.minimum(ratio, 1.0 - 1e-7))
    return jnp.sum(log_p, axis=tuple(range(1, x0.ndim)))
""",
    },
    "schedule_mismatch": {
        "table_of_matches": """
def schedule_mismatch(train_alpha_bars, sample_alpha_bars):
    a = jnp.asarray(train_alpha_bars, jnp.float32)
    b = jnp.asarray(sample_alpha_bars, jnp.float32)
    if a.ndim != 1 or b.ndim != 1 or min(a.size, b.size) == 0:
        raise ValueError(f"schedules must be non-empty [T] arrays, got {a.shape} and {b.shape}")
    T, T2 = a.shape[0], b.shape[0]
    match = np.asarray(jnp.abs(a[:, None] - b[None, :]) <= 1e-5)  # (T, T'): train i vs sample j
    i = np.arange(T2)
    if T == T2 and match[i, i].all():
        return ("same", 0)
    if T == T2:
        for k in [size * sign for size in range(1, T // 2 + 1) for sign in (1, -1)]:
            if np.diagonal(match, offset=-k).all():
                return ("shift", k)
    for k in range(2, T // T2 + 1):
        if match[k * (i + 1) - 1, i].all():
            return ("stride", k)
    if T == T2 and match[T - 1 - i, i].all():
        return ("reversed", 0)
    return ("other", 0)
""",
        "allclose_and_generators": """
def schedule_mismatch(train_alpha_bars, sample_alpha_bars):
    a, b = np.asarray(train_alpha_bars, float), np.asarray(sample_alpha_bars, float)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError("both schedules must have shape [T] with T >= 1")
    close = lambda x, y: len(x) == len(y) and np.allclose(x, y, rtol=0.0, atol=1e-5)
    n = len(a)
    shifts = (k for size in range(1, n // 2 + 1) for k in (size, -size))
    found = [
        ("same", 0) if close(a, b) else None,
        next((("shift", k) for k in shifts if len(b) == n
              and close(a[max(k, 0):n + min(k, 0)], b[max(-k, 0):n + min(-k, 0)])), None),
        next((("stride", k) for k in range(2, n // len(b) + 1)
              if close(a[np.arange(1, len(b) + 1) * k - 1], b)), None),
        ("reversed", 0) if close(a[::-1], b) else None,
    ]
    return next((f for f in found if f is not None), ("other", 0))
""",
    },
}
