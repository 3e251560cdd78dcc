"""Mutants of chapter 00's graded exercises (solutions/00_jax_primer/00_jax_primer.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources are executed in the
kernel after the solution notebook has run, so they may use what its imports cell defined:
``functools``, ``jax``, ``jnp``, ``np``, ``nnx`` and ``optax``.
"""

WRONG = {
    "logsumexp": {
        "naive_overflow": """
def logsumexp(x, axis=-1):
    return jnp.log(jnp.sum(jnp.exp(x), axis=axis))
""",
        "max_not_added_back": """
def logsumexp(x, axis=-1):
    m = jnp.max(x, axis=axis, keepdims=True)
    return jnp.log(jnp.sum(jnp.exp(x - m), axis=axis))
""",
        "keepdims_shape": """
def logsumexp(x, axis=-1):
    m = jnp.max(x, axis=axis, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True)) + m
""",
        "all_neg_inf_gives_nan": """
def logsumexp(x, axis=-1):
    m = jnp.max(x, axis=axis, keepdims=True)
    return jnp.log(jnp.sum(jnp.exp(x - m), axis=axis)) + jnp.squeeze(m, axis=axis)
""",
        "axis_ignored": """
def logsumexp(x, axis=-1):
    m = jnp.max(x, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return jnp.log(jnp.sum(jnp.exp(x - m), axis=-1)) + jnp.squeeze(m, axis=-1)
""",
        "global_max_shift": """
def logsumexp(x, axis=-1):
    m = jnp.max(x)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return jnp.log(jnp.sum(jnp.exp(x - m), axis=axis)) + m
""",
        "mean_shift": """
def logsumexp(x, axis=-1):
    finite = jnp.where(jnp.isfinite(x), x, 0.0)
    c = jnp.mean(finite, axis=axis, keepdims=True)
    return jnp.log(jnp.sum(jnp.exp(x - c), axis=axis)) + jnp.squeeze(c, axis=axis)
""",
    },
    "sample_mixture": {
        "one_key_for_both_draws": """
def sample_mixture(key, means, stds, n):
    components = jax.random.randint(key, (n,), 0, means.shape[0])
    noise = jax.random.normal(key, (n,))
    return means[components] + stds[components] * noise
""",
        "keys_swapped": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_noise, (n,), 0, means.shape[0])
    noise = jax.random.normal(k_component, (n,))
    return means[components] + stds[components] * noise
""",
        "variance_used_as_std": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0])
    noise = jax.random.normal(k_noise, (n,))
    return means[components] + stds[components] ** 2 * noise
""",
        "noise_from_unsplit_key": """
def sample_mixture(key, means, stds, n):
    k_component, _ = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0])
    noise = jax.random.normal(key, (n,))
    return means[components] + stds[components] * noise
""",
        "last_component_never_drawn": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0] - 1)
    noise = jax.random.normal(k_noise, (n,))
    return means[components] + stds[components] * noise
""",
    },
    "mse_grad": {
        "missing_factor_two": """
def mse_grad(w, x, y):
    return x.T @ (x @ w - y) / x.shape[0]
""",
        "sum_instead_of_mean": """
def mse_grad(w, x, y):
    return jax.grad(lambda w: jnp.sum((x @ w - y) ** 2))(w)
""",
        "sign_flipped": """
def mse_grad(w, x, y):
    return 2.0 * x.T @ (y - x @ w) / x.shape[0]
""",
        "residual_not_squared": """
def mse_grad(w, x, y):
    return jax.grad(lambda w: jnp.mean(x @ w - y))(w)
""",
        "gradient_wrt_x": """
def mse_grad(w, x, y):
    return jax.grad(lambda x: jnp.mean((x @ w - y) ** 2))(x)
""",
    },
    "per_example_grads": {
        "full_batch_gradient_tiled": """
def per_example_grads(w, x, y):
    grad = jax.grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
    return jnp.tile(grad, (x.shape[0], 1))
""",
        "divided_by_batch_size": """
def per_example_grads(w, x, y):
    def loss(w, x_n, y_n):
        return (jnp.dot(x_n, w) - y_n) ** 2 / x.shape[0]
    return jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(w, x, y)
""",
        "missing_factor_two": """
def per_example_grads(w, x, y):
    return x * (x @ w - y)[:, None]
""",
        "sign_flipped": """
def per_example_grads(w, x, y):
    return 2.0 * x * (y - x @ w)[:, None]
""",
        "transposed": """
