"""Tests for genlab.data, each against an independent check (numpy, scipy, hand-built bytes)."""

import gzip
import io
import struct
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from genlab import data


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that tries to open a URL; download tests install their own fake."""

    def refuse(*args, **kwargs):
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def nearest_center(x, centers):
    """Index [N] of the nearest center [M, 2] to each point [N, 2] (numpy)."""
    sq_dist = ((np.asarray(x)[:, None, :] - np.asarray(centers)[None]) ** 2).sum(-1)
    return sq_dist.argmin(axis=1)


def grid_points(lo, hi, step):
    """Cell midpoints [K, 2] of a square grid over [lo[0], hi[0]] x [lo[1], hi[1]], cell area."""
    xs = np.arange(lo[0] + step / 2, hi[0], step)
    ys = np.arange(lo[1] + step / 2, hi[1], step)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=-1).astype(np.float32), step**2


# --- toy 2-D distributions ---------------------------------------------------------------------


def test_ring_centers_evenly_spaced_on_circle():
    centers = np.asarray(data.ring_centers(num_modes=6, radius=1.5))
    angles = 2 * np.pi * np.arange(6) / 6
    expected = 1.5 * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    assert centers.dtype == np.float32
    np.testing.assert_allclose(centers, expected, atol=1e-6)


def test_grid_centers_cover_square_grid_centered_at_origin():
    centers = np.asarray(data.grid_centers(grid_size=3, spacing=2.0))
    expected = {(a, b) for a in (-2.0, 0.0, 2.0) for b in (-2.0, 0.0, 2.0)}
    assert centers.shape == (9, 2) and centers.dtype == np.float32
    assert {tuple(map(float, c)) for c in centers} == expected


def test_gaussian_ring_modes_uniform_and_spread_is_std():
    n, std = 8000, 0.02
    x = np.asarray(data.gaussian_ring(jax.random.key(0), n, num_modes=8, radius=2.0, std=std))
    assert x.shape == (n, 2) and x.dtype == np.float32
    angles = 2 * np.pi * np.arange(8) / 8
    centers = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    modes = nearest_center(x, centers)
    counts = np.bincount(modes, minlength=8)
    assert np.all(np.abs(counts - n / 8) < 150), counts  # binomial sd is about 30
    residual = x - centers[modes]
    np.testing.assert_allclose(residual.mean(axis=0), 0.0, atol=2e-3)
    np.testing.assert_allclose(residual.std(axis=0), std, rtol=0.05)


def test_gaussian_grid_modes_uniform_and_spread_is_std():
    n, std = 10000, 0.05
    x = np.asarray(data.gaussian_grid(jax.random.key(1), n, grid_size=5, spacing=2.0, std=std))
    assert x.shape == (n, 2) and x.dtype == np.float32
    coords = 2.0 * (np.arange(5) - 2.0)
    centers = np.stack(np.meshgrid(coords, coords, indexing="ij"), axis=-1).reshape(-1, 2)
    modes = nearest_center(x, centers)
    counts = np.bincount(modes, minlength=25)
    assert np.all(np.abs(counts - n / 25) < 100), counts  # binomial sd is about 20
    np.testing.assert_allclose((x - centers[modes]).std(axis=0), std, rtol=0.05)


def test_gaussian_ring_deterministic_for_key():
    a = data.gaussian_ring(jax.random.key(3), 100)
    b = data.gaussian_ring(jax.random.key(3), 100)
    c = data.gaussian_ring(jax.random.key(4), 100)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_gaussian_ring_jit_with_static_ints_matches_eager():
    key = jax.random.key(5)
    jitted = jax.jit(data.gaussian_ring, static_argnames=("n", "num_modes"))
    np.testing.assert_allclose(
        jitted(key, n=64, num_modes=4, radius=3.0, std=jnp.float32(0.1)),
        data.gaussian_ring(key, 64, num_modes=4, radius=3.0, std=0.1),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"n": 0}, ValueError, "n"),
        ({"n": 2.5}, TypeError, "n"),
        ({"n": 10, "std": 0.0}, ValueError, "std"),
        ({"n": 10, "radius": -1.0}, ValueError, "radius"),
        ({"n": 10, "num_modes": 0}, ValueError, "num_modes"),
    ],
)
def test_gaussian_ring_rejects_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        data.gaussian_ring(jax.random.key(0), **kwargs)


def test_gaussian_grid_rejects_bad_grid_size():
    with pytest.raises(ValueError, match="grid_size"):
        data.gaussian_grid(jax.random.key(0), 10, grid_size=0)


@pytest.mark.parametrize(
    ("centers", "std", "lo", "hi"),
    [
        (data.ring_centers(8, 2.0), 0.3, (-4.0, -4.0), (4.0, 4.0)),
        (data.grid_centers(3, 1.0), 0.25, (-3.0, -3.0), (3.0, 3.0)),
    ],
)
def test_mixture_log_density_integrates_to_one(centers, std, lo, hi):
    points, area = grid_points(lo, hi, step=0.02)
    density = np.exp(np.asarray(data.mixture_log_density(points, centers, std), np.float64))
    assert density.sum() * area == pytest.approx(1.0, abs=1e-3)


def test_mixture_log_density_matches_scipy():
    centers = np.asarray(data.ring_centers(5, 1.0), np.float64)
    std = 0.4
    x = np.random.default_rng(0).normal(size=(50, 2)) * 1.5
    log_pdfs = np.stack(
        [stats.multivariate_normal(mean=c, cov=std**2 * np.eye(2)).logpdf(x) for c in centers]
    )  # (M, N)
    expected = special.logsumexp(log_pdfs, axis=0) - np.log(len(centers))
    actual = data.mixture_log_density(x, centers, std)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_mixture_log_density_finite_far_from_all_modes():
    centers = np.array([[0.0, 0.0], [1.0, 0.0]])
    std = 0.02
    x = np.array([[30.0, 40.0]])  # 50 away: every exp(-d^2 / 2 std^2) underflows to 0
    sq_dist = ((x[:, None] - centers) ** 2).sum(-1)
    expected = special.logsumexp(-sq_dist / (2 * std**2), axis=-1) - np.log(2 * np.pi * std**2)
    expected -= np.log(2)
    actual = np.asarray(data.mixture_log_density(x, centers, std))
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_mixture_log_density_keeps_batch_shape():
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    assert data.mixture_log_density(x, data.ring_centers(), 0.1).shape == (3, 4)


def test_mixture_log_density_rejects_mismatched_dims():
    with pytest.raises(ValueError, match="x must have shape"):
        data.mixture_log_density(jnp.zeros((4, 3)), data.ring_centers(), 0.1)
    with pytest.raises(ValueError, match="centers"):
        data.mixture_log_density(jnp.zeros((4, 2)), jnp.zeros(2), 0.1)
    with pytest.raises(ValueError, match="std"):
        data.mixture_log_density(jnp.zeros((4, 2)), data.ring_centers(), -0.1)


def test_two_moons_points_lie_on_the_two_half_circles():
    x, labels = data.two_moons(jax.random.key(0), 4000, noise=0.0)
    x, labels = np.asarray(x), np.asarray(labels)
    assert x.shape == (4000, 2) and x.dtype == np.float32
    assert labels.shape == (4000,) and labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1}
    assert abs(labels.mean() - 0.5) < 0.04
    upper, lower = x[labels == 0], x[labels == 1]
    np.testing.assert_allclose(np.linalg.norm(upper, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(lower - [1.0, 0.5], axis=1), 1.0, atol=1e-5)
    assert upper[:, 1].min() >= -1e-6 and lower[:, 1].max() <= 0.5 + 1e-6
    # t ~ Uniform[0, pi] gives E[sin t] = 2 / pi on the upper moon.
    assert upper[:, 1].mean() == pytest.approx(2 / np.pi, abs=0.03)


def test_two_moons_noise_has_requested_std():
    x0, labels0 = data.two_moons(jax.random.key(2), 2000, noise=0.0)
    x, labels = data.two_moons(jax.random.key(2), 2000, noise=0.1)
    np.testing.assert_array_equal(labels, labels0)
    np.testing.assert_allclose(np.std(np.asarray(x - x0), axis=0), 0.1, rtol=0.07)


def test_two_moons_deterministic_for_key():
    a = data.two_moons(jax.random.key(7), 50)
    b = data.two_moons(jax.random.key(7), 50)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_two_moons_log_density_integrates_to_one():
    points, area = grid_points((-1.7, -1.2), (2.7, 1.7), step=0.02)
    log_p = data.two_moons_log_density(points, noise=0.1, num_points=256)
    assert np.exp(np.asarray(log_p, np.float64)).sum() * area == pytest.approx(1.0, abs=2e-3)


def test_two_moons_log_density_matches_adaptive_quadrature():
    noise = 0.1
    x = np.array([[0.0, 1.05], [1.0, -0.45], [0.5, 0.25], [2.0, 0.4], [-0.9, 0.2]])

    def kernel(t, point, moon):
        curve = (
            np.array([np.cos(t), np.sin(t)])
            if moon == 0
            else np.array([1 - np.cos(t), 0.5 - np.sin(t)])
        )
        return np.exp(-((point - curve) ** 2).sum() / (2 * noise**2)) / (2 * np.pi * noise**2)

    expected = [
        np.log(
            sum(
                0.5 / np.pi * integrate.quad(kernel, 0, np.pi, args=(p, m), limit=200)[0]
                for m in (0, 1)
            )
        )
        for p in x
    ]
    actual = data.two_moons_log_density(x, noise=noise)
    np.testing.assert_allclose(actual, expected, atol=1e-3)


def test_two_moons_log_density_higher_at_samples_than_far_away():
    x, _ = data.two_moons(jax.random.key(0), 500, noise=0.1)
    box = jax.random.uniform(
        jax.random.key(1), (500, 2), minval=jnp.array([-1.5, -1.0]), maxval=jnp.array([2.5, 1.5])
    )
    at_samples = data.two_moons_log_density(x, noise=0.1).mean()
    uniform_in_box = data.two_moons_log_density(box, noise=0.1).mean()
    far = data.two_moons_log_density(jnp.array([[0.5, 0.25], [4.0, 4.0], [-3.0, -2.0]]))
    assert at_samples > uniform_in_box + 5
    assert far[0] < at_samples - 5  # between the moons, 4.4 noise std from both
    assert jnp.all(far[1:] < -100) and jnp.all(jnp.isfinite(far))


def test_two_moons_log_density_rejects_bad_arguments():
    with pytest.raises(ValueError, match="noise"):
        data.two_moons_log_density(jnp.zeros((2, 2)), noise=0.0)
    with pytest.raises(ValueError, match="num_points"):
        data.two_moons_log_density(jnp.zeros((2, 2)), num_points=0)


# --- digits ------------------------------------------------------------------------------------


def test_load_digits_shapes_range_and_labels():
    x, labels = data.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(x * 16, np.round(x * 16))  # values k / 16, k = 0..16
    assert np.array_equal(np.unique(labels), np.arange(10))
    assert np.bincount(labels).min() >= 170


def test_load_digits_as_images_is_reshaped_flat_data():
    flat, labels = data.load_digits()
    images, image_labels = data.load_digits(as_images=True)
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    np.testing.assert_array_equal(images.reshape(1797, 64), flat)
    np.testing.assert_array_equal(image_labels, labels)


# --- IDX files and MNIST -----------------------------------------------------------------------


def idx_bytes(magic, shape, payload):
    """Hand-built IDX file content (independent of write_idx)."""
    return struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_read_idx_parses_hand_built_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "images").write_bytes(idx_bytes(0x00000803, (2, 3, 4), images.tobytes()))
    (tmp_path / "labels.gz").write_bytes(
        gzip.compress(idx_bytes(0x00000801, (3,), b"\x07\x00\x09"))
    )
    read = data.read_idx(tmp_path / "images")
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "labels.gz"), [7, 0, 9])


def test_write_idx_writes_standard_header(tmp_path):
    data.write_idx(tmp_path / "labels", np.array([1, 2, 3], dtype=np.uint8))
    data.write_idx(tmp_path / "images.gz", np.zeros((5, 28, 28), dtype=np.uint8))
    assert (tmp_path / "labels").read_bytes() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"
    unzipped = gzip.decompress((tmp_path / "images.gz").read_bytes())
    assert unzipped[:16] == struct.pack(">4I", 0x00000803, 5, 28, 28)
    assert len(unzipped) == 16 + 5 * 28 * 28


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trips_write_idx(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    data.write_idx(tmp_path / f"images{suffix}", images)
    data.write_idx(tmp_path / f"labels{suffix}", labels)
    np.testing.assert_array_equal(data.read_idx(tmp_path / f"images{suffix}"), images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / f"labels{suffix}"), labels)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (idx_bytes(0x12340801, (3,), b"\x01\x02\x03"), "magic"),
        (idx_bytes(0x00000D01, (3,), b"\x01\x02\x03"), "dtype code"),
        (idx_bytes(0x00000802, (1, 3), b"\x01\x02\x03"), "dimensions"),
        (idx_bytes(0x00000801, (10,), b"\x01" * 7), "payload"),
        (idx_bytes(0x00000803, (2, 2, 2), b"\x01" * 9), "payload"),
        (b"\x00\x00\x08\x03\x00\x00", "header"),
        (b"\x00\x00", "header"),
    ],
)
def test_read_idx_rejects_corrupt_file_naming_it(tmp_path, content, problem):
    path = tmp_path / "corrupt-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=problem) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_truncated_gzip_naming_it(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x00000801, (1000,), bytes(1000)))[:-12])
    with pytest.raises(ValueError, match="gzip") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "absent")


def test_write_idx_rejects_bad_dtype_and_ndim(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        data.write_idx(tmp_path / "x", np.zeros(3, dtype=np.int32))
    with pytest.raises(ValueError, match="ndim"):
        data.write_idx(tmp_path / "x", np.zeros((3, 4), dtype=np.uint8))


MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_fake_mnist(directory, split, n=6, suffix=""):
    """Tiny MNIST-format files in directory; returns the uint8 images [n, 28, 28] and labels."""
    rng = np.random.default_rng(len(split) + n)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, :2] = [0, 255]
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    image_name, label_name = MNIST_NAMES[split]
    data.write_idx(directory / f"{image_name}{suffix}", images)
    data.write_idx(directory / f"{label_name}{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_load_mnist_reads_fake_directory(tmp_path, split, suffix):
    images, labels = write_fake_mnist(tmp_path, split, suffix=suffix)
    x, y = data.load_mnist(tmp_path, split=split)
    assert x.shape == (6, 28, 28) and x.dtype == np.float32
    assert y.shape == (6,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x * 255, images, atol=1e-4)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_reads_only_the_requested_split(tmp_path):
    write_fake_mnist(tmp_path, "train", n=4)
    write_fake_mnist(tmp_path, "test", n=3)
    assert data.load_mnist(tmp_path, "train")[0].shape[0] == 4
    assert data.load_mnist(tmp_path, "test")[0].shape[0] == 3


def test_load_mnist_default_directory_from_env_var(tmp_path, monkeypatch):
    images, _ = write_fake_mnist(tmp_path, "train")
    monkeypatch.setenv("GENLAB_DATA_DIR", str(tmp_path))
    np.testing.assert_allclose(data.load_mnist()[0] * 255, images, atol=1e-4)


def test_load_mnist_default_directory_is_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("GENLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist()
    assert str(tmp_path / ".cache" / "genlab" / "mnist") in str(info.value)


def test_load_mnist_missing_files_raise_file_not_found_with_hints(tmp_path):
    directory = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(directory, split="test")
    message = str(info.value)
    assert str(directory) in message
    assert "t10k-images-idx3-ubyte" in message
    assert "download=True" in message and "load_digits()" in message


def test_load_mnist_rejects_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        data.load_mnist(tmp_path, split="validation")


def test_load_mnist_rejects_mismatched_lengths(tmp_path):
    data.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    data.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="expected images"):
        data.load_mnist(tmp_path)


def test_load_mnist_download_fetches_missing_files_from_mirror(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    images, labels = write_fake_mnist(served, "test", suffix=".gz")
    requests = []

    def fake_urlopen(url, timeout):
        requests.append((url, timeout))
        return io.BytesIO((served / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "cache" / "mnist"
    x, y = data.load_mnist(target, split="test", download=True)
    np.testing.assert_allclose(x * 255, images, atol=1e-4)
    np.testing.assert_array_equal(y, labels)
    assert requests == [
        (data.MNIST_MIRROR + "t10k-images-idx3-ubyte.gz", 10),
        (data.MNIST_MIRROR + "t10k-labels-idx1-ubyte.gz", 10),
    ]
    assert sorted(p.name for p in target.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    data.load_mnist(target, split="test", download=True)  # files present: no new request
    assert len(requests) == 2


@pytest.mark.parametrize("failure", [urllib.error.URLError("offline"), TimeoutError("timed out")])
def test_load_mnist_download_failure_raises_os_error(tmp_path, monkeypatch, failure):
    def failing_urlopen(url, timeout):
        raise failure

    monkeypatch.setattr(urllib.request, "urlopen", failing_urlopen)
    with pytest.raises(OSError, match="could not download") as info:
        data.load_mnist(tmp_path, download=True)
    assert data.MNIST_MIRROR in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# --- text --------------------------------------------------------------------------------------


def test_pydoc_corpus_contains_topics_in_sorted_order():
    from pydoc_data.topics import topics

    corpus = data.pydoc_corpus()
    assert len(corpus) >= sum(map(len, topics.values()))
    position = 0
    for name in sorted(topics):
        found = corpus.find(topics[name], position)
        assert found >= position, name
        position = found + len(topics[name])


def test_pydoc_corpus_deterministic_and_truncated():
    corpus = data.pydoc_corpus()
    assert data.pydoc_corpus() == corpus
    assert data.pydoc_corpus(max_chars=1000) == corpus[:1000]
    assert len(data.pydoc_corpus(max_chars=1000)) == 1000


def test_pydoc_corpus_rejects_bad_max_chars():
    with pytest.raises(ValueError, match="max_chars"):
        data.pydoc_corpus(max_chars=0)
    with pytest.raises(TypeError, match="max_chars"):
        data.pydoc_corpus(max_chars="10")


def test_load_text_reads_utf8(tmp_path):
    text = "生成对抗网络 GAN\nself-attention: é ü\n"
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode("utf-8"))
    assert data.load_text(path) == text
    assert data.load_text(str(path)) == text


def test_load_text_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        data.load_text(tmp_path / "absent.txt")


def test_load_text_non_utf8_raises_value_error_naming_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt.*UTF-8"):
        data.load_text(path)


# --- tokenizer and batches ---------------------------------------------------------------------


def test_char_tokenizer_vocab_is_sorted_unique_characters():
    tokenizer = data.CharTokenizer.from_text("hello world")
    assert tokenizer.vocab == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tokenizer.vocab_size == 8


def test_char_tokenizer_round_trip():
    text = data.pydoc_corpus(max_chars=5000) + "生成 ✓"
    tokenizer = data.CharTokenizer.from_text(text)
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert all(tokenizer.vocab[i] == ch for i, ch in zip(ids, text))
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer.encode("")) == ""


def test_char_tokenizer_decode_accepts_list_numpy_and_jax():
    tokenizer = data.CharTokenizer(["a", "b", "c"])
    assert tokenizer.decode([2, 0, 1]) == "cab"
    assert tokenizer.decode(np.array([2, 0, 1], dtype=np.int64)) == "cab"
    assert tokenizer.decode(jnp.array([2, 0, 1])) == "cab"


def test_char_tokenizer_encode_unknown_char_names_char_and_position():
    tokenizer = data.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'x' at position 2"):
        tokenizer.encode("abxa")


@pytest.mark.parametrize("ids", [[0, 3], [-1]])
def test_char_tokenizer_decode_rejects_out_of_range_ids(ids):
    tokenizer = data.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=f"id {ids[-1]} at position {len(ids) - 1}"):
        tokenizer.decode(ids)


def test_char_tokenizer_decode_rejects_bad_shape_and_dtype():
    tokenizer = data.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"\[T\]"):
        tokenizer.decode([[0, 1]])
    with pytest.raises(TypeError, match="integers"):
        tokenizer.decode([0.0, 1.0])


def test_char_tokenizer_rejects_bad_vocab_and_text():
    with pytest.raises(ValueError, match="duplicate"):
        data.CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="single characters"):
        data.CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="non-empty"):
        data.CharTokenizer.from_text("")
    with pytest.raises(TypeError, match="str"):
        data.CharTokenizer.from_text(["a", "b"])


def test_batch_windows_are_contiguous_slices_and_targets_shift_by_one():
    tokens = np.random.default_rng(0).integers(0, 50, size=200).astype(np.int32)
    x, y = data.batch_windows(jax.random.key(0), tokens, batch_size=16, block_size=8)
    assert x.shape == y.shape == (16, 8)
    assert x.dtype == y.dtype == jnp.int32
    windows = np.lib.stride_tricks.sliding_window_view(tokens, 9)  # (L - 8, 9)
    for row_x, row_y in zip(np.asarray(x), np.asarray(y)):
        pair = np.concatenate([row_x, row_y[-1:]])
        assert np.any(np.all(windows == pair, axis=1))
        np.testing.assert_array_equal(row_x[1:], row_y[:-1])


def test_batch_windows_reaches_every_start_and_never_overruns():
    tokens = np.arange(12)
    x, y = data.batch_windows(jax.random.key(1), tokens, batch_size=2000, block_size=4)
    starts = np.asarray(x[:, 0])
    assert set(starts.tolist()) == set(range(8))  # last start 7: y ends at token 11
    np.testing.assert_array_equal(x, starts[:, None] + np.arange(4))
    np.testing.assert_array_equal(y, x + 1)


def test_batch_windows_shortest_valid_stream():
    tokens = [5, 3, 9, 1]
    x, y = data.batch_windows(jax.random.key(2), tokens, batch_size=3, block_size=3)
    np.testing.assert_array_equal(x, [[5, 3, 9]] * 3)
    np.testing.assert_array_equal(y, [[3, 9, 1]] * 3)


def test_batch_windows_deterministic_for_key():
    tokens = jnp.arange(100)
    a = data.batch_windows(jax.random.key(3), tokens, 8, 5)
    b = data.batch_windows(jax.random.key(3), tokens, 8, 5)
    c = data.batch_windows(jax.random.key(4), tokens, 8, 5)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_batch_windows_rejects_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="block_size"):
        data.batch_windows(key, np.arange(4), batch_size=2, block_size=4)
    with pytest.raises(ValueError, match="tokens must be a 1-D"):
        data.batch_windows(key, np.zeros((2, 10), np.int32), batch_size=2, block_size=4)
    with pytest.raises(TypeError, match="integer"):
        data.batch_windows(key, np.zeros(10, np.float32), batch_size=2, block_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        data.batch_windows(key, np.arange(10), batch_size=0, block_size=4)
