"""Matplotlib figures for the notebooks.

Every helper takes arrays (NumPy or JAX) and an optional ``ax``; it draws on ``ax`` (or on a new
figure) and returns the Figure. None calls ``plt.show()``: a notebook shows the returned figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _axes(ax, figsize=(5.0, 3.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def curves(
    series: Mapping[str, object],
    *,
    x: object | None = None,
    ax=None,
    xlabel: str = "step",
    ylabel: str = "",
    title: str = "",
    logy: bool = False,
) -> Figure:
    """Line plot of named 1-D series, e.g. ``{"loss": history["loss"]}``; ``x`` [N] is shared."""
    fig, ax = _axes(ax)
    for name, values in series.items():
        values = np.asarray(values).reshape(-1)
        xs = np.arange(len(values)) if x is None else np.asarray(x).reshape(-1)
        if len(xs) != len(values):
            raise ValueError(f"series {name!r} has {len(values)} points but x has {len(xs)}")
        ax.plot(xs, values, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if len(series) > 1:
        ax.legend()
    return fig


def bars(
    values: Mapping[str, float], *, ax=None, ylabel: str = "", title: str = "", logy: bool = False
) -> Figure:
    """Bar chart of named scalars (e.g. timings), each bar labelled with its value."""
    fig, ax = _axes(ax)
    names, heights = list(values), [float(v) for v in values.values()]
    drawn = ax.bar(names, heights, color="tab:blue")
    ax.bar_label(drawn, fmt="%.3g")
    if logy:
        ax.set_yscale("log")
    ax.set(ylabel=ylabel, title=title)
    return fig


def scatter_2d(
    points: object,
    *,
    ax=None,
    color: str | None = None,
    label: str | None = None,
    title: str = "",
    size: float = 4.0,
    alpha: float = 0.5,
) -> Figure:
    """Scatter plot of 2-D points ``[N, 2]`` with equal axis scales."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape [N, 2], got {points.shape}")
    fig, ax = _axes(ax, figsize=(4.0, 4.0))
    ax.scatter(points[:, 0], points[:, 1], s=size, alpha=alpha, color=color, label=label)
    ax.set_aspect("equal")
    ax.set_title(title)
    if label:
        ax.legend()
    return fig


def density_2d(
    log_density: Callable[[np.ndarray], object],
    *,
    extent: tuple[float, float, float, float] = (-3.0, 3.0, -3.0, 3.0),
    resolution: int = 200,
    ax=None,
    title: str = "",
) -> Figure:
    """Heat map of ``exp(log_density(points))`` on a grid; ``log_density``: [M, 2] -> [M]."""
    x0, x1, y0, y1 = extent
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)  # (R*R, 2)
    density = np.exp(np.asarray(log_density(grid))).reshape(resolution, resolution)
    fig, ax = _axes(ax, figsize=(4.0, 4.0))
    ax.imshow(density, origin="lower", extent=extent, cmap="viridis", aspect="equal")
    ax.set_title(title)
    return fig


def image_grid(images: object, *, ncols: int = 8, ax=None, title: str = "", cmap="gray") -> Figure:
    """Tile grayscale images ``[N, H, W]`` (values in [0, 1]) into one picture, row by row."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape [N, H, W], got {images.shape}")
    n, h, w = images.shape
    nrows = -(-n // ncols)
    canvas = np.ones((nrows * (h + 1) + 1, ncols * (w + 1) + 1))
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = image
    fig, ax = _axes(ax, figsize=(ncols * 0.6 + 0.4, nrows * 0.6 + 0.4))
    ax.imshow(canvas, cmap=cmap, vmin=0.0, vmax=1.0)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def heatmap(
    matrix: object,
    *,
    ax=None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    xticklabels=None,
    yticklabels=None,
) -> Figure:
    """A matrix ``[R, C]`` as an image with a colour bar (e.g. attention weights)."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must have shape [R, C], got {matrix.shape}")
    fig, ax = _axes(ax, figsize=(4.5, 4.0))
    shown = ax.imshow(matrix, cmap="viridis")
    fig.colorbar(shown, ax=ax)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), labels=list(xticklabels))
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), labels=list(yticklabels))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return fig


def attention_maps(
    weights: object,
    *,
    labels: object | None = None,
    titles: list[str] | None = None,
    axes=None,
    cmap: str = "viridis",
    suptitle: str = "",
) -> Figure:
    """One heatmap per head of attention weights ``[H, T_q, T_k]`` (or one map ``[T_q, T_k]``).

    Rows are queries, columns keys; every map shares the color scale [0, 1]. ``labels``
    (length ``T_k``, e.g. the input tokens) name the key columns and, when ``T_q == T_k``, the
    query rows. ``axes`` is an optional sequence of ``H`` axes to draw on.
    """
    maps = np.asarray(weights, dtype=np.float64)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"weights must have shape [H, T_q, T_k] or [T_q, T_k], got {maps.shape}")
    num_heads, t_q, t_k = maps.shape
    if titles is not None and len(titles) != num_heads:
        raise ValueError(f"got {len(titles)} titles for {num_heads} heads")
    if axes is None:
        fig, axes = plt.subplots(1, num_heads, figsize=(2.6 * num_heads + 0.6, 2.8), squeeze=False)
        axes = axes[0]
    else:
        axes = list(np.ravel(axes))
        if len(axes) != num_heads:
            raise ValueError(f"got {len(axes)} axes for {num_heads} heads")
        fig = axes[0].figure
    image = None
    for h, ax in enumerate(axes):
        image = ax.imshow(maps[h], cmap=cmap, vmin=0.0, vmax=1.0, aspect="equal")
        ax.set(title=titles[h] if titles else f"head {h}", xlabel="key", ylabel="query")
        if labels is not None:
            names = [str(label) for label in labels]
            if len(names) != t_k:
                raise ValueError(f"got {len(names)} labels for T_k = {t_k} keys")
            ax.set_xticks(range(t_k), names)
            if t_q == t_k:
                ax.set_yticks(range(t_q), names)
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