def per_example_grads(w, x, y):
    return (2.0 * x * (x @ w - y)[:, None]).T
""",
    },
    "power_sum": {
        "not_jitted": """
def power_sum(x, n):
    return sum(x**k for k in range(1, n + 1))
""",
        "starts_at_k_zero": """
@functools.partial(jax.jit, static_argnames="n")
def power_sum(x, n):
    return sum(x**k for k in range(0, n + 1))
""",
        "off_by_one": """
@functools.partial(jax.jit, static_argnames="n")
def power_sum(x, n):
    total = x
    for k in range(2, n):
        total = total + x**k
    return total
""",
        "n_not_static": """
@jax.jit
def power_sum(x, n):
    total = x
    for k in range(2, n + 1):
        total = total + x**k
    return total
""",
        "only_last_power": """
@functools.partial(jax.jit, static_argnames="n")
def power_sum(x, n):
    return x**n
""",
        "multiplies_by_k": """
@functools.partial(jax.jit, static_argnames="n")
def power_sum(x, n):
    return sum(k * x for k in range(1, n + 1))
""",
    },
    "MLP": {
        "missing_relu": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        return self.out(self.hidden(x))
""",
        "relu_on_output_too": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.out(jax.nn.relu(self.hidden(x))))
""",
        "tanh_instead_of_relu": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))
""",
        "no_biases": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))
""",
        "layers_created_in_other_order": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))
""",
        "relu_before_hidden_layer": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        return self.out(self.hidden(jax.nn.relu(x)))
""",
    },
    "train_step": {
        "no_optimizer_update": """
@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    return loss
""",
        "returns_loss_after_update": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    grads = nnx.grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss_fn(model)
""",
        "sum_instead_of_mean": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.sum((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "gradient_ascent": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, jax.tree.map(lambda g: -g, grads))
    return loss
""",
        "mean_over_batch_only": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean(jnp.sum((model(x) - y) ** 2, axis=-1))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "updates_twice": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    optimizer.update(model, grads)
    return loss
""",
    },
    "noisy_copies": {
        "same_key_for_every_copy": """
def noisy_copies(key, x, num_copies):
    return jnp.stack([x + jax.random.normal(key, x.shape, x.dtype) for _ in range(num_copies)])
""",
        "noise_without_x": """
def noisy_copies(key, x, num_copies):
    keys = jax.random.split(key, num_copies)
    return jnp.stack([jax.random.normal(k, x.shape, x.dtype) for k in keys])
""",
        "one_big_draw": """
def noisy_copies(key, x, num_copies):
    return x + jax.random.normal(key, (num_copies, *x.shape), x.dtype)
""",
        "split_one_extra_key": """
def noisy_copies(key, x, num_copies):
    keys = jax.random.split(key, num_copies + 1)[1:]
    return jnp.stack([x + jax.random.normal(k, x.shape, x.dtype) for k in keys])
""",
        "key_split_sequentially": """
def noisy_copies(key, x, num_copies):
    copies = []
    for _ in range(num_copies):
        key, subkey = jax.random.split(key)
        copies.append(x + jax.random.normal(subkey, x.shape, x.dtype))
    return jnp.stack(copies)
""",
    },
}

