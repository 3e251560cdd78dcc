"""Data for the GenLab chapters: toy 2-D densities, digits, MNIST, text and a char tokenizer.

Shape alphabet: N samples, D dimensions of a point, M mixture components (modes), B batch,
T sequence (block) length, V vocabulary size.

- Toy 2-D distributions (chapter 01, GAN math): a Gaussian ring, a Gaussian grid and two moons,
  each with its log density, so a generator's samples can be scored against the truth.
  Samplers take an explicit ``jax.random`` key and return float32 ``jax.Array``s; they can be
  wrapped in ``jax.jit`` with the integer arguments (``n``, ``num_modes``, ``grid_size``) static.
- Digits (chapters 01 and 02): scikit-learn's bundled 8x8 digits, offline; MNIST from a local
  copy of the standard IDX files (optionally downloaded). Loaders return NumPy arrays.
- Text (chapter 04): Python's own pydoc topics as an offline corpus, any UTF-8 file,
  ``CharTokenizer`` and ``batch_windows`` for next-token training pairs.
"""

from __future__ import annotations

import gzip
import http.client
import math
import os
import struct
import urllib.request
import zlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> None:
    """Raise unless ``value`` is a Python/NumPy integer (not bool) that is >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")


def _check_positive(name: str, value: object, allow_zero: bool = False) -> None:
    """Raise if ``value`` is a plain number that is not > 0 (>= 0 with ``allow_zero``).

    Arrays, including tracers inside ``jax.jit``, are not checked: their values are unknown.
    """
    if isinstance(value, (int, float, np.number)):
        ok = value >= 0 if allow_zero else value > 0
        if not ok:
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be {bound}, got {value}")


# ---------------------------------------------------------------------------------------------
# Toy 2-D distributions: equal-weight isotropic Gaussian mixtures
# ---------------------------------------------------------------------------------------------


def ring_centers(num_modes: int = 8, radius: float = 2.0) -> jax.Array:
    """Centers of the Gaussian ring: ``num_modes`` points evenly spaced on a circle.

    Center m sits at angle ``2 * pi * m / num_modes``: ``radius * (cos, sin)`` of that angle.

    Args:
        num_modes: M, number of modes (int >= 1).
        radius: radius of the circle (> 0).

    Returns:
        centers: float32 [M, 2].
    """
    _check_int("num_modes", num_modes, minimum=1)
    _check_positive("radius", radius)
    angles = 2 * jnp.pi * jnp.arange(num_modes, dtype=jnp.float32) / num_modes  # (M,)
    return radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)  # (M, 2)


def grid_centers(grid_size: int = 5, spacing: float = 2.0) -> jax.Array:
    """Centers of the Gaussian grid: a ``grid_size`` x ``grid_size`` grid centered at the origin.

    Neighbouring centers are ``spacing`` apart. Center ``i * grid_size + j`` has coordinates
    ``(c[i], c[j])`` with ``c[k] = (k - (grid_size - 1) / 2) * spacing``.

    Args:
        grid_size: G, number of modes along each axis (int >= 1); M = G * G.
        spacing: distance between neighbouring centers (> 0).

    Returns:
        centers: float32 [M, 2].
    """
    _check_int("grid_size", grid_size, minimum=1)
    _check_positive("spacing", spacing)
    coords = (jnp.arange(grid_size, dtype=jnp.float32) - (grid_size - 1) / 2) * spacing  # (G,)
    gx, gy = jnp.meshgrid(coords, coords, indexing="ij")  # (G, G) each
    return jnp.stack([gx.ravel(), gy.ravel()], axis=-1)  # (M, 2)


@partial(jax.jit, static_argnames="n")
def _sample_mixture(key: jax.Array, centers: jax.Array, std: ArrayLike, n: int) -> jax.Array:
    """n samples [N, D] of the equal-weight isotropic Gaussian mixture at centers [M, D]."""
    mode_key, noise_key = jax.random.split(key)
    modes = jax.random.randint(mode_key, (n,), 0, centers.shape[0])  # (N,)
    noise = jax.random.normal(noise_key, (n, centers.shape[1]), dtype=jnp.float32)  # (N, D)
    return centers[modes] + std * noise  # (N, D)


def gaussian_ring(
    key: jax.Array, n: int, num_modes: int = 8, radius: float = 2.0, std: float = 0.02
) -> jax.Array:
    """Sample the Gaussian ring: an equal-weight mixture of isotropic Gaussians on a circle.

    Density: ``p(x) = (1/M) sum_m N(x; c_m, std^2 I)`` with ``c_m = ring_centers(M, radius)[m]``;
    evaluate it with ``mixture_log_density(x, ring_centers(num_modes, radius), std)``.

    Args:
        key: a ``jax.random`` key; the same key gives the same samples.
        n: N, number of samples (int >= 1; static under ``jax.jit``).
        num_modes: M, number of modes (int >= 1; static under ``jax.jit``).
        radius: radius of the circle of centers (> 0).
        std: standard deviation of each Gaussian, per coordinate (> 0).

    Returns:
        x: float32 [N, 2].
    """
    _check_int("n", n, minimum=1)
    _check_positive("std", std)
    return _sample_mixture(key, ring_centers(num_modes, radius), std, n)


def gaussian_grid(
    key: jax.Array, n: int, grid_size: int = 5, spacing: float = 2.0, std: float = 0.05
) -> jax.Array:
    """Sample the Gaussian grid: an equal-weight mixture of isotropic Gaussians on a square grid.

    Density: ``p(x) = (1/M) sum_m N(x; c_m, std^2 I)`` with the M = grid_size^2 centers of
    ``grid_centers(grid_size, spacing)``; evaluate it with ``mixture_log_density``.

    Args:
        key: a ``jax.random`` key; the same key gives the same samples.
        n: N, number of samples (int >= 1; static under ``jax.jit``).
        grid_size: G, modes along each axis (int >= 1; static under ``jax.jit``).
        spacing: distance between neighbouring centers (> 0).
        std: standard deviation of each Gaussian, per coordinate (> 0).

    Returns:
        x: float32 [N, 2].
    """
    _check_int("n", n, minimum=1)
    _check_positive("std", std)
    return _sample_mixture(key, grid_centers(grid_size, spacing), std, n)


@jax.jit
def _mixture_log_density(x: jax.Array, centers: jax.Array, std: ArrayLike) -> jax.Array:
    """log p(x) [...] for x [..., D] under the equal-weight isotropic mixture at centers [M, D]."""
    num_modes, dim = centers.shape
    sq_dist = jnp.sum((x[..., None, :] - centers) ** 2, axis=-1)  # (..., M)
    log_kernel = -0.5 * sq_dist / std**2 - 0.5 * dim * jnp.log(2 * jnp.pi * std**2)  # (..., M)
    return jax.nn.logsumexp(log_kernel, axis=-1) - jnp.log(num_modes)  # (...)


def mixture_log_density(x: ArrayLike, centers: ArrayLike, std: ArrayLike) -> jax.Array:
    """Exact log density of an equal-weight mixture of isotropic Gaussians.

    ``log p(x) = logsumexp_m(log N(x; c_m, std^2 I)) - log M``, computed with a stable
    logsumexp, so points far from every center give a finite (very negative) value, not -inf.

    Args:
        x: points, float [..., D] (D = 2 for the toy distributions).
        centers: mixture centers, float [M, D] (e.g. ``ring_centers()``, ``grid_centers()``).
        std: standard deviation of every component, per coordinate (> 0).

    Returns:
        log_p: float32 [...], one log density per point (natural log).
    """
    x = jnp.asarray(x, dtype=jnp.float32)
    centers = jnp.asarray(centers, dtype=jnp.float32)
    if centers.ndim != 2 or centers.shape[0] == 0:
        raise ValueError(f"centers must have shape [M, D] with M >= 1, got {centers.shape}")
    if x.ndim == 0 or x.shape[-1] != centers.shape[1]:
        raise ValueError(
            f"x must have shape [..., D] with D = {centers.shape[1]} (from centers), got {x.shape}"
        )
    _check_positive("std", std)
    return _mixture_log_density(x, centers, std)


# ---------------------------------------------------------------------------------------------
# Two moons
# ---------------------------------------------------------------------------------------------


def _moon_points(t: jax.Array, labels: jax.Array) -> jax.Array:
    """Noise-free two-moons points [..., 2] at angles t [...] on moons labels [...] (0 or 1).

    Moon 0 (upper): ``(cos t, sin t)``; moon 1 (lower): ``(1 - cos t, 0.5 - sin t)``.
    """
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)  # (..., 2)
    lower = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=-1)  # (..., 2)
    return jnp.where(labels[..., None] == 0, upper, lower)  # (..., 2)


@partial(jax.jit, static_argnames="n")
def _sample_two_moons(key: jax.Array, noise: ArrayLike, n: int) -> tuple[jax.Array, jax.Array]:
    label_key, angle_key, noise_key = jax.random.split(key, 3)
    labels = jax.random.bernoulli(label_key, 0.5, (n,)).astype(jnp.int32)  # (N,)
    t = jax.random.uniform(angle_key, (n,), minval=0.0, maxval=jnp.pi)  # (N,)
    eps = jax.random.normal(noise_key, (n, 2), dtype=jnp.float32)  # (N, 2)
    return _moon_points(t, labels) + noise * eps, labels


def two_moons(key: jax.Array, n: int, noise: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """Sample two interleaving half circles ("two moons") with isotropic Gaussian noise.

    Each sample picks a moon with probability 1/2 and an angle ``t ~ Uniform[0, pi]``:
    moon 0 (upper) is ``(cos t, sin t)``, moon 1 (lower) is ``(1 - cos t, 0.5 - sin t)``;
    then ``noise * N(0, I)`` is added. ``two_moons_log_density`` gives the density.

    Args:
        key: a ``jax.random`` key; the same key gives the same samples.
        n: N, number of samples (int >= 1; static under ``jax.jit``).
        noise: standard deviation of the Gaussian noise, per coordinate (>= 0).

    Returns:
        x: float32 [N, 2], the points.
        labels: int32 [N], the moon of each point (0 upper, 1 lower).
    """
    _check_int("n", n, minimum=1)
    _check_positive("noise", noise, allow_zero=True)
    return _sample_two_moons(key, noise, n)


def two_moons_log_density(x: ArrayLike, noise: float = 0.1, num_points: int = 2048) -> jax.Array:
    """Log density of ``two_moons(key, n, noise)``, by numerical integration over the angle.

    The density has no closed form: ``p(x) = 1/2 sum_moon E_t[N(x; moon(t), noise^2 I)]`` with
    ``t ~ Uniform[0, pi]``. The expectation is approximated by the midpoint rule: the average
    of the Gaussian kernel over ``num_points`` angles ``t_i = (i + 1/2) * pi / num_points`` on
    each moon. That is an equal-weight mixture of 2 * num_points Gaussians, evaluated with
    ``mixture_log_density``. The error is negligible once the spacing between neighbouring
    angles' points (about ``pi / num_points``) is much smaller than ``noise``; memory and time
    grow as N * num_points.

    Args:
        x: points, float [..., 2].
        noise: the sampler's noise standard deviation (> 0).
        num_points: K, integration points per moon (int >= 1).

    Returns:
        log_p: float32 [...], approximate log density per point (natural log).
    """
    _check_int("num_points", num_points, minimum=1)
    _check_positive("noise", noise)
    t = (jnp.arange(num_points, dtype=jnp.float32) + 0.5) * jnp.pi / num_points  # (K,)
    t = jnp.concatenate([t, t])  # (2K,)
    labels = jnp.repeat(jnp.arange(2), num_points)  # (2K,)
    return mixture_log_density(x, _moon_points(t, labels), noise)


# ---------------------------------------------------------------------------------------------
# Digits: scikit-learn's 8x8 set and MNIST (IDX files)
# ---------------------------------------------------------------------------------------------


def load_digits(as_images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images); works offline.

    Pixel values 0..16 are divided by 16.

    Args:
        as_images: False for flat vectors [N, 64], True for images [N, 8, 8].

    Returns:
        x: float32 [N, 64] or [N, 8, 8], values in [0, 1].
        labels: int32 [N], the digit 0..9.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    digits = sklearn_load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # (N, 64)
    if as_images:
        x = x.reshape(-1, 8, 8)  # (N, 8, 8)
    return x, digits.target.astype(np.int32)


_IDX_UBYTE = 0x08
_IDX_NDIMS = (1, 3)  # labels [N] (magic 0x00000801) and images [N, rows, cols] (0x00000803)

MNIST_MIRROR = "https://storage.googleapis.com/cvdf-datasets/mnist/"
"""Base URL the ``train-*`` / ``t10k-*`` ``.gz`` files are fetched from by ``load_mnist``."""

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of unsigned bytes (the MNIST format); gzip if the name ends in ``.gz``.

    Format (big-endian): magic ``0x00 0x00 <dtype code> <ndim>``, then ndim uint32 sizes, then
    the payload. Supported: dtype code 0x08 (unsigned byte) with ndim 1 (labels, magic
    0x00000801) or 3 (images, magic 0x00000803).

    Args:
        path: file to read.

    Returns:
        array: uint8 [N] (labels) or [N, rows, cols] (images).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, if the gzip stream, the magic number, the dtype code, the
            number of dimensions or the payload size (compared with the header) is wrong.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: not a valid gzip file ({err})") from err
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zeros, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zeros != 0:
        raise ValueError(
            f"{path}: bad magic number 0x{raw[:4].hex()}, an IDX file starts with two zero bytes"
        )
    if dtype_code != _IDX_UBYTE:
        raise ValueError(
            f"{path}: unsupported IDX dtype code 0x{dtype_code:02x}, "
            f"expected 0x{_IDX_UBYTE:02x} (unsigned byte)"
        )
    if ndim not in _IDX_NDIMS:
        raise ValueError(f"{path}: unsupported number of dimensions {ndim}, expected 1 or 3")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: truncated header ({len(raw)} of {header_size} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    payload = raw[header_size:]
    expected = math.prod(shape)
    if len(payload) != expected:
        raise ValueError(
            f"{path}: payload has {len(payload)} bytes but the header shape {shape} "
            f"needs {expected}"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (the MNIST format); gzip if the name ends in ``.gz``.

    The inverse of ``read_idx``; handy to make small test or custom datasets.

    Args:
        path: file to write (overwritten if it exists).
        array: uint8 [N] (labels) or [N, rows, cols] (images).
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"array must have dtype uint8, got {array.dtype}")
    if array.ndim not in _IDX_NDIMS:
        raise ValueError(f"array must have ndim 1 or 3, got shape {array.shape}")
    header = struct.pack(f">HBB{array.ndim}I", 0, _IDX_UBYTE, array.ndim, *array.shape)
    data = header + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _default_mnist_dir() -> Path:
    """``$GENLAB_DATA_DIR`` if set, else ``~/.cache/genlab/mnist``."""
    env = os.environ.get("GENLAB_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "genlab" / "mnist"


def _find_idx(directory: Path, name: str) -> Path | None:
    """The existing file ``name`` or ``name.gz`` in directory (plain first), else None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(url: str, destination: Path) -> None:
    """Fetch url into destination (written whole, then renamed); OSError on network errors."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            data = response.read()
    except (OSError, http.client.HTTPException) as err:
        raise OSError(
            f"could not download {url} ({err}). The course works offline: copy the MNIST files "
            f"into {destination.parent} by hand, or use load_digits()."
        ) from err
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial_file = destination.with_name(destination.name + ".part")
    partial_file.write_bytes(data)
    partial_file.replace(destination)


def load_mnist(
    directory: str | os.PathLike | None = None, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from the standard IDX files in a local directory, optionally downloaded first.

    Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (split "train") or
    ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (split "test"), each plain or with
    a ``.gz`` suffix. With ``download=True`` missing files are fetched from ``MNIST_MIRROR``
    (10 s timeout); nothing touches the network otherwise.

    Args:
        directory: folder holding the files; default ``$GENLAB_DATA_DIR`` if set, else
            ``~/.cache/genlab/mnist``.
        split: "train" (N = 60,000) or "test" (N = 10,000).
        download: fetch missing files into ``directory``.

    Returns:
        x: float32 [N, 28, 28], pixel values divided by 255, in [0, 1].
        labels: int32 [N], the digit 0..9.

    Raises:
        FileNotFoundError: files missing and ``download=False``.
        OSError: the download failed.
        ValueError: bad ``split``, a corrupt file, or images and labels of different lengths.
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(_MNIST_FILES)}, got {split!r}")
    directory = _default_mnist_dir() if directory is None else Path(directory)
    names = _MNIST_FILES[split]
    paths = []
    for name in names:
        path = _find_idx(directory, name)
        if path is None and download:
            path = directory / f"{name}.gz"
            _download(MNIST_MIRROR + path.name, path)
        paths.append(path)
    missing = [name for name, path in zip(names, paths) if path is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST {split} files not found in {directory}: looked for "
            f"{', '.join(f'{name}[.gz]' for name in missing)}. Pass download=True to fetch "
            f"them from {MNIST_MIRROR}, or use load_digits() (8x8 digits, always offline)."
        )
    images, labels = (read_idx(path) for path in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"MNIST {split} in {directory}: expected images [N, rows, cols] and labels [N], "
            f"got {images.shape} and {labels.shape}"
        )
    return images.astype(np.float32) / 255, labels.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def pydoc_corpus(max_chars: int | None = None) -> str:
    """An offline English corpus: Python's own help topics (``pydoc_data.topics.topics``).

    The topic texts, sorted by topic name for determinism, joined by newlines (about 470k
    characters on Python 3.11).

    Args:
        max_chars: keep only the first ``max_chars`` characters (int >= 1), or None for all.

    Returns:
        text: str.
    """
    from pydoc_data.topics import topics

    if max_chars is not None:
        _check_int("max_chars", max_chars, minimum=1)
    text = "\n".join(topics[name] for name in sorted(topics))
    return text if max_chars is None else text[:max_chars]


def load_text(path: str | os.PathLike) -> str:
    """The contents of a UTF-8 text file.

    Args:
        path: the file.

    Returns:
        text: str.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not valid UTF-8 (the message gives the byte offset).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_text: no text file at {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"load_text: {path} is not valid UTF-8 (byte {err.start}: {err.reason})"
        ) from err


