"""Mutants of chapter 00's graded exercises (solutions/00_jax_primer/00_jax_primer.ipynb).

``WRONG[name]`` maps a variant name to source code defining ``name`` with a plausible mistake;
each must fail the notebook's ``test_<name>`` cell (hidden tests included). ``CORRECT[name]``
holds valid alternatives to the solution; each must pass it. The sources are executed in the
kernel after the solution notebook has run, so they may use what its imports cell defined:
``functools``, ``jax``, ``jnp``, ``np``, ``nnx`` and ``optax``.
"""

WRONG = {
    "logsumexp": {
        "jax_nn_logsumexp": """
def logsumexp(x, axis=-1):
    return jax.nn.logsumexp(x, axis=axis)
""",
        "scipy_special": """
def logsumexp(x, axis=-1):
    return jax.scipy.special.logsumexp(x, axis=axis)
""",
        "log_softmax_read_backwards": """
def logsumexp(x, axis=-1):
    first = jnp.take(x, 0, axis=axis)
    return first - jnp.take(jax.nn.log_softmax(x, axis=axis), 0, axis=axis)
""",
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
        "variance_used_as_std": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0])
    noise = jax.random.normal(k_noise, (n,))
    return means[components] + stds[components] ** 2 * noise
""",
        "last_component_never_drawn": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0] - 1)
    noise = jax.random.normal(k_noise, (n,))
    return means[components] + stds[components] * noise
""",
        "numpy_global_generator": """
def sample_mixture(key, means, stds, n):
    components = np.random.randint(0, means.shape[0], size=n)
    noise = np.random.normal(size=n).astype(np.float32)
    return means[components] + stds[components] * noise
""",
        "one_component_per_call": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    component = jax.random.randint(k_component, (), 0, means.shape[0])
    noise = jax.random.normal(k_noise, (n,))
    return means[component] + stds[component] * noise
""",
        "one_noise_for_all_samples": """
def sample_mixture(key, means, stds, n):
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0])
    noise = jax.random.normal(k_noise, ())
    return means[components] + stds[components] * noise
""",
        "mixes_means_not_samples": """
def sample_mixture(key, means, stds, n):
    noise = jax.random.normal(key, (n,))
    return jnp.mean(means) + jnp.sqrt(jnp.mean(stds**2)) * noise
""",
    },
    "mixture_moments": {
        "within_variance_only": """
def mixture_moments(means, stds):
    return jnp.mean(means), jnp.mean(stds**2)
""",
        "stds_used_as_variances": """
def mixture_moments(means, stds):
    return jnp.mean(means), jnp.mean(stds + means**2) - jnp.mean(means) ** 2
""",
        "average_std_squared": """
def mixture_moments(means, stds):
    return jnp.mean(means), jnp.mean(stds) ** 2 + jnp.var(means)
""",
        "sample_variance_of_the_means": """
def mixture_moments(means, stds):
    return jnp.mean(means), jnp.mean(stds**2) + jnp.var(means, ddof=1)
""",
        "means_spread_only": """
def mixture_moments(means, stds):
    return jnp.mean(means), jnp.var(means)
""",
        "monte_carlo_estimate": """
def mixture_moments(means, stds):
    k_component, k_noise = jax.random.split(jax.random.key(0))
    components = jax.random.randint(k_component, (100_000,), 0, means.shape[0])
    x = means[components] + stds[components] * jax.random.normal(k_noise, (100_000,))
    return jnp.mean(x), jnp.var(x)
""",
    },
    "mse_grad": {
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
        "grad_imported_under_another_name": """
from jax import grad as derivative

def mse_grad(w, x, y):
    return derivative(lambda v: jnp.mean((x @ v - y) ** 2))(w)
""",
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
        "zero_initialised_kernels": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        zeros = nnx.initializers.zeros
        self.hidden = nnx.Linear(d_in, d_hidden, kernel_init=zeros, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, kernel_init=zeros, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))
""",
        "ignores_rngs": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=nnx.Rngs(0))
        self.out = nnx.Linear(d_hidden, d_out, rngs=nnx.Rngs(1))

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
        "gradient_wrt_inputs": """
@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = jax.value_and_grad(lambda x: jnp.mean((model(x) - y) ** 2))(x)
    optimizer.update(model, grads)
    return loss
""",
        "loss_of_the_previous_step": """
_previous = []

def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    _previous.append(loss)
    return _previous[-2] if len(_previous) > 1 else loss
""",
        "half_the_gradient": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return 0.5 * jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return 2.0 * loss
""",
        "nanmean_gradient_is_nan": """
@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.nanmean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss
""",
        "where_after_the_square": """
@nnx.jit
def train_step(model, optimizer, x, y):
    observed = ~jnp.isnan(y)

    def loss_fn(model):
        squares = jnp.where(observed, (model(x) - y) ** 2, 0.0)
        return jnp.sum(squares) / jnp.maximum(jnp.sum(observed), 1)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "mean_over_all_entries": """
@nnx.jit
def train_step(model, optimizer, x, y):
    observed = ~jnp.isnan(y)

    def loss_fn(model):
        return jnp.mean(jnp.where(observed, model(x) - jnp.nan_to_num(y), 0.0) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "missing_targets_read_as_zero": """
