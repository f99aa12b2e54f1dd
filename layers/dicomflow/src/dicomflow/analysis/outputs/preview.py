"""A PNG a clinician can look at: a coronal slice at end-inspiration with the ventilation map over
the lungs, a colour bar, and the key numbers."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

# A perceptually ordered map (viridis-like control points): dark = little ventilation.
_CONTROL = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32
)
WIDTH = 640
BAR_WIDTH = 110
TEXT_HEIGHT = 120


def colormap(values: np.ndarray) -> np.ndarray:
    """RGB uint8 for ``values`` in [0, 1] (clipped).

    Examples
    --------
    >>> colormap(np.array([0.0, 1.0])).tolist()
    [[68, 1, 84], [253, 231, 37]]
    """
    v = np.clip(values, 0.0, 1.0) * (len(_CONTROL) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_CONTROL) - 2)
    t = (v - lo)[..., None]
    rgb = _CONTROL[lo] * (1 - t) + _CONTROL[lo + 1] * t
    return np.rint(rgb).astype(np.uint8)


def coronal_row(lung_mask: np.ndarray, defect_mask: np.ndarray | None = None) -> int:
    """The row (anterior-posterior index) of the coronal plane to show: through the most defect
    when there is one (what the reader must see), else through the most lung.

    Examples
    --------
    >>> lung = np.zeros((2, 4, 3), np.uint8); lung[:, 1] = 1; lung[0, 2, 0] = 1
    >>> defect = np.zeros_like(lung); defect[0, 2, 0] = 1
    >>> coronal_row(lung), coronal_row(lung, defect)
    (1, 2)
    """
    if defect_mask is not None and defect_mask.any():
        return int(np.argmax(defect_mask.sum(axis=(0, 2), dtype=np.int64)))
    return int(np.argmax(lung_mask.sum(axis=(0, 2), dtype=np.int64)))


def render_preview(
    hu: np.ndarray,
    lung_mask: np.ndarray,
    ventilation: np.ndarray,
    defect_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    results: Mapping[str, Any],
) -> bytes:
    """The PNG bytes. Arrays are [slices, rows, columns], slices increasing along the normal
    (towards the head for axial images), so the image is flipped to put the head at the top."""
    row = coronal_row(lung_mask, defect_mask)
    return render_coronal(
        hu[:, row, :],
        lung_mask[:, row, :],
        ventilation[:, row, :],
        defect_mask[:, row, :],
        spacing_mm,
        results,
    )


def render_coronal(
    hu: np.ndarray,
    lung_mask: np.ndarray,
    ventilation: np.ndarray,
    defect_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    results: Mapping[str, Any],
) -> bytes:
    """:func:`render_preview` from the coronal plane alone (each array [slices, columns]), so that
    a caller need not hold whole maps to draw one plane of them."""
    from PIL import Image, ImageDraw, ImageFont

    ct = hu.astype(np.float32)[::-1]
    lung = lung_mask.astype(bool)[::-1]
    sv = ventilation[::-1]
    defect = defect_mask.astype(bool)[::-1]
    vmax = max(2.0 * float(results["ventilation"]["median_specific_ventilation"]), 1e-3)

    grey = np.clip((ct + 1000.0) / 1200.0, 0, 1) * 255  # window -1000..200 HU
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    overlay = colormap(sv / vmax).astype(np.float32)
    alpha = 0.75
    rgb[lung] = (1 - alpha) * rgb[lung] + alpha * overlay[lung]
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    slice_mm, _, col_mm = spacing_mm
    height = max(1, round(WIDTH * (ct.shape[0] * slice_mm) / (ct.shape[1] * col_mm)))
    image = image.resize((WIDTH, height), Image.Resampling.NEAREST)
    # Outline the defects in white (at display size, so the line stays thin) so they read even where
    # the colour is dark.
    big = np.asarray(Image.fromarray(defect.astype(np.uint8) * 255).resize((WIDTH, height))) > 127
    inner = big.copy()
    inner[1:-1, 1:-1] = big[1:-1, 1:-1] & big[:-2, 1:-1] & big[2:, 1:-1] & big[1:-1, :-2] & big[1:-1, 2:]
    shown = np.asarray(image).copy()
    shown[big & ~inner] = 255
    image = Image.fromarray(shown, "RGB")

    canvas = Image.new("RGB", (WIDTH + BAR_WIDTH, height + TEXT_HEIGHT), (0, 0, 0))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    bar_h = max(height - 40, 20)
    gradient = colormap(np.linspace(1.0, 0.0, bar_h))[:, None, :].repeat(20, axis=1)
    canvas.paste(Image.fromarray(gradient, "RGB"), (WIDTH + 15, 20))
    draw.text((WIDTH + 40, 14), f"{vmax:.2f}", fill="white", font=font)
    draw.text((WIDTH + 40, 20 + bar_h // 2 - 6), f"{vmax / 2:.2f}", fill="white", font=font)
    draw.text((WIDTH + 40, 20 + bar_h - 10), "0.00", fill="white", font=font)
    draw.text((WIDTH + 5, 2), "spec. vent.", fill="white", font=font)
    draw.text((WIDTH + 5, height - 16), "mL/mL", fill="white", font=font)

    vent = results["ventilation"]
    volumes = results["lung_volume_ml"]
    lines = [
        f"Coronal, end-inspiration (phase {results['inhale_phase']}); ventilation vs phase "
        f"{results['exhale_phase']}; white outline: defect",
        f"Lung volume: {volumes[results['inhale_phase']]:.0f} mL insp / "
        f"{volumes[results['exhale_phase']]:.0f} mL exp    Tidal volume: {results['tidal_volume_ml']:.0f} mL",
        f"Ventilation defect: {vent['defect_percent']:.1f} %    Heterogeneity (CV): "
        f"{vent['heterogeneity_cv']:.2f}",
        f"Model: {results['model']['name']} {results['model']['version']}"
        "  (reference model, not for diagnosis)",
    ]
    for i, line in enumerate(lines):
        draw.text((10, height + 10 + 26 * i), line, fill="white", font=font)
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=False)
    return out.getvalue()
