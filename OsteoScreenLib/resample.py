"""Resampling between grids (pure numpy): what inference needs, fast and light.

Grids are given by an IJK-to-RAS matrix and a shape ``(k, j, i)``; any
orientation works because target voxels are mapped through world coordinates.
"""

from __future__ import annotations

import numpy as np

from .volume import Volume


def axis_aligned_grid(lower_ras, upper_ras, spacing_mm: float | tuple) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A RAS-aligned grid (i = R, j = A, k = S) covering the box ``lower..upper`` (mm)."""
    spacing = np.broadcast_to(np.asarray(spacing_mm, float), (3,))
    lower, upper = np.asarray(lower_ras, float), np.asarray(upper_ras, float)
    n = np.maximum(np.ceil((upper - lower) / spacing - 1e-6).astype(int), 1)  # 80.0000001 mm is 80 voxels
    m = np.diag([*spacing, 1.0])
    m[:3, 3] = lower + spacing / 2
    return m, (int(n[2]), int(n[1]), int(n[0]))


def centred_grid(center_ras, size_mm, spacing_mm) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A RAS-aligned grid of ``size_mm`` (x, y, z) centred on a world point."""
    half = np.asarray(size_mm, float) / 2
    center = np.asarray(center_ras, float)
    return axis_aligned_grid(center - half, center + half, spacing_mm)