@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - jnp.nan_to_num(y)) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "empty_batch_divides_by_zero": """
@nnx.jit
def train_step(model, optimizer, x, y):
    observed = ~jnp.isnan(y)

    def loss_fn(model):
        residual = jnp.where(observed, model(x) - jnp.where(observed, y, 0.0), 0.0)
        return jnp.sum(residual**2) / jnp.sum(observed)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
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
        "two_keys_taken_in_turn": """
def noisy_copies(key, x, num_copies):
    keys = jax.random.split(key, 2)
    return jnp.stack([x + jax.random.normal(keys[i % 2], x.shape, x.dtype)
                      for i in range(num_copies)])
""",
        "uniform_noise": """
def noisy_copies(key, x, num_copies):
    keys = jax.random.split(key, num_copies)
    return jnp.stack([x + jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0) for k in keys])
""",
        "one_number_per_copy": """
def noisy_copies(key, x, num_copies):
    keys = jax.random.split(key, num_copies)
    return jnp.stack([x + jax.random.normal(k, (), x.dtype) for k in keys])
""",
        "numpy_global_generator": """
def noisy_copies(key, x, num_copies):
    noise = np.random.normal(size=(num_copies, *x.shape))
    return (x + noise).astype(x.dtype)
""",
        "copies_shifted_by_their_index": """
def noisy_copies(key, x, num_copies):
    noise = jax.random.normal(key, x.shape, x.dtype)
    return jnp.stack([x + noise + 0.01 * i for i in range(num_copies)])
""",
    },
    "clipped_mean_grad": {
        "clips_the_mean_gradient": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    _check(max_norm)
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    return optax.clip_by_global_norm(max_norm).update(grads, None)[0]
""",
        "clips_each_array_separately": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    _check(max_norm)
    grads = _per_example(model, x, y)

    def clip(g):
        norms = jnp.sqrt(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1))
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-30))
        return jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0)

    return jax.tree.map(clip, grads)
""",
        "rescales_small_gradients_up": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    _check(max_norm)
    grads = _per_example(model, x, y)
    norms = _norms(grads)
    return _scaled_mean(grads, max_norm / jnp.maximum(norms, 1e-30))
""",
        "nan_for_a_zero_gradient": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    _check(max_norm)
    grads = _per_example(model, x, y)
    norms = _norms(grads)
    return _scaled_mean(grads, jnp.minimum(norms, max_norm) / norms)
""",
        "sum_over_examples": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    _check(max_norm)
    grads = _per_example(model, x, y)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(_norms(grads), 1e-30))
    return jax.tree.map(lambda g: g.shape[0] * g, _scaled_mean(grads, scale))
""",
        "max_norm_not_checked": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    grads = _per_example(model, x, y)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(_norms(grads), 1e-30))
    return _scaled_mean(grads, scale)
""",
    },
}

CORRECT = {
    "logsumexp": {
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
        "keys_in_the_other_order": """
def sample_mixture(key, means, stds, n):
    k_noise, k_component = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0])
    return means[components] + stds[components] * jax.random.normal(k_noise, (n,))
""",
        "categorical_and_vmap_per_sample": """
def sample_mixture(key, means, stds, n):
    def one(k):
        k_c, k_z = jax.random.split(k)
        c = jax.random.categorical(k_c, jnp.zeros(means.shape[0]))
        return means[c] + stds[c] * jax.random.normal(k_z)
    return jax.vmap(one)(jax.random.split(key, n))
""",
    },
    "mixture_moments": {
        "second_moment_minus_mean_squared": """
def mixture_moments(means, stds):
    mean = jnp.mean(means)
    return mean, jnp.mean(stds**2 + means**2) - mean**2
""",
        "law_of_total_variance_with_var": """
def mixture_moments(means, stds):
    return jnp.mean(means), jnp.mean(jnp.square(stds)) + jnp.var(means)
""",
        "numpy_float64": """
def mixture_moments(means, stds):
    m, s = np.asarray(means, np.float64), np.asarray(stds, np.float64)
    mean = m.sum() / m.size
    return jnp.float32(mean), jnp.float32(((s**2) + (m - mean) ** 2).sum() / m.size)
""",
    },
    "mse_grad": {
        "closed_form": """
def mse_grad(w, x, y):
    return 2.0 / x.shape[0] * x.T @ (x @ w - y)
""",
        "einsum_two_steps": """
def mse_grad(w, x, y):
    residuals = jnp.einsum("nd,d->n", x, w) - y
    return jnp.einsum("n,nd->d", 2.0 * residuals, x) / residuals.shape[0]
""",
        "mean_of_per_example_gradients": """
