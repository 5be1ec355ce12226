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
# The top of the one scale every map is drawn on, in calibrated log-odds per location
# (keras_app.evaluation.gradcam explains the unit; its EVIDENCE_SCALE is this value).
EVIDENCE_SCALE = 25.0
HEATMAP_LABEL = "evidence for the class (log-odds, fixed scale)"
# Evidence under this share of the scale fades out (transparent at 0): a map with
# little evidence shows the film, not a blue wash.
FADE = 0.2
OUTLINE_COLOUR = "cyan"


def heat_rgba(heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.4) -> np.ndarray:
    """float `[h, w, 4]`: the map's colours, opaque at `alpha` from `FADE` of the scale up,
    fading to transparent at 0."""
    from matplotlib import colormaps

    values = np.clip(np.asarray(heatmap, np.float32), 0.0, 1.0)
    rgba = colormaps[colormap](values)
    rgba[..., 3] = alpha * np.clip(values / FADE, 0.0, 1.0)
    return rgba


def lung_outline(image: np.ndarray) -> tuple[np.ndarray, str]:
    """The lung region the audit uses (lungs and heart, dilated 3%) on `image`, and what
    it is: "lung region (estimate)" or "lung region (box prior)"."""
    from data_pipelines.lung_region import estimate_lung_mask
    from data_pipelines.regions import lung_region

    found = estimate_lung_mask(np.asarray(image))
    what = "box prior" if found.fell_back else "estimate"
    return lung_region(found), f"{OUTLINE_COLOUR}: lung region ({what})"


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
    outline: bool = True,
):
    """Draws `heatmap` (0..1 on the fixed scale, any size) over `image` (uint8 RGB) on
    `ax`, titled, with the lung region outlined.

    The map is stretched over the whole image (bilinear) and fades out below `FADE`
    of the scale. An all-zero map is drawn transparent and the panel says
    `NO_EVIDENCE` in its middle.

    Args:
        ax: the Axes to draw on (its figure gets the colour bar).
        image: uint8 `[H, W, 3]` (or `[H, W]` greyscale).
        heatmap: float `[h, w]` in 0..1, e.g. `keras_app.evaluation.gradcam.explain(...)
            .heatmaps[i]`: one scale for every image.
        title: the panel title, e.g. "PNEUMONIA  p=0.97".
        alpha: opacity of the heat map where it is strong.
        colormap: a matplotlib colormap name.
        colorbar: add a colour bar beside `ax`.
        fontsize: title size in points; the other labels follow it.
        outline: outline the lung region (`lung_outline`), named under the image.

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
        heat_rgba(heatmap, colormap, 0.0 if blank else alpha),
        interpolation="bilinear",
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
    )
    if outline:
        region, what = lung_outline(image)
        ax.contour(
            region.astype(np.float32),
            levels=[0.5],
            colors=OUTLINE_COLOUR,
            linewidths=max(1.0, fontsize / 10),
            linestyles="dashed",
        )
        ax.set_xlabel(what, fontsize=fontsize * 0.75)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
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
    """An opaque colour bar of the fixed scale, 0 to `EVIDENCE_SCALE` log-odds."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(0.0, EVIDENCE_SCALE), colormap), **where)
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
    outline: bool = True,
) -> Figure:
    """One Grad-CAM overlay with its title, lung outline and colour bar, sized for reading.

    The image is drawn at least `min_side` pixels on its short side (small
    images are enlarged) and at most `max_side` on its long side, unless that
    would break `min_side`; the aspect ratio is kept. Title lines longer than
    the image is wide are wrapped, and the figure is grown to hold every label,
    so that nothing is clipped at any size.
    """
    height, width = np.shape(image)[:2]
    scale = max(min_side / min(height, width), 1.0)
    if max(height, width) * scale > max_side:
        scale = max(max_side / max(height, width), min_side / min(height, width))
    w_px, h_px = width * scale, height * scale
    fontsize = max(12.0, min(w_px, h_px) / 36)  # legible at 512 px, growing with the image
    fig = new_figure(w_px / DPI, h_px / DPI)
    fig.set_dpi(DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    draw_heatmap_overlay(
        ax,
        image,
        heatmap,
        wrap_title(title, w_px, fontsize),
        alpha=alpha,
        colormap=colormap,
        colorbar=False,
        fontsize=fontsize,
        outline=outline,
    )
    bar_width, gap = max(12.0, 0.04 * w_px), max(8.0, 0.02 * w_px)
    cax = fig.add_axes(((w_px + gap) / w_px, 0.0, bar_width / w_px, 1.0))
    heat_colorbar(fig, colormap, fontsize, cax=cax)
    fit_to_contents(fig, pad=0.5 * fontsize * DPI / 72)
    return fig


def wrap_title(title: str, width_px: float, fontsize: float) -> str:
    """`title` with each line wrapped to about `width_px` at `fontsize` points."""
    import textwrap

    chars = max(12, int(width_px / (0.62 * fontsize * DPI / 72)))
    return "\n".join(
        "\n".join(textwrap.wrap(line, chars, break_on_hyphens=False)) or line
        for line in title.split("\n")
    )


def fit_to_contents(fig: Figure, pad: float = 8.0) -> None:
    """Resizes `fig` to its contents plus `pad` pixels and moves its Axes along: no label,
    title or tick is cut at the edge (what savefig's bbox_inches="tight" does, kept on the
    figure so that its pixels and its Axes' positions agree)."""
    fig.canvas.draw()
    dpi = fig.dpi
    tight = fig.get_tightbbox(fig.canvas.get_renderer())
    x0, y0, x1, y1 = (v * dpi for v in (tight.x0, tight.y0, tight.x1, tight.y1))
    old_w, old_h = fig.bbox.width, fig.bbox.height
    new_w, new_h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    boxes = [ax.get_position() for ax in fig.axes]
    fig.set_size_inches(new_w / dpi, new_h / dpi)
    for ax, box in zip(fig.axes, boxes, strict=True):
        left = (box.x0 * old_w - x0 + pad) / new_w
        bottom = (box.y0 * old_h - y0 + pad) / new_h
        ax.set_position((left, bottom, box.width * old_w / new_w, box.height * old_h / new_h))


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
