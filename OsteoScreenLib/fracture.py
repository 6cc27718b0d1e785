"""Vertebral fracture assessment from the segmentation: heights of each body and their Genant grade.

A vertebral fracture means osteoporosis whatever the BMD, and the label map that the
classifier measures already holds the bodies' shape. Everything is done in physical mm
(``Volume.voxel_centers_ras``), so spacing, slice thickness and grid orientation do not
change the heights:

1. the body's frame: superior-inferior is the line through the L1 and L2 centroids where
   both are whole in the scan (a wedge tilts a body's own axes by several degrees, which
   costs millimetres at the posterior wall), else the body's thinnest direction near the
   patient's S; anterior-posterior is the principal axis across it nearest the patient's A;
2. the mask is read (nearest voxel) on a grid of that frame, in a mid-sagittal slab;
   along anterior-posterior, the anterior-most stretch of the slab is the body (a
   whole-vertebra mask is cut at the spinal canal, then its frame is taken again);
3. anterior, middle and posterior heights: the median, over the slab's columns in a band
   of the body's depth, of each column's extent along the axis (``registry.FRACTURE_*``);
4. losses: wedge (anterior vs posterior), biconcave (middle vs the larger of anterior and
   posterior), crush (posterior vs the neighbouring body's posterior); the largest gives
   the Genant grade (Genant et al., J Bone Miner Res 1993) and the type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import registry
from .errors import OsteoScreenError
from .measurements import vertebra_stats
from .resample import crop_to_mask
from .result import FractureResult
from .volume import Volume

POSITIONS = ("anterior", "middle", "posterior")


@dataclass
class BodyHeights:
    """Heights (mm) of one body and the frame they were measured in (RAS unit vectors)."""

    anterior_mm: float
    middle_mm: float
    posterior_mm: float
    depth_mm: float  # anterior-posterior depth of the body in the slab
    center_ras: np.ndarray
    axis_si: np.ndarray  # towards superior
    axis_ap: np.ndarray  # towards anterior
    axis_lr: np.ndarray
    bands_ap_mm: dict  # position -> (anterior end, posterior end) along axis_ap, relative to center_ras
    bands_mid_si_mm: dict  # position -> middle of its columns along axis_si, relative to center_ras

    def height_lines(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Where each height was measured: position -> (inferior, superior) end points in RAS mm (for the report)."""
        out = {}
        for name, h in self.heights.items():
            ap = 0.5 * sum(self.bands_ap_mm[name])
            p = self.center_ras + ap * self.axis_ap + self.bands_mid_si_mm[name] * self.axis_si
            out[name] = (p - 0.5 * h * self.axis_si, p + 0.5 * h * self.axis_si)
        return out

    @property
    def heights(self) -> dict[str, float]:
        return {"anterior": self.anterior_mm, "middle": self.middle_mm, "posterior": self.posterior_mm}


def thinnest_direction(points_ras: np.ndarray, max_tilt_deg: float = 40.0) -> np.ndarray:
    """The direction within ``max_tilt_deg`` of the patient's S along which the points are thinnest
    (2nd-98th percentile extent): the normal of the endplates of a vertebral body.

    Not a principal axis: a body's depth and height are alike (an L1 is about 33 mm deep and 27 mm
    high), so the variance along them is too, and its principal axes may lie anywhere between them.
    """
    rng = np.random.default_rng(0)  # a fixed subsample: the same mask gives the same axis
    pts = points_ras[rng.choice(len(points_ras), min(len(points_ras), 20000), replace=False)]
    pts = pts - pts.mean(axis=0)

    def direction(tilt_ap, tilt_lr):
        d = np.array([np.tan(np.radians(tilt_lr)), np.tan(np.radians(tilt_ap)), 1.0])
        return d / np.linalg.norm(d)

    def extent(d):
        lo, hi = np.percentile(pts @ d, [2, 98])
        return hi - lo

    best = (0.0, 0.0)
    for step, reach in ((5.0, max_tilt_deg), (1.0, 5.0), (0.25, 1.0)):  # coarse to fine
        tilts = np.arange(-reach, reach + step / 2, step)
        candidates = [(best[0] + a, best[1] + b) for a in tilts for b in tilts]
        best = min(candidates, key=lambda t: extent(direction(*t)))
    return direction(*best)


