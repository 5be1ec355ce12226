"""Overlays a radiologist can read: one fixed scale, the lung region outlined, nothing clipped."""

from __future__ import annotations

import numpy as np
import pytest

from keras_app.evaluation.gradcam import render_overlay
from keras_app.reports import overlays
from tests.makers import phantom

# The DICOM node's title: its second line is the one that lost its first letters.
TITLE = "PNEUMONIA absent  P(PNEUMONIA)=0.003\nmap: evidence for PNEUMONIA; not for diagnostic use"


def film(h: int, w: int) -> np.ndarray:
    grey = phantom(h, w)[0].astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def texts(fig):
    for ax in fig.axes:
        yield ax.title
        yield ax.xaxis.label
        yield ax.yaxis.label
        yield from ax.texts
        yield from ax.get_yticklabels()


@pytest.mark.parametrize("shape", [(40, 40), (224, 224), (900, 1100), (2400, 1800), (600, 2400)])
def test_no_title_label_or_tick_is_clipped_at_any_size(shape):
    heat = np.zeros((7, 7), np.float32)
    heat[3, 3] = 0.8
    fig = overlays.overlay_figure(film(*shape), heat, TITLE)
    pixels = overlays.figure_pixels(fig)
    height, width = pixels.shape[:2]
    renderer = fig.canvas.get_renderer()
    shown = [t for t in texts(fig) if t.get_text() and t.get_visible()]
    assert any("0" == t.get_text() for t in shown)  # the colour bar's lowest tick
    for text in shown:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0, text.get_text()
        assert box.x1 <= width and box.y1 <= height, text.get_text()
    title = fig.axes[0].title.get_text()
    assert title.replace("\n", " ") == TITLE.replace("\n", " ")  # wrapped, never cut
    image = fig.axes[0].get_window_extent(renderer)
    assert min(image.width, image.height) >= 511  # still at least 512 px on its short side


def test_one_fixed_scale_a_faint_map_shows_the_film():
    grey = np.full((64, 64, 3), 128, np.uint8)

    def region(heat):
        fig = overlays.overlay_figure(grey, np.full((8, 8), heat, np.float32), "t", outline=False)
        pixels = overlays.figure_pixels(fig)
        box = fig.axes[0].get_window_extent()
        top = pixels.shape[0] - int(box.y1)
        return pixels[top + 3 : top + int(box.height) - 3, int(box.x0) + 3 : int(box.x1) - 3]

    faint, strong = region(0.02), region(1.0)
    assert np.abs(faint.astype(int) - 128).max() < 20  # 2% of the scale: the film shows
    assert np.abs(strong.astype(int) - 128).max() > 40  # the top of the scale: coloured
    bar = overlays.overlay_figure(grey, np.zeros((8, 8)), "t").axes[1]
    assert bar.get_ylim() == (0.0, overlays.EVIDENCE_SCALE)
    assert bar.get_ylabel() == overlays.HEATMAP_LABEL


def test_the_lung_region_is_outlined_and_named():
    fig = overlays.overlay_figure(film(224, 224), np.zeros((7, 7), np.float32), "t")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "cyan: lung region (estimate)"
    assert ax.collections  # the contour
    flat = overlays.overlay_figure(np.full((64, 64, 3), 90, np.uint8), np.zeros((7, 7)), "t")
    assert flat.axes[0].get_xlabel() == "cyan: lung region (box prior)"


def test_render_overlay_is_the_same_picture(tmp_path):
    heat = np.zeros((7, 7), np.float32)
    heat[2, 2] = 0.5
    image = film(300, 260)
    drawn = render_overlay(image, heat, TITLE)
    again = overlays.figure_pixels(overlays.overlay_figure(image, heat, TITLE))
    np.testing.assert_array_equal(drawn, again)
