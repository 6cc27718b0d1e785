"""Training augmentation of the segmentation stages (``train --augment``) for real scans.

Coarse stage: poses, fields of view and image quality the phantoms vary too little.

On real scans the fine stage outlines the right bodies when it is told where they are, but the
coarse stage trained on the plain phantoms puts its levels one or more vertebrae off: a tilted
spine (lordosis of a patient lying differently), a scan that starts just above L1 or is cropped
around the spine, a sharper or noisier reconstruction all change its answer. Each sample is
therefore turned, cut and degraded at random, within the limits in ``config.COARSE_AUGMENT``.

Rib check: each box cut at the sides and in front (``random_side_crop``) and degraded, after
``rib_check.boxes`` turned it (limits in ``config.RIB_CHECK_AUGMENT``), so it also reads narrow
spine-cropped scans.

Fine stage: its hints moved by up to half a vertebra, as a coarse stage that is off leaves them
(``shift_hints``, limits in ``config.FINE_AUGMENT``); with domain randomisation one hint also stretched
along the spine into its neighbour (``stretch_hints``), as the coarse stage's L2 ran across the L2-L3
disc on the real chest CT: the outline must stop at the disc whatever the hint says.

Pure functions of the network's input ``x`` (C, k, j, i), its labels ``y`` (k, j, i) on the
stage's RAS grid (k = S, j = A, i = R) and a numpy generator. Outside the CT the coarse input is
air (-1), as at run time (``coarse_input`` fills outside the scan with -1000 HU).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

AIR = -1.0
SOFT_TISSUE = -0.17  # 40 HU in the [-1000, 1500] HU window


def inside_scan(x: np.ndarray) -> np.ndarray:
    """Where the input is above air: the body, lungs included (air around the body, at -1000 HU or
    below, reads like the fill beyond the field of view and is left alone)."""
    return x > AIR + 1e-3


def _rotation(angles_deg) -> np.ndarray:
    """Rotation on (k, j, i) indices: about R (i, sagittal tilt), about A (j), about S (k)."""
    a, b, c = np.radians(angles_deg)
    about_i = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_j = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    about_k = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return about_i @ about_j @ about_k


def random_pose(x: np.ndarray, y: np.ndarray, rng, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Turn and scale the sample about the centre of its L1-L2 labels (they stay in the patch)."""
    fg = np.argwhere(y > 0)
    if len(fg) == 0 or rng.uniform() >= cfg["p_pose"]:
        return x, y
    center = fg.mean(axis=0)
    m = _rotation([rng.uniform(-r, r) for r in cfg["rotate_deg"]]) / rng.uniform(*cfg["scale"])
    offset = center - m @ center
    xs = ndimage.affine_transform(x[0], m, offset, order=1, mode="constant", cval=AIR)
    ys = ndimage.affine_transform(y, m, offset, order=0, mode="constant", cval=0)
    return xs[None].astype(np.float32), ys.astype(y.dtype)