def body_frame(points_ras: np.ndarray, axis_si: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Centre and (si, ap, lr) unit axes of a body from its voxel centres.

    Superior-inferior: ``axis_si`` where given, else the body's thinnest direction near S;
    anterior-posterior: of the principal axes across it, the one nearest the patient's A.
    Which is which comes from the patient's directions, which stay meaningful whatever the
    grid (RAS world coordinates); the axes themselves are the body's, not the scanner's.
    """
    center = points_ras.mean(axis=0)
    si = thinnest_direction(points_ras) if axis_si is None else np.asarray(axis_si, float) / np.linalg.norm(axis_si)
    si = si if si[2] > 0 else -si
    flat = (points_ras - center) - np.outer((points_ras - center) @ si, si)
    _, vectors = np.linalg.eigh(np.cov(flat.T))
    ap = max(vectors.T[1:], key=lambda v: abs(v[1]))  # the two largest: across the axis
    ap = ap - (ap @ si) * si
    ap /= np.linalg.norm(ap)
    ap = ap if ap[1] > 0 else -ap
    lr = np.cross(ap, si)  # towards the patient's right: R = A x S
    return center, si, ap, lr


def _sample(box: Volume, mask: np.ndarray, ras: np.ndarray) -> np.ndarray:
    """Mask values at world points (nearest voxel; False outside the box)."""
    m = box.ras_to_ijk
    idx = np.rint(ras @ m[:3, :3].T + m[:3, 3]).astype(np.int64)
    k, j, i = mask.shape
    ok = (idx >= 0).all(axis=1) & (idx[:, 0] < i) & (idx[:, 1] < j) & (idx[:, 2] < k)
    out = np.zeros(len(ras), bool)
    out[ok] = mask[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
    return out


def _slab(box, mask, center, axes, lr_half, ap_range, si_range, step):
    """The mask on a mid-sagittal slab grid of the body's frame: inside [ap, lr, si], and the ap and si positions."""
    lr = np.arange(-lr_half, lr_half + step / 2, step)
    ap = np.arange(ap_range[0], ap_range[1] + step / 2, step)
    si = np.arange(si_range[0], si_range[1] + step / 2, step)
    A, L, S = np.meshgrid(ap, lr, si, indexing="ij")
    local = np.stack([S.ravel(), A.ravel(), L.ravel()], axis=1)
    return _sample(box, mask, center + local @ np.stack(axes)).reshape(A.shape), ap, si


def _posterior_wall_slope(inside, ap, si, posterior_limit) -> float | None:
    """d(ap)/d(si) of the posterior wall of the body in a slab (a line fit over the middle 60 % of its height)."""
    body = inside[ap >= posterior_limit].any(axis=1)  # [ap, si]
    levels = np.flatnonzero(body.any(axis=0))
    if len(levels) < 5:
        return None
    lo, hi = np.percentile(si[levels], [20, 80])
    rows = [k for k in levels if lo <= si[k] <= hi]
    wall = [ap[ap >= posterior_limit][np.argmax(body[:, k])] for k in rows]
    return float(np.polyfit(si[rows], wall, 1)[0]) if len(rows) >= 3 else None


def _column_extents(box, mask, center, axes, lr_half, ap_range, si_range, step):
    """Extent along si (mm) of the mask in each column of a slab grid: array [ap, lr] (0: empty), the
    middles of the columns' extents along si, and the ap positions of the rows."""
    inside, ap, si = _slab(box, mask, center, axes, lr_half, ap_range, si_range, step)
    any_ = inside.any(axis=2)
    first = np.argmax(inside, axis=2)
    last = inside.shape[2] - 1 - np.argmax(inside[:, :, ::-1], axis=2)
    extent = np.where(any_, (last - first + 1) * step, 0.0)
    return extent, si[0] + 0.5 * (first + last) * step, ap


def _anterior_run(occupied: np.ndarray, ap: np.ndarray, gap_mm: float) -> tuple[float, float] | None:
    """(posterior, anterior) ends of the anterior-most run of occupied ap positions, ended by a gap >= gap_mm."""
    where = np.flatnonzero(occupied)
    if len(where) == 0:
        return None
    end = where[-1]
    start = end
    for idx in where[::-1][1:]:
        if (ap[start] - ap[idx]) > gap_mm:
            break
        start = idx
    return float(ap[start]), float(ap[end])


@dataclass
class MidSagittalFrame:
    """A body's frame about its mid-sagittal centre, and where its points lie in it (mm)."""

    center: np.ndarray
    axes: tuple  # (si, ap, lr)
    ap_of_points: np.ndarray
    width: float
    si_range: tuple
    ap_range: tuple


def mid_sagittal_frame(points: np.ndarray, axis_si, reach: float) -> MidSagittalFrame:
    """The frame of :func:`body_frame` moved to the middle of the points across (2nd-98th
    percentile along LR), with their AP positions and their SI and AP ranges widened by ``reach``."""
    center, si, ap, lr = body_frame(points, axis_si)
    lr_lo, lr_hi = np.percentile((points - center) @ lr, [2, 98])
    center = center + 0.5 * (lr_lo + lr_hi) * lr  # mid-sagittal: halfway across, not the centroid
    d = points - center
    s, a = d @ si, d @ ap
    return MidSagittalFrame(center, (si, ap, lr), a, float(lr_hi - lr_lo), (s.min() - reach, s.max() + reach),
                  (a.min() - reach, a.max() + reach))


def vertebral_body(box: Volume, mask: np.ndarray, points: np.ndarray, axis_si: np.ndarray | None = None,
                   passes: int = 2) -> tuple[np.ndarray, MidSagittalFrame, tuple[float, float]] | None:
    """A vertebra's body, cut from its arch at the spinal canal.

    ``box``: a grid about the vertebra, ``mask``: the vertebra on it, ``points``: the RAS centres of
    the mask's voxels (mm). The body is the anterior-most run of the mask along the body's AP axis
    in a narrow mid-sagittal slab, ended by a gap of ``FRACTURE_CANAL_GAP_MM`` (the canal); the points
    behind it are dropped, and the cut repeated on what is left (``passes`` times at most: a
    whole-vertebra mask loses its arch in the first, a body alone loses nothing).

    Returns the body's points, the frame of the last cut, and that cut's (posterior, anterior) ends
    of the run along the frame's AP axis (mm); None where the slab holds no mask.
    """
    step = registry.FRACTURE_SAMPLE_MM
    reach = float(np.max(box.spacing_mm))
    for _ in range(passes):
        f = mid_sagittal_frame(points, axis_si, reach)
        # the canal search looks in a narrow slab: a wide one meets the pedicles beside the canal
        narrow = min(4.0, 0.15 * f.width)
        extent, _, ap_pos = _column_extents(box, mask, f.center, f.axes, narrow, f.ap_range, f.si_range, step)
        run = _anterior_run(extent.max(axis=1) > 0, ap_pos, registry.FRACTURE_CANAL_GAP_MM)
        if run is None:
            return None
        keep = f.ap_of_points >= run[0] - step
        if keep.all():
            break
        points = points[keep]
    return points, f, run


def body_heights(labels: Volume, label: int, axis_si: np.ndarray | None = None) -> BodyHeights | None:
    """Anterior, middle and posterior heights of the body with value ``label``; None if it is absent or too small."""
    if not isinstance(labels, Volume) or np.asarray(labels.array).ndim != 3:
        raise OsteoScreenError("the label map for the fracture assessment must be a 3D Volume")
    mask_full = np.asarray(labels.array) == label
    box = crop_to_mask(labels, mask_full, margin=1)
    if box is None:
        return None
    mask = np.asarray(box.array) == label
    kji = np.argwhere(mask)
    voxel_ml = abs(np.linalg.det(labels.ijk_to_ras[:3, :3])) / 1000.0
    if len(kji) * voxel_ml < registry.FRACTURE_MIN_BODY_ML:
        return None
    body = vertebral_body(box, mask, box.voxel_centers_ras(kji), axis_si)
    if body is None:
        return None
    points, f, run = body
    step = registry.FRACTURE_SAMPLE_MM
    reach = float(np.max(box.spacing_mm))
    for _ in range(2 if axis_si is None else 0):
        # Alone, a body's thinnest direction leans with a wedge; its posterior wall, the part a
        # fracture spares most often, gives its axis (as morphometry's six points do).
        inside, ap_s, si_s = _slab(box, mask, f.center, f.axes, min(4.0, 0.15 * f.width), f.ap_range, f.si_range, step)
        slope = _posterior_wall_slope(inside, ap_s, si_s, run[0] - step)
        if slope is None:
            break
        f = mid_sagittal_frame(points, f.axes[0] + slope * f.axes[1], reach)
        run = (float(f.ap_of_points.min()), float(f.ap_of_points.max()))
    half = 0.5 * registry.FRACTURE_SLAB_WIDTH_FRACTION * f.width
    extent, mid, ap_pos = _column_extents(box, mask, f.center, f.axes, half, f.ap_range, f.si_range, step)
    run = _anterior_run(extent.max(axis=1) > 0, ap_pos, registry.FRACTURE_CANAL_GAP_MM)
    if run is None:
        return None
    posterior_end, anterior_end = run[0] - step / 2, run[1] + step / 2  # sample centres -> surfaces
    depth = anterior_end - posterior_end
    heights, bands, mids = {}, {}, {}
    for name, (f0, f1) in registry.FRACTURE_HEIGHT_BANDS.items():
        hi, lo = anterior_end - f0 * depth, anterior_end - f1 * depth
        rows = (ap_pos >= lo) & (ap_pos <= hi)
        found = extent[rows] > 0
        heights[name] = float(np.median(extent[rows][found])) if found.any() else 0.0
        mids[name] = float(np.median(mid[rows][found])) if found.any() else 0.0
        bands[name] = (hi, lo)
    return BodyHeights(heights["anterior"], heights["middle"], heights["posterior"], depth, f.center, *f.axes,
                       bands, mids)


def genant_grade(loss: float) -> int:
    """Genant grade (0-3) of a fraction of height lost (Genant 1993; registry.FRACTURE_GRADE_MIN_LOSS)."""
    return int(sum(loss >= t for t in registry.FRACTURE_GRADE_MIN_LOSS))


def grade_body(h: BodyHeights, neighbour: BodyHeights | None = None, neighbour_name: str = "") -> FractureResult:
    """Genant grade and type of one body from its heights and, where present, its neighbour's.

    Wedge and biconcave compare the body with itself (its posterior wall is the least often
    lost); crush, the whole body lower, can only be seen against a neighbour.
    """
    losses = {
        "wedge": 1.0 - h.anterior_mm / h.posterior_mm,
        "biconcave": 1.0 - h.middle_mm / max(h.anterior_mm, h.posterior_mm),
    }
    reference = "own posterior height"
    if neighbour is not None and neighbour.posterior_mm > 0:
        losses["crush"] = 1.0 - h.posterior_mm / neighbour.posterior_mm
        reference += f", {neighbour_name} posterior height"
    losses = {k: round(float(v), 3) for k, v in losses.items()}
    worst = max(losses, key=losses.get)
    grade = genant_grade(losses[worst])
    return FractureResult(grade=grade, type=worst if grade else None, height_loss=max(losses[worst], 0.0),
                          anterior_mm=round(h.anterior_mm, 1), middle_mm=round(h.middle_mm, 1),
                          posterior_mm=round(h.posterior_mm, 1), losses=losses, reference=reference)


def touches_scan_edge(labels: Volume, label: int) -> bool:
    """True where the body reaches a face of the grid that cuts across superior-inferior: its heights would be
    too low. Faces beside it do not count: a narrow sagittal scan cuts a vertebra's transverse processes, not
    its body's heights."""
    a = np.asarray(labels.array)
    out = False
    for axis_ijk, direction in enumerate(labels.directions.T):
        if abs(direction[2]) >= 0.5:  # this grid axis runs mostly superior-inferior
            axis = 2 - axis_ijk  # the array is indexed [k, j, i]
            out |= bool((np.take(a, 0, axis) == label).any() or (np.take(a, -1, axis) == label).any())
    return out


def assess_fractures(labels: Volume) -> dict[str, FractureResult]:
    """Genant grade of each vertebral body of an OsteoScreen label map (1 = L1, 2 = L2)."""
    return measure_fractures(labels)[1]


def measure_fractures(labels: Volume) -> tuple[dict[str, BodyHeights], dict[str, FractureResult]]:
    """The heights of each body measured in an OsteoScreen label map, and the grade of each body present."""
    if not isinstance(labels, Volume) or np.asarray(labels.array).ndim != 3:
        raise OsteoScreenError("the label map for the fracture assessment must be a 3D Volume")
    heights, out = {}, {}
    stats = vertebra_stats(labels)
    whole = [s for s in registry.VERTEBRAE if s.name in stats and not touches_scan_edge(labels, s.label)]
    axis = None
    if len(whole) == 2:  # the line through both centroids: a wedge tilts a body's own principal axes
        axis = np.subtract(stats[whole[0].name]["centroid_mm"], stats[whole[1].name]["centroid_mm"])
    for spec in registry.VERTEBRAE:
        if spec.name not in stats:
            continue
        if spec not in whole:
            out[spec.name] = FractureResult(note="the body reaches the edge of the scan")
            continue
        h = body_heights(labels, spec.label, axis)
        if h is None or min(h.heights.values()) <= 0:
            out[spec.name] = FractureResult(note="too small or no body found in the segment")
            continue
        if h.anterior_mm > registry.FRACTURE_MAX_ANTERIOR_OVER_POSTERIOR * h.posterior_mm:
            out[spec.name] = FractureResult(
                anterior_mm=round(h.anterior_mm, 1), middle_mm=round(h.middle_mm, 1), posterior_mm=round(h.posterior_mm, 1),
                note=f"not graded: the outline is taller in front ({h.anterior_mm:.0f} mm) than behind "
                     f"({h.posterior_mm:.0f} mm), unlike a vertebral body; check the segment")
            continue  # nor is it a neighbour to compare with
        heights[spec.name] = h
    names = list(heights)
    for name in names:
        others = [n for n in names if n != name]
        other = others[0] if others else None
        out[name] = grade_body(heights[name], heights[other] if other else None, other or "")
    return heights, {spec.name: out[spec.name] for spec in registry.VERTEBRAE if spec.name in out}