CORRECT = {
    "logsumexp": {
        "jax_nn_logsumexp": """
def logsumexp(x, axis=-1):
    return jax.nn.logsumexp(x, axis=axis)
""",
        "scipy_special": """
def logsumexp(x, axis=-1):
    return jax.scipy.special.logsumexp(x, axis=axis)
""",
        "moveaxis_then_last_axis": """
def logsumexp(x, axis=-1):
    x = jnp.moveaxis(x, axis, -1)
    m = jnp.max(x, axis=-1)
    m = jnp.where(m == -jnp.inf, 0.0, m)
    return m + jnp.log(jnp.sum(jnp.exp(x - m[..., None]), axis=-1))
""",
        "stop_gradient_shift": """
def logsumexp(x, axis=-1):
    m = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    m = jnp.where(jnp.isneginf(m), jnp.zeros_like(m), m)
    shifted = jnp.log(jnp.sum(jnp.exp(x - m), axis=axis))
    return shifted + jnp.squeeze(m, axis=axis)
""",
    },
    "sample_mixture": {
        "take_with_keywords": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_component, shape=(n,), minval=0, maxval=len(means))
    noise = jax.random.normal(k_noise, shape=(n,))
    return jnp.take(means, components) + jnp.take(stds, components) * noise
""",
        "one_hot_matmul": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0])
    one_hot = jax.nn.one_hot(components, means.shape[0])
    noise = jax.random.normal(k_noise, (n,))
    return one_hot @ means + (one_hot @ stds) * noise
""",
        "keys_indexed": """
def sample_mixture(key, means, stds, n):
    keys = jax.random.split(key)
    components = jax.random.randint(keys[0], (n,), 0, means.shape[0])
    mu, sigma = means[components], stds[components]
    return mu + sigma * jax.random.normal(keys[1], (n,))
""",
    },
    "mse_grad": {
        "closed_form": """
def mse_grad(w, x, y):
    return 2.0 / x.shape[0] * x.T @ (x @ w - y)
""",
        "value_and_grad_of_sum": """
def mse_grad(w, x, y):
    _, grad = jax.value_and_grad(lambda v: jnp.sum((x @ v - y) ** 2) / len(y))(w)
    return grad
""",
        "jacrev_with_argnums": """
def mse_grad(w, x, y):
    def loss(x, w, y):
        return jnp.mean(jnp.square(jnp.einsum("nd,d->n", x, w) - y))
    return jax.jacrev(loss, argnums=1)(x, w, y)
""",
    },
    "per_example_grads": {
        "broadcasting_closed_form": """
def per_example_grads(w, x, y):
    residual = x @ w - y  # (N,)
    return 2.0 * residual[:, None] * x  # (N, D)
""",
        "jacobian_of_squared_errors": """
def per_example_grads(w, x, y):
    return jax.jacrev(lambda w: (x @ w - y) ** 2)(w)
""",
        "vmap_over_stacked_examples": """
def per_example_grads(w, x, y):
    def one(example):
        x_n, y_n = example[:-1], example[-1]
        return jax.grad(lambda w: (x_n @ w - y_n) ** 2)(w)
    return jax.vmap(one)(jnp.concatenate([x, y[:, None]], axis=1))
""",
    },
    "power_sum": {
        "fori_loop": """
@functools.partial(jax.jit, static_argnames="n")
def power_sum(x, n):
    def body(k, carry):
        power, total = carry
        power = power * x
        return power, total + power
    return jax.lax.fori_loop(1, n, body, (x, x))[1]
""",
        "horner_static_argnums": """
@functools.partial(jax.jit, static_argnums=1)
def power_sum(x, n):
    total = x
    for _ in range(n - 1):
        total = x * (1.0 + total)
    return total
""",
        "stacked_powers": """
@functools.partial(jax.jit, static_argnames=("n",))
def power_sum(x, n):
    powers = jnp.stack([x**k for k in range(1, n + 1)])
    return jnp.sum(powers, axis=0)
""",
    },
    "MLP": {
        "jnp_maximum": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.maximum(self.hidden(x), 0.0))
""",
        "manual_matmuls": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        h = x @ self.hidden.kernel[...] + self.hidden.bias[...]
        h = nnx.relu(h)
        return h @ self.out.kernel[...] + self.out.bias[...]
""",
        "stores_sizes_too": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.d_in, self.d_out = d_in, d_out
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        h = jnp.where(self.hidden(x) > 0, self.hidden(x), 0.0)
        return self.out(h)
""",
    },
    "train_step": {
        "not_jitted": """
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "grad_with_aux_loss": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        loss = jnp.mean(jnp.square(model(x) - y))
        return loss, loss

    grads, loss = nnx.grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss
""",
        "optax_l2_loss": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return 2.0 * jnp.mean(optax.l2_loss(model(x), y))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
    },
    "noisy_copies": {
        "python_loop": """
def noisy_copies(key, x, num_copies):
    keys = jax.random.split(key, num_copies)
    return jnp.stack([x + jax.random.normal(keys[i], x.shape, x.dtype) for i in range(num_copies)])
""",
        "vmap_with_broadcast": """
def noisy_copies(key, x, num_copies):
    def one_copy(k):
        return x + jax.random.normal(k, x.shape, x.dtype)
    return jax.vmap(one_copy)(jax.random.split(key, num_copies))
""",
        "jitted_static_count": """
@functools.partial(jax.jit, static_argnums=2)
def noisy_copies(key, x, num_copies):
    keys = jax.random.split(key, num_copies)
    noise = jnp.stack([jax.random.normal(k, jnp.shape(x), x.dtype) for k in keys])
    return noise + x[None]
""",
    },
}