def bounds_ras(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box of the voxel centres."""
    k, j, i = volume.array.shape[:3]
    corners = np.array([[a, b, c] for a in (0, k - 1) for b in (0, j - 1) for c in (0, i - 1)])
    world = volume.voxel_centers_ras(corners)
    return world.min(axis=0), world.max(axis=0)


def block_mean(volume: Volume, factors_ijk) -> Volume:
    """Average non-overlapping blocks of ``factors`` voxels (anti-aliasing before downsampling).

    Sums along k, then j, then i, each pass on the array the previous one shrank: the first
    two read whole rows (fast), only the last, on the smallest array, steps through a row.
    An integer CT (the usual int16) is summed in integers, exactly, so the mean is the
    correctly rounded float32 of the true mean whatever the order; a 512x512x700 CT is
    never copied to float in full.
    """
    fi, fj, fk = (max(1, int(f)) for f in factors_ijk)
    if (fi, fj, fk) == (1, 1, 1):
        return volume
    k, j, i = volume.array.shape
    a = volume.array[: k - k % fk, : j - j % fj, : i - i % fi]
    if np.issubdtype(a.dtype, np.integer):
        acc = np.int64 if a.dtype.itemsize >= 4 else np.int32  # int16 x 32,767 blocks cannot overflow int32
    else:
        acc = np.float32
    s = a[0::fk].astype(acc)
    for ok in range(1, fk):
        s += a[ok::fk]
    t = s[:, 0::fj].copy()
    for oj in range(1, fj):
        t += s[:, oj::fj]
    out = t[:, :, 0::fi].copy()
    for oi in range(1, fi):
        out += t[:, :, oi::fi]
    out = out.astype(np.float32) if acc is not np.float32 else out
    out /= np.float32(fi * fj * fk)
    m = volume.ijk_to_ras.copy()
    m[:3, 3] = m[:3, :3] @ (np.array([fi, fj, fk]) - 1) / 2 + m[:3, 3]
    m[:3, :3] = m[:3, :3] * np.array([fi, fj, fk])[None, :]
    return Volume(out, m)


def sample(
    volume: Volume,
    target_ijk_to_ras: np.ndarray,
    target_shape: tuple[int, int, int],
    order: int = 1,
    fill: float = 0.0,
    antialias: bool = True,
) -> np.ndarray:
    """Values of ``volume`` at the voxel centres of a target grid.

    ``order`` 1 is trilinear (images, probabilities), 0 is nearest (labels).
    With ``antialias``, a volume much finer than the target is block-averaged first.
    Multi-channel arrays ``(k, j, i, c)`` are sampled channel by channel.
    """
    target_ijk_to_ras = np.asarray(target_ijk_to_ras, float)
    factors = np.ones(3, int)
    if antialias and order == 1 and volume.array.ndim == 3:
        target_spacing = np.linalg.norm(target_ijk_to_ras[:3, :3], axis=0).min()
        factors = np.maximum(np.floor(target_spacing / volume.spacing_mm + 1e-6).astype(int), 1)
    # only the part of the volume that the target covers (a view, no copy)
    source = crop_to_grid(volume, target_ijk_to_ras, target_shape, margin=2 + int(factors.max()))
    if factors.max() > 1:
        source = block_mean(source, factors)
    t = source.ras_to_ijk @ np.asarray(target_ijk_to_ras, float)
    perm = _axis_permutation(t[:3, :3])
    if perm is not None:  # grids share their axes: separable interpolation, much faster
        return _sample_separable(source.array, t, perm, target_shape, order, fill)
    coords = source_coords(source, target_ijk_to_ras, target_shape)
    if source.array.ndim == 4:
        return np.stack([interpolate_at(source.array[..., c], coords, order, fill) for c in range(source.array.shape[3])], -1).reshape(
            (*target_shape, source.array.shape[3])
        )
    return interpolate_at(source.array, coords, order, fill).reshape(target_shape)


def _axis_permutation(m: np.ndarray, tol: float = 1e-6):
    """For target->source index maps without rotation: perm[t] = source axis (i, j, k order) of target axis t."""
    nonzero = np.abs(m) > tol * np.abs(m).max()
    if not (nonzero.sum(axis=0) == 1).all() or not (nonzero.sum(axis=1) == 1).all():
        return None
    return [int(np.argmax(nonzero[:, c])) for c in range(3)]


def _axis_weights(n_target: int, scale: float, offset: float, n_source: int, order: int):
    """1D source positions of target indices: (lower index, upper index, weight of upper, inside)."""
    x = scale * np.arange(n_target) + offset
    inside = (x >= -0.5) & (x <= n_source - 0.5)
    if order == 0:
        idx = np.clip(np.rint(x).astype(np.int64), 0, n_source - 1)
        inside &= (np.rint(x) >= 0) & (np.rint(x) <= n_source - 1)
        return idx, idx, np.zeros(n_target, np.float32), inside
    lo = np.floor(x)
    w = (x - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    return np.clip(lo, 0, n_source - 1), np.clip(lo + 1, 0, n_source - 1), w, inside


def _sample_separable(array: np.ndarray, t: np.ndarray, perm, target_shape, order: int, fill: float) -> np.ndarray:
    """Interpolate axis by axis when each target axis runs along one source axis."""
    # source array axes are (k, j, i) = source ijk axes (2, 1, 0); target axes likewise
    out = array
    masks = []
    tk, tj, ti = target_shape
    n_target_ijk = (ti, tj, tk)
    source_shape_ijk = (array.shape[2], array.shape[1], array.shape[0])
    # bring the source into target axis order first: target axis a (ijk) <- source axis perm[a]
    src_axes_kji = [2 - perm[2], 2 - perm[1], 2 - perm[0]]
    out = np.transpose(out, src_axes_kji + list(range(3, array.ndim)))
    for a in (2, 1, 0):  # target k, j, i = array axes 0, 1, 2
        src = perm[a]
        lo, hi, w, inside = _axis_weights(n_target_ijk[a], t[src, a], t[src, 3], source_shape_ijk[src], order)
        axis = 2 - a
        if order == 0:
            out = np.take(out, lo, axis=axis)
        else:
            shape = [1] * out.ndim
            shape[axis] = -1
            w = w.reshape(shape)
            out = np.take(out, lo, axis=axis).astype(np.float32) * (1 - w) + np.take(out, hi, axis=axis) * w
        masks.append((axis, inside))
    out = np.array(out, copy=True)
    for axis, inside in masks:
        if not inside.all():
            index = [slice(None)] * out.ndim
            index[axis] = ~inside
            out[tuple(index)] = fill
    return out


def source_coords(source: Volume, target_ijk_to_ras, target_shape) -> np.ndarray:
    """Continuous (k, j, i) source indices of every target voxel, as float32 (3, N)."""
    k, j, i = target_shape
    t = (source.ras_to_ijk @ np.asarray(target_ijk_to_ras, float)).astype(np.float32)
    # affine map of a regular grid: build it by broadcasting instead of a big matmul
    ii = np.arange(i, dtype=np.float32)
    jj = np.arange(j, dtype=np.float32)
    kk = np.arange(k, dtype=np.float32)
    out = np.empty((3, k, j, i), np.float32)
    for row, axis in ((0, 2), (1, 1), (2, 0)):  # source i, j, k -> stored as k, j, i order
        out[axis] = (
            t[row, 0] * ii[None, None, :] + t[row, 1] * jj[None, :, None] + t[row, 2] * kk[:, None, None] + t[row, 3]
        )
    return out.reshape(3, -1)


def interpolate_at(array: np.ndarray, coords: np.ndarray, order: int, fill: float) -> np.ndarray:
    """``array`` at the continuous (k, j, i) indices ``coords`` (3, N): nearest (``order`` 0) or linear (1); ``fill`` outside."""
    shape = np.array(array.shape)
    if order == 0:
        idx = np.rint(coords).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < shape[:, None]), axis=0)
        out = np.full(coords.shape[1], fill, dtype=array.dtype)
        out[inside] = array[idx[0, inside], idx[1, inside], idx[2, inside]]
        return out
    base = np.floor(coords)
    frac = (coords - base).astype(np.float32)
    base = base.astype(np.int64)
    inside = np.all((coords >= -0.5) & (coords <= shape[:, None] - 0.5), axis=0)
    out = np.zeros(coords.shape[1], np.float32)
    flat = array.reshape(-1)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    for dk in (0, 1):
        wk = frac[0] if dk else 1 - frac[0]
        kk = np.clip(base[0] + dk, 0, shape[0] - 1)
        for dj in (0, 1):
            wj = frac[1] if dj else 1 - frac[1]
            jj = np.clip(base[1] + dj, 0, shape[1] - 1)
            w_kj = wk * wj
            off = kk * strides[0] + jj * strides[1]
            for di in (0, 1):
                wi = frac[2] if di else 1 - frac[2]
                ii = np.clip(base[2] + di, 0, shape[2] - 1)
                out += w_kj * wi * flat[off + ii]
    out[~inside] = fill
    return out


def index_box(volume: Volume, target_ijk_to_ras: np.ndarray, target_shape, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index box (lo, hi exclusive; i, j, k order) of ``volume`` that a target grid covers."""
    k, j, i = target_shape
    corners = np.array([[a, b, c] for a in (0, k - 1) for b in (0, j - 1) for c in (0, i - 1)], float)
    world = Volume(np.zeros((1, 1, 1)), target_ijk_to_ras).voxel_centers_ras(corners)
    ijk = (volume.ras_to_ijk @ np.c_[world, np.ones(len(world))].T)[:3].T
    size = np.array(volume.shape_ijk)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int) - margin, 0, size - 1)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + margin + 1, lo + 1, size)
    return lo, hi