class CharTokenizer:
    """Character-level tokenizer: token id i is the character ``vocab[i]``.

    Build one from a corpus with ``CharTokenizer.from_text(text)`` (vocabulary = the sorted
    unique characters), or from an explicit vocabulary with ``CharTokenizer(vocab)``.

    Attributes:
        vocab: list[str] of V distinct single characters.
        vocab_size: V.
    """

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        for i, ch in enumerate(vocab):
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"vocab must hold single characters, got {ch!r} at index {i}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab must not contain duplicate characters")
        self.vocab = vocab
        self.vocab_size = len(vocab)
        self._ids = {ch: i for i, ch in enumerate(vocab)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """A tokenizer whose vocabulary is the sorted unique characters of ``text`` (a str)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text must be non-empty to build a vocabulary")
        return cls(sorted(set(text)))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (a str of length T): int32 [T].

        Raises ValueError naming the first character not in the vocabulary and its position.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = [self._ids.get(ch) for ch in text]
        if None in ids:
            position = ids.index(None)
            raise ValueError(
                f"encode: character {text[position]!r} at position {position} "
                "is not in the vocabulary"
            )
        return np.array(ids, dtype=np.int32)

    def decode(self, ids: ArrayLike | Sequence[int]) -> str:
        """The text of token ids: integer [T] (list, NumPy or JAX array) -> str of length T.

        Raises ValueError for an id outside [0, V), naming the id and its position.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"ids must have shape [T], got {ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if bad.size:
            position = int(bad[0])
            raise ValueError(
                f"decode: id {int(ids[position])} at position {position} is outside "
                f"[0, {self.vocab_size})"
            )
        return "".join(self.vocab[i] for i in ids.tolist())


@partial(jax.jit, static_argnames=("batch_size", "block_size"))
def _sample_windows(
    key: jax.Array, tokens: jax.Array, batch_size: int, block_size: int
) -> tuple[jax.Array, jax.Array]:
    starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - block_size)  # (B,)
    positions = starts[:, None] + jnp.arange(block_size)  # (B, T)
    return tokens[positions], tokens[positions + 1]  # (B, T), (B, T)