def mse_grad(w, x, y):
    return jnp.mean(2.0 * (x @ w - y)[:, None] * x, axis=0)
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
        "layers_created_in_other_order": """
class MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, *, rngs):
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))
""",
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
    observed = ~jnp.isnan(y)
    safe_y = jnp.nan_to_num(y)

    def loss_fn(model):
        residual = jnp.where(observed, model(x) - safe_y, 0.0)
        return jnp.sum(residual**2) / jnp.maximum(observed.sum(), 1)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "grad_with_aux_loss": """
@nnx.jit
def train_step(model, optimizer, x, y):
    weights = jnp.isfinite(y).astype(jnp.float32)
    targets = jnp.where(weights > 0, y, 0.0)

    def loss_fn(model):
        loss = jnp.sum(weights * jnp.square(model(x) - targets)) / jnp.maximum(weights.sum(), 1.0)
        return loss, loss

    grads, loss = nnx.grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss
""",
        "optax_l2_loss": """
@nnx.jit
def train_step(model, optimizer, x, y):
    mask = ~jnp.isnan(y)
    clean = jnp.where(mask, y, 0.0)

    def loss_fn(model):
        per_entry = 2.0 * optax.l2_loss(jnp.where(mask, model(x), clean), clean)
        return jnp.sum(per_entry) / jnp.clip(jnp.sum(mask), 1, None)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "grad_then_loss_before_update": """
def train_step(model, optimizer, x, y):
    observed = ~jnp.isnan(y)
    count = max(int(observed.sum()), 1)
    y0 = jnp.where(observed, y, 0.0)

    def loss_fn(model):
        return jnp.sum(jnp.where(observed, model(x) - y0, 0.0) ** 2) / count

    loss = loss_fn(model)
    grads = nnx.grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
        "functional_split_merge": """
@jax.jit
def _step(graphdef, state, x, y):
    model, optimizer = nnx.merge(graphdef, state)
    observed = ~jnp.isnan(y)
    y = jnp.where(observed, y, 0.0)

    def loss_fn(model):
        errors = jnp.where(observed, model(x) - y, 0.0)
        return jnp.sum(errors * errors) / jnp.maximum(jnp.sum(observed), 1)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss, nnx.state((model, optimizer))


def train_step(model, optimizer, x, y):
    graphdef, state = nnx.split((model, optimizer))
    loss, state = _step(graphdef, state, x, y)
    nnx.update((model, optimizer), state)
    return loss
""",
        "double_where_on_the_square": """
@nnx.jit
def train_step(model, optimizer, x, y):
    observed = ~jnp.isnan(y)
    safe = jnp.where(observed, y, 0.0)

    def loss_fn(model):
        squares = jnp.where(observed, (model(x) - safe) ** 2, 0.0)
        return jnp.sum(squares) / jnp.maximum(jnp.sum(observed), 1)

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
        "one_big_draw": """
def noisy_copies(key, x, num_copies):
    return x + jax.random.normal(key, (num_copies, *x.shape), x.dtype)
""",
        "key_split_sequentially": """
def noisy_copies(key, x, num_copies):
    copies = []
    for _ in range(num_copies):
        key, subkey = jax.random.split(key)
        copies.append(x + jax.random.normal(subkey, x.shape, x.dtype))
    return jnp.stack(copies)
""",
        "fold_in_the_index": """
def noisy_copies(key, x, num_copies):
    return jnp.stack([x + jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
                      for i in range(num_copies)])
""",
    },
    "clipped_mean_grad": {
        "vmap_over_split_state": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    _check(max_norm)
    grads = _per_example(model, x, y)
    norms = _norms(grads)
    scale = jnp.where(norms > max_norm, max_norm / jnp.where(norms > 0, norms, 1.0), 1.0)
    return _scaled_mean(grads, scale)
""",
        "python_loop_and_optax_clip": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    if max_norm <= 0:
        raise ValueError("max_norm must be positive")
    clip = optax.clip_by_global_norm(max_norm)
    total = None
    for n in range(x.shape[0]):
        g = nnx.grad(lambda m: jnp.mean((m(x[n:n + 1]) - y[n:n + 1]) ** 2))(model)
        g, _ = clip.update(g, clip.init(g))
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    return jax.tree.map(lambda t: t / x.shape[0], total)
""",
        "ravel_pytree": """
def _check(max_norm):
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


def _per_example(model, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x_n[None]) - y_n[None]) ** 2)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads):
    return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                        for g in jax.tree.leaves(grads)))


def _scaled_mean(grads, scale):
    return jax.tree.map(lambda g: jnp.mean(g * scale.reshape(-1, *[1] * (g.ndim - 1)), axis=0),
                        grads)

def clipped_mean_grad(model, x, y, max_norm):
    _check(max_norm)
    from jax.flatten_util import ravel_pytree
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    flat, unravel = ravel_pytree(params)

    def loss_one(flat, x_n, y_n):
        m = nnx.merge(graphdef, unravel(flat), rest)
        return jnp.mean((m(x_n) - y_n) ** 2)

    g = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(flat, x, y)  # (N, P)
    norms = jnp.linalg.norm(g, axis=1, keepdims=True)
    g = g * jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12))
    return unravel(jnp.mean(g, axis=0))
""",
    },
}