def subvolume(volume: Volume, lo_ijk, hi_ijk) -> Volume:
    """The voxels ``lo..hi`` (i, j, k order, hi exclusive) as a view, with the same world geometry."""
    lo, hi = np.asarray(lo_ijk, int), np.asarray(hi_ijk, int)
    m = volume.ijk_to_ras.copy()
    m[:3, 3] = volume.ijk_to_ras[:3, :3] @ lo + volume.ijk_to_ras[:3, 3]
    return Volume(volume.array[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]], m)


def crop_to_grid(volume: Volume, target_ijk_to_ras: np.ndarray, target_shape, margin: int = 2) -> Volume:
    """The part of ``volume`` that a target grid covers (plus a margin), same geometry."""
    return subvolume(volume, *index_box(volume, target_ijk_to_ras, target_shape, margin))


def mask_box(mask: np.ndarray, margin: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounding box (lo, hi exclusive; k, j, i order) of a 3D mask plus a margin; None if empty.

    Found from projections, not from a list of the voxels: which slices hold any voxel (one
    pass over whole slices), then the 2D projection of that slab alone. A vertebra fills
    about 0.05 % of a full-size CT, so the second pass is short.
    """
    ks = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if len(ks) == 0:
        return None
    plane = mask[ks[0] : ks[-1] + 1].any(axis=0)
    hits = (ks, np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0)))
    lo = [max(h[0] - margin, 0) for h in hits]
    hi = [min(h[-1] + margin + 1, n) for h, n in zip(hits, mask.shape)]
    return np.array(lo), np.array(hi)


def crop_to_mask(volume: Volume, mask: np.ndarray, margin: int = 1) -> Volume | None:
    """The bounding box of ``mask`` (k, j, i) plus a margin, same geometry; None if the mask is empty."""
    box = mask_box(mask, margin)
    if box is None:
        return None
    lo, hi = box
    return subvolume(volume, lo[::-1], hi[::-1])
