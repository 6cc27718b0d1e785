"""The report image of one case: axial and sagittal views with L1/L2 outlines and the figures.

Rendered with numpy, text by VTK's FreeType renderer and PNG by VTK's writer:
no OpenGL context, no matplotlib, so it runs inside Slicer and headless.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

from .atomic import atomic_path
from .features import DEFAULT_PREPROCESSING, BodyFeatures, erode
from .registry import LABEL_OF, VERTEBRA_BY_NAME
from .resample import crop_to_grid, sample
from .volume import Volume

PANEL_PX = 256
TEXT_HEIGHT_PX = 190
VIEW_WINDOW_HU = (-250.0, 1250.0)
SAGITTAL_FOV_MM = (110.0, 150.0)  # anterior-posterior, superior-inferior
DISCLAIMER = "Research software, not a diagnostic device. Models trained on synthetic CT phantoms."


def _gray(hu: np.ndarray) -> np.ndarray:
    lo, hi = VIEW_WINDOW_HU
    g = (np.clip(hu, lo, hi) - lo) / (hi - lo) * 255
    return np.repeat(g[..., None], 3, -1).astype(np.float32)


def _outline(rgb: np.ndarray, mask: np.ndarray, color) -> None:
    edge = mask & ~erode(mask, 1)
    rgb[edge] = np.asarray(color, np.float32) * 255


def _resize_nearest(a: np.ndarray, shape) -> np.ndarray:
    rows = (np.arange(shape[0]) * a.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * a.shape[1] / shape[1]).astype(int)
    return a[rows][:, cols]


def axial_panel(f: BodyFeatures) -> np.ndarray:
    """Central image of a body, anterior up, patient's right on the left (radiological view)."""
    rgb = _gray(f.image_hu)
    _outline(rgb, f.mask, VERTEBRA_BY_NAME[f.name].color_rgb)
    _outline(rgb, f.roi, (1.0, 0.2, 0.2))
    rgb = rgb[::-1]  # rows run posterior->anterior in the feature image: put anterior up
    return _resize_nearest(rgb, (PANEL_PX, PANEL_PX))


def _draw_segment(rgb: np.ndarray, p0, p1, color) -> None:
    """A line between two (row, column) points, clipped to the image."""
    n = int(np.ceil(np.max(np.abs(np.subtract(p1, p0))))) + 1
    rows = np.rint(np.linspace(p0[0], p1[0], n)).astype(int)
    cols = np.rint(np.linspace(p0[1], p1[1], n)).astype(int)
    ok = (rows >= 0) & (rows < rgb.shape[0]) & (cols >= 0) & (cols < rgb.shape[1])
    rgb[rows[ok], cols[ok]] = np.asarray(color, np.float32) * 255


def sagittal_panel(ct: Volume, labels: Volume, center_ras: np.ndarray, lines=()) -> np.ndarray:
    """A sagittal reformat through the L1-L2 centre, anterior on the left, superior up; ``lines``:
    (RAS start, RAS end, rgb) drawn on it, projected along left-right (e.g. the bodies' heights)."""
    ap, si = SAGITTAL_FOV_MM
    step = max(ap, si) / PANEL_PX
    n_ap, n_si = int(ap / step), int(si / step)
    m = np.eye(4)
    m[:3, 0] = [0, -step, 0]  # i: anterior -> posterior
    m[:3, 1] = [0, 0, -step]  # j: superior -> inferior
    m[:3, 2] = [1, 0, 0]
    m[:3, 3] = center_ras + np.array([0, ap / 2, si / 2])
    shape = (1, n_si, n_ap)
    hu = sample(crop_to_grid(ct, m, shape), m, shape, order=1, fill=-1000.0, antialias=False)[0]
    lab = sample(crop_to_grid(labels, m, shape), m, shape, order=0, fill=0)[0]
    rgb = _gray(hu)
    for name, value in LABEL_OF.items():
        _outline(rgb, lab == value, VERTEBRA_BY_NAME[name].color_rgb)
    origin = m[:3, 3]
    for p0, p1, color in lines:  # RAS -> (row, column): rows go down from superior, columns back from anterior
        ends = [((origin[2] - p[2]) / step, (origin[1] - p[1]) / step) for p in (p0, p1)]
        _draw_segment(rgb, ends[0], ends[1], color)
    out = np.zeros((PANEL_PX, PANEL_PX, 3), np.float32)
    out[:n_si, :n_ap] = rgb[:PANEL_PX, :PANEL_PX]
    return out