def random_field_of_view(x: np.ndarray, y: np.ndarray, rng, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Cut the scan like a short abdominal series (starting a little above L1, perhaps ending in
    L2) or a spine-cropped reconstruction (a narrow box around the spine); air outside."""
    fg = np.argwhere(y > 0)
    if len(fg) == 0:
        return x, y
    x, y = x.copy(), y.copy()
    mm = cfg["spacing_mm"]
    if rng.uniform() < cfg["p_short_scan"]:
        top = fg[:, 0].max() + int(round(rng.uniform(*cfg["above_l1_mm"]) / mm))
        x[0, top + 1 :] = AIR
        y[top + 1 :] = 0
        l2 = np.argwhere(y == 2)
        if len(l2) and rng.uniform() < cfg["p_cut_l2"]:
            lo, hi = l2[:, 0].min(), l2[:, 0].max()
            # ending in L2 or, where the config allows, at the L1-L2 disc with no L2 at all (model 2's
            # low-dose scan that stops below L1)
            bottom = int(round(lo + rng.uniform(0.0, cfg.get("cut_l2_max_fraction", 0.5)) * (hi - lo)))
            l1 = np.nonzero((y == 1).any(axis=(1, 2)))[0]
            bottom = min(bottom, int(l1.min())) if len(l1) else bottom  # never into L1
            x[0, :bottom] = AIR
            y[:bottom] = 0
    if rng.uniform() < cfg["p_spine_crop"]:
        center = fg.mean(axis=0)
        for axis in (1, 2):  # A, R
            half = rng.uniform(*cfg["crop_width_mm"]) / 2 / mm
            c = center[axis] + rng.uniform(-1, 1) * cfg["crop_offset_mm"] / mm
            # the box holds the bodies whole: a spine-cropped reconstruction centres on the spine
            lo = min(int(np.floor(c - half)), int(fg[:, axis].min()) - 1)
            hi = max(int(np.ceil(c + half)), int(fg[:, axis].max()) + 1)
            index = np.arange(x.shape[axis + 1])
            outside = (index < lo) | (index > hi)
            shape = [1, 1, 1]
            shape[axis] = -1
            x[0][np.broadcast_to(outside.reshape(shape), y.shape)] = AIR
    return x, y


def random_image_quality(x: np.ndarray, rng, cfg: dict) -> np.ndarray:
    """Calibration, blur or sharpness, noise and soft-tissue texture of another scanner."""
    img = x[0].astype(np.float32)
    inside = inside_scan(img)
    sd = rng.uniform(*cfg["blur_sd_voxels"])
    if sd > 0.05:
        img = ndimage.gaussian_filter(img, sd, mode="nearest")
    elif rng.uniform() < cfg["p_sharpen"]:  # unsharp mask: a bone kernel's overshoot at edges
        img = img + rng.uniform(0.3, 1.0) * (img - ndimage.gaussian_filter(img, 1.0, mode="nearest"))
    img = img * rng.uniform(*cfg["intensity_scale"]) + rng.uniform(-1, 1) * cfg["intensity_shift"]
    texture = ndimage.gaussian_filter(rng.normal(0, 1, img.shape).astype(np.float32), 1.5)
    img = img + texture / max(float(texture.std()), 1e-6) * rng.uniform(0, cfg["texture_sd"])
    img = img + rng.normal(0, rng.uniform(0, cfg["noise_sd"]), img.shape).astype(np.float32)
    return np.where(inside, np.clip(img, -1.0, 1.0), AIR)[None].astype(np.float32)


def cut_box(x: np.ndarray, spacing_mm: float, side_mm: float | None = None, front_mm: float | None = None,
            back_mm: float | None = None, side_offset_mm: float = 0.0) -> np.ndarray:
    """Rib-check boxes (..., k, j, i) with air beyond ``side_mm`` each side of the centre (moved
    ``side_offset_mm`` along R), ``front_mm`` in front of it and ``back_mm`` behind it (None: no cut)."""
    x = x.copy()
    n_a, n_r = x.shape[-2:]
    if side_mm is not None:
        r = np.arange(n_r) - (n_r - 1) / 2 - side_offset_mm / spacing_mm
        x[..., np.abs(r) > side_mm / spacing_mm] = AIR
    if front_mm is not None and back_mm is not None:
        a = np.arange(n_a) - (n_a - 1) / 2  # j grows towards A
        x[..., (a > front_mm / spacing_mm) | (a < -back_mm / spacing_mm), :] = AIR
    return x


def random_side_crop(x: np.ndarray, rng, cfg: dict, spacing_mm: float) -> np.ndarray:
    """Air beyond a window around the box centre sideways (R) and front to back (A), as in a
    spine-cropped reconstruction: the rib heads and necks stay, the rest of the ribs is gone."""
    side = offset = front = back = None
    if rng.uniform() < cfg["p_side_crop"]:
        offset = rng.uniform(-1, 1) * cfg["side_offset_mm"]
        side = rng.uniform(*cfg["side_half_mm"])
    if rng.uniform() < cfg["p_ap_crop"]:
        front, back = rng.uniform(*cfg["front_mm"]), rng.uniform(*cfg["back_mm"])
    return cut_box(x, spacing_mm, side, front, back, offset or 0.0)


def shift_hints(x: np.ndarray, rng, cfg: dict) -> np.ndarray:
    """Move the fine stage's hint channels (1: L1, 2: L2; -1 = no hint) together by a random
    whole-voxel offset, as a coarse stage that is off on a real scan leaves them."""
    if rng.uniform() >= cfg["p_hint_shift"]:
        return x
    shift = [int(round(rng.uniform(-m, m) / cfg["spacing_mm"])) for m in cfg["hint_shift_mm"]]
    out = np.full_like(x, -1.0)
    out[0] = x[0]
    src = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(shift, x.shape[1:]))
    dst = tuple(slice(max(0, d), n - max(0, -d)) for d, n in zip(shift, x.shape[1:]))
    out[(slice(1, None), *dst)] = x[(slice(1, None), *src)]
    return out


def stretch_hints(x: np.ndarray, rng, cfg: dict) -> np.ndarray:
    """Stretch one of the fine stage's hint channels (1: L1, 2: L2) up or down the spine (k) by a
    random length up to ``hint_stretch_mm``: a hint that reaches past its vertebra's endplate into the
    next one, while the labels stay where the vertebra is."""
    if rng.uniform() >= cfg["p_hint_stretch"]:
        return x
    channel = 1 + rng.integers(2)
    n = round(rng.uniform(1.0, cfg["hint_stretch_mm"]) / cfg["spacing_mm"])
    up = bool(rng.integers(2))
    hint, out = x[channel], x.copy()
    for d in range(1, min(n, hint.shape[0] - 1) + 1):
        if up:
            out[channel, d:] = np.maximum(out[channel, d:], hint[:-d])
        else:
            out[channel, :-d] = np.maximum(out[channel, :-d], hint[d:])
    return out


def hu_to_input(hu):
    """HU to the network's input scale (-1 at -1000 HU, 1 at 1500 HU: the coarse HU window)."""
    return (np.asarray(hu, np.float32) + 1000.0) / 1250.0 - 1.0


def random_tissue_contrast(x: np.ndarray, rng, cfg: dict) -> np.ndarray:
    """Another generator's grey values (in the spirit of SynthSeg): a random monotone remapping of
    the intensities through knots moved at random (lung, fat, water, soft tissue, contrast, bone),
    so that the network learns shapes and counts rather than one generator's tissue values."""
    if rng.uniform() >= cfg["p_remap"]:
        return x
    knots = np.array(cfg["remap_knots_hu"], float)
    moved = knots + rng.normal(0.0, 1.0, len(knots)) * np.array(cfg["remap_sd_hu"], float)
    moved = np.maximum.accumulate(np.clip(moved, -1000.0, 1500.0))  # keep it monotone
    img = np.interp(x[0], hu_to_input(knots), hu_to_input(moved)).astype(np.float32)
    return np.where(inside_scan(x[0]), img, AIR)[None]


@lru_cache(maxsize=32)
def _spline_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of ``ndimage.zoom(..., order=3, mode="nearest")`` along one axis."""
    return np.stack([ndimage.zoom(e, n_out / n_in, order=3, mode="nearest") for e in np.eye(n_in)], axis=1)


def smooth_upsample(coarse: np.ndarray, shape) -> np.ndarray:
    """``ndimage.zoom(coarse, shape / coarse.shape, order=3, mode="nearest")``, the same values at a
    fraction of the time: cubic-spline zoom is separable and linear, so it is one small matrix per
    axis (the 3D zoom spent a fifth of a coarse training step)."""
    w = [_spline_weights(n_in, n_out) for n_in, n_out in zip(coarse.shape, shape)]
    return np.einsum("ai,bj,ck,ijk->abc", *w, coarse.astype(np.float64), optimize=True).astype(np.float32)


def random_bias_field(x: np.ndarray, rng, cfg: dict) -> np.ndarray:
    """A smooth additive field over the body (beam hardening, scatter, a miscalibrated scanner)."""
    if rng.uniform() >= cfg["p_bias"]:
        return x
    coarse = rng.normal(0.0, 1.0, (4, 4, 4)).astype(np.float32)
    field = smooth_upsample(coarse, x.shape[1:])
    field *= rng.uniform(0.0, cfg["bias_hu"]) / 1250.0 / max(float(field.std()), 1e-6)
    inside = inside_scan(x[0])
    return np.where(inside, np.clip(x[0] + field, -1.0, 1.0), AIR)[None].astype(np.float32)


def random_bright_blobs(x: np.ndarray, y: np.ndarray, rng, cfg: dict) -> np.ndarray:
    """Bright things that are not vertebrae (contrast in a vessel, a port, calcification, metal,
    another bone), placed in the body away from L1 and L2: bright alone must not mean 'vertebra'."""
    if rng.uniform() >= cfg["p_blobs"]:
        return x
    mm = cfg["spacing_mm"]
    body = np.argwhere(x[0] > hu_to_input(-300.0))
    if len(body) == 0:
        return x
    near_labels = ndimage.binary_dilation(y > 0, iterations=max(1, int(round(15.0 / mm))))
    img = x[0].copy()
    k, j, i = np.indices(img.shape, dtype=np.float32)
    for _ in range(int(rng.integers(cfg["blob_count"][0], cfg["blob_count"][1] + 1))):
        c = body[int(rng.integers(len(body)))]
        if near_labels[tuple(c)]:
            continue
        r = rng.uniform(*cfg["blob_radius_mm"], size=3) / mm
        d2 = ((k - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((i - c[2]) / r[2]) ** 2
        blob = (d2 <= 1.0) & ~near_labels
        img[blob] = hu_to_input(rng.uniform(*cfg["blob_hu"]))
    return img[None].astype(np.float32)


def random_scan_range(x: np.ndarray, y: np.ndarray, rng, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """The vertebra counter's fields of view: the scan's first and last slices moved to random
    slices among the bodies' cores (air beyond them, no core marked there), so that it counts on
    scans that start anywhere in the thorax and end anywhere in the lumbar spine."""
    rows = np.nonzero((y > 0).any(axis=(1, 2)))[0]
    if len(rows) < 2:
        return x, y
    x, y = x.copy(), y.copy()
    if rng.uniform() < cfg["p_cut_top"]:
        top = int(rng.integers(rows.min(), rows.max() + 1))
        x[0, top + 1 :] = AIR
        y[top + 1 :] = 0
    if rng.uniform() < cfg["p_cut_bottom"]:
        bottom = int(rng.integers(rows.min(), rows.max() + 1))
        x[0, :bottom] = AIR
        y[:bottom] = 0
    return x, y


def augment_fine(x: np.ndarray, rng, cfg: dict) -> np.ndarray:
    """The fine stage's box (0: CT, 1-2: hints): hints moved as a coarse stage off on a real scan
    leaves them; with domain randomisation (``FINE_RANDOMISATION``) the CT's grey values remapped and a
    bias field added and one hint stretched into its neighbour, so that the outline follows the shape of
    the body, not one generator's values or a hint that reaches too far."""
    x = shift_hints(x, rng, cfg)
    if "p_hint_stretch" in cfg:
        x = stretch_hints(x, rng, cfg)
    if "p_remap" in cfg:
        ct = random_bias_field(random_tissue_contrast(x[:1], rng, cfg), rng, cfg)
        x = np.concatenate([ct, x[1:]]).astype(np.float32)
    return x


def augment_coarse(x: np.ndarray, y: np.ndarray, rng, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    x, y = random_pose(x, y, rng, cfg)
    x, y = random_field_of_view(x, y, rng, cfg)
    if "p_cut_top" in cfg:  # the vertebra counter
        x, y = random_scan_range(x, y, rng, cfg)
    if "p_remap" in cfg:  # domain randomisation (generator 2.0 training; absent from older configs)
        x = random_bright_blobs(x, y, rng, cfg)
        x = random_tissue_contrast(x, rng, cfg)
        x = random_bias_field(x, rng, cfg)
    return random_image_quality(x, rng, cfg), y
