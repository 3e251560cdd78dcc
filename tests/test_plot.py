from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from genlab import plot


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_curves_draws_each_series_on_the_given_axes():
    fig, ax = plt.subplots()
    out = plot.curves({"train": [3, 2, 1], "val": [4, 3, 2.5]}, ax=ax, logy=True)
    assert out is fig
    assert [line.get_label() for line in ax.get_lines()] == ["train", "val"]
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), [4, 3, 2.5])
    assert ax.get_yscale() == "log"


def test_curves_rejects_mismatched_x():
    with pytest.raises(ValueError, match="series 'loss' has 3 points but x has 2"):
        plot.curves({"loss": [1, 2, 3]}, x=[0, 1])


def test_bars_labels_values():
    fig = plot.bars({"first call": 0.5, "later calls": 0.001})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["first call", "later calls"]
    assert [round(p.get_height(), 3) for p in ax.patches] == [0.5, 0.001]


def test_scatter_2d_checks_shape():
    fig = plot.scatter_2d(np.zeros((10, 2)), label="data")
    assert isinstance(fig, Figure) and len(fig.axes[0].collections[0].get_offsets()) == 10
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot.scatter_2d(np.zeros((10, 3)))


def test_density_2d_shows_exp_of_the_log_density():
    fig = plot.density_2d(lambda p: -np.sum(p**2, axis=-1), resolution=21)
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape == (21, 21)
    assert np.isclose(image.max(), 1.0) and np.unravel_index(image.argmax(), image.shape) == (
        10,
        10,
    )


def test_image_grid_tiles_images_in_rows():
    images = np.zeros((5, 4, 4))
    images[4] = 1.0
    fig = plot.image_grid(images, ncols=3)
    canvas = fig.axes[0].get_images()[0].get_array()
    assert canvas.shape == (2 * 5 + 1, 3 * 5 + 1)
    assert canvas[6:10, 6:10].min() == 1.0 and canvas[1:5, 1:5].max() == 0.0
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        plot.image_grid(np.zeros((4, 4)))


def test_heatmap_labels_axes():
    fig = plot.heatmap(np.eye(3), xticklabels="abc", yticklabels="xyz", xlabel="key")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "key"
    with pytest.raises(ValueError, match=r"\[R, C\]"):
        plot.heatmap(np.zeros(3))


def test_attention_maps_draws_one_map_per_head_on_a_shared_scale():
    weights = np.full((3, 4, 4), 0.25)
    fig = plot.attention_maps(weights, labels=list("abcd"), titles=["x", "y", "z"])
    assert isinstance(fig, Figure)
    heads = [ax for ax in fig.axes if ax.get_title() in {"x", "y", "z"}]
    assert len(heads) == 3
    image = heads[0].get_images()[0]
    assert image.get_clim() == (0.0, 1.0)
    np.testing.assert_array_equal(image.get_array(), weights[0])
    assert [t.get_text() for t in heads[1].get_xticklabels()] == list("abcd")


def test_attention_maps_accepts_one_map_and_given_axes():
    fig, axes = plt.subplots(1, 2)
    out = plot.attention_maps(np.eye(3)[None].repeat(2, 0), axes=axes)
    assert out is fig
    assert axes[1].get_title() == "head 1"
    assert len(plot.attention_maps(np.eye(3)).axes) == 2  # the map and its colorbar


def test_attention_maps_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"weights must have shape \[H, T_q, T_k\]"):
        plot.attention_maps(np.ones(3))
    with pytest.raises(ValueError, match="got 2 labels for T_k = 3 keys"):
        plot.attention_maps(np.ones((1, 3, 3)), labels=["a", "b"])