def _text(lines: list[tuple[str, int, tuple]], width: int, height: int) -> np.ndarray:
    """Render lines of (text, font size, rgb) onto a black RGB canvas with VTK FreeType."""
    canvas = np.zeros((height, width, 3), np.float32)
    renderer = vtk.vtkTextRenderer()
    y = 6
    for text, size, color in lines:
        prop = vtk.vtkTextProperty()
        prop.SetFontSize(size)
        prop.SetColor(*color)
        prop.SetFontFamilyToArial()
        image = vtk.vtkImageData()
        if not renderer.RenderString(prop, text, image, [0, 0], 72):
            continue
        w, h, _ = image.GetDimensions()
        rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, 4)[::-1].astype(np.float32)
        h2, w2 = min(h, height - y), min(w, width - 8)
        if h2 <= 0:
            break
        alpha = rgba[:h2, :w2, 3:] / 255.0
        region = canvas[y : y + h2, 8 : 8 + w2]
        region[:] = region * (1 - alpha) + rgba[:h2, :w2, :3] * alpha
        y += int(size * 1.8)
    return canvas


TEXT_STYLES = {  # style of CaseResult.report_lines -> (font size, rgb)
    "title": (18, (1, 1, 1)), "figure": (14, (0.9, 0.9, 0.9)), "note": (12, (0.7, 0.7, 0.7)),
    "warning": (12, (1.0, 0.75, 0.3)), "disclaimer": (12, (1.0, 0.5, 0.5)),
    "finding": (14, (1.0, 0.3, 0.3)),
}
HEIGHT_COLORS = {"anterior": (0.2, 1.0, 0.2), "middle": (1.0, 1.0, 0.2), "posterior": (0.2, 1.0, 1.0)}


def render_report(ct: Volume, labels: Volume, result, features: dict[str, BodyFeatures], heights=None) -> np.ndarray:
    """RGB uint8 image: axial L1, axial L2 (if present), sagittal (with the heights of ``heights``,
    name -> fracture.BodyHeights); then the result's text lines."""
    panels = [axial_panel(features[n]) for n in ("L1", "L2") if n in features]
    centers = [f.centroid_ras for f in features.values()]
    lines = [(p0, p1, HEIGHT_COLORS[pos]) for h in (heights or {}).values()
             for pos, (p0, p1) in h.height_lines().items()]
    panels.append(sagittal_panel(ct, labels, np.mean(centers, axis=0), lines))
    top = np.concatenate(panels, axis=1)
    # long warnings wrap to the image width (about 0.6 font sizes per character)
    lines = []
    fov_mm = next(iter(features.values())).preprocessing.field_of_view_mm if features else \
        DEFAULT_PREPROCESSING.field_of_view_mm
    for text, style in result.report_lines(fov_mm) + [(DISCLAIMER, "disclaimer")]:
        chars = max(40, int((top.shape[1] - 16) / (0.6 * TEXT_STYLES[style][0])))
        parts = textwrap.wrap(text, chars) if style in ("warning", "finding") else [text]
        lines += [(part, *TEXT_STYLES[style]) for part in parts]
    height = max(TEXT_HEIGHT_PX, 12 + sum(int(size * 1.8) for _, size, _ in lines))  # room for every line
    text = _text(lines, top.shape[1], height)
    return np.clip(np.concatenate([top, text], axis=0), 0, 255).astype(np.uint8)


def write_png(rgb: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> Path:
    path = Path(path)
    h, w, _ = rgb.shape
    image = vtk.vtkImageData()
    image.SetDimensions(w, h, 1)
    arr = numpy_support.numpy_to_vtk(np.ascontiguousarray(rgb[::-1]).reshape(-1, 3), deep=1)
    image.GetPointData().SetScalars(arr)
    with atomic_path(path, overwrite) as tmp:
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(image)
        writer.Write()
    return path