def batch_windows(
    key: jax.Array, tokens: ArrayLike, batch_size: int, block_size: int
) -> tuple[jax.Array, jax.Array]:
    """Random next-token training pairs: contiguous windows of a token stream.

    Draws B start positions ``s ~ Uniform{0, ..., L - T - 1}`` with
    ``jax.random.randint(key, (B,), 0, L - T)`` and returns ``x[b] = tokens[s_b : s_b + T]``
    and ``y[b] = tokens[s_b + 1 : s_b + T + 1]`` (the next token at each position).

    Args:
        key: a ``jax.random`` key; the same key gives the same batch.
        tokens: integer [L], the token stream (e.g. ``CharTokenizer.encode(text)``), L >= T + 1.
        batch_size: B (int >= 1; static under ``jax.jit``).
        block_size: T (int >= 1; static under ``jax.jit``).

    Returns:
        x: int32 [B, T], inputs.
        y: int32 [B, T], targets, x shifted by one position in ``tokens``.
    """
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("block_size", block_size, minimum=1)
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array [L], got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"tokens must hold integer ids, got dtype {tokens.dtype}")
    if tokens.shape[0] < block_size + 1:
        raise ValueError(
            f"tokens has length {tokens.shape[0]}, too short for block_size={block_size}: "
            f"need at least block_size + 1 = {block_size + 1}"
        )
    return _sample_windows(key, tokens.astype(jnp.int32), batch_size, block_size)
