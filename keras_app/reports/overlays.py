"""Heat-map overlays: an explanation drawn over its image, with its title and colour bar.

Grad-CAM (keras_app.evaluation.gradcam) and the DICOM node's overlay draw through
here, so a map looks the same wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from keras_app.reports.plots import DPI, new_figure

NO_EVIDENCE = "no positive evidence"
HEATMAP_LABEL = "evidence for the class (relative)"


def draw_heatmap_overlay(
    ax,
    image: np.ndarray,
    heatmap: np.ndarray,
    title: str,
    *,
    alpha: float = 0.4,
    colormap: str = "jet",
    colorbar: bool = True,
    fontsize: float = 14,
):
    """Draws `heatmap` (0..1, any size) over `image` (uint8 RGB) on `ax`, titled.

    The map is stretched over the whole image (bilinear). An all-zero map is
    drawn transparent and the panel says `NO_EVIDENCE` in its middle.

    Args:
        ax: the Axes to draw on (its figure gets the colour bar).
        image: uint8 `[H, W, 3]` (or `[H, W]` greyscale).
        heatmap: float `[h, w]` in 0..1, e.g. from `keras_app.gradcam.gradcam`.
        title: the panel title, e.g. "PNEUMONIA  p=0.97".
        alpha: opacity of the heat map.
        colormap: a matplotlib colormap name.
        colorbar: add a colour bar beside `ax`.
        fontsize: title size in points; the other labels follow it.

    Returns:
        The heat map's AxesImage.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received alpha={alpha}")
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"expected a heat map [h, w]. Received shape={heatmap.shape}")
    height, width = np.shape(image)[:2]
    ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None)
    blank = not float(heatmap.max()) > 0.0
    shown = ax.imshow(
        np.clip(heatmap, 0.0, 1.0),
        cmap=colormap,
        vmin=0.0,
        vmax=1.0,
        alpha=0.0 if blank else alpha,
        interpolation="bilinear",
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize)
    if blank:
        ax.text(
            0.5,
            0.5,
            NO_EVIDENCE,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.7, "boxstyle": "round"},
        )
    if colorbar:
        heat_colorbar(ax.figure, colormap, fontsize, ax=ax, fraction=0.046, pad=0.03)
    return shown


def heat_colorbar(fig: Figure, colormap: str, fontsize: float, **where):
    """An opaque 0..1 colour bar for heat maps (the overlay's own would carry its alpha)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormap), **where)
    bar.set_label(HEATMAP_LABEL, fontsize=fontsize * 0.8)
    bar.ax.tick_params(labelsize=fontsize * 0.75)
    return bar


def overlay_figure(
    image: np.ndarray,
    heatmap: np.ndarray,
    title: str,
    *,
    min_side: int = 512,
    max_side: int = 2048,
    alpha: float = 0.4,
    colormap: str = "jet",
) -> Figure:
    """One Grad-CAM overlay with its title and colour bar, sized for reading.

    The image is drawn at least `min_side` pixels on its short side (small
    images are enlarged) and at most `max_side` on its long side, unless that
    would break `min_side`; the aspect ratio is kept.
    """
    height, width = np.shape(image)[:2]
    scale = max(min_side / min(height, width), 1.0)
    if max(height, width) * scale > max_side:
        scale = max(max_side / max(height, width), min_side / min(height, width))
    w_px, h_px = width * scale, height * scale
    fontsize = max(12.0, min(w_px, h_px) / 36)  # legible at 512 px, growing with the image
    margin_top, margin_right = 3.2 * fontsize * DPI / 72, 7.0 * fontsize * DPI / 72
    fig = new_figure((w_px + margin_right + 10) / DPI, (h_px + margin_top + 10) / DPI)
    fig_w, fig_h = fig.get_size_inches() * DPI
    ax = fig.add_axes((5 / fig_w, 5 / fig_h, w_px / fig_w, h_px / fig_h))
    draw_heatmap_overlay(
        ax, image, heatmap, title, alpha=alpha, colormap=colormap, colorbar=False, fontsize=fontsize
    )
    cax = fig.add_axes(((w_px + 15) / fig_w, 5 / fig_h, 0.25 * margin_right / fig_w, h_px / fig_h))
    heat_colorbar(fig, colormap, fontsize, cax=cax)
    return fig


def figure_pixels(fig: Figure, dpi: float = DPI) -> np.ndarray:
    """The figure rendered as uint8 RGB `[H, W, 3]` (what `save` would write, untrimmed)."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def heatmap_grid_figure(
    rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, np.ndarray, str]]]], *, title: str
) -> Figure:
    """Rows of Grad-CAM panels (`draw_heatmap_overlay`), a label at the left of each row.

    Args:
        rows: `(row label, [(image uint8 RGB, heat map 0..1, caption), ...])`; an
            empty row reads "none". A panel with an all-zero map says `NO_EVIDENCE`.
        title: the figure title.
    """
    columns = max([len(panels) for _, panels in rows] + [1])
    fig = new_figure(max(3.4 * columns + 0.8, 5.0), 3.4 * len(rows) + 0.8)
    fig.set_layout_engine("constrained")
    axes = np.asarray(fig.subplots(len(rows), columns, squeeze=False))
    for r, (label, panels) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            if c < len(panels):
                image, heat, caption = panels[c]
                draw_heatmap_overlay(ax, image, heat, caption, fontsize=10)
                continue
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c == 0:
                ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        axes[r, 0].set_ylabel(label, fontsize=11)
    fig.suptitle(title)
    return fig


# --- K-fold and comparison -----------------------------------------------------------------------
