"""Signed distances of simple shapes and soft (partial-volume) painting, in mm.

Every distance is negative inside and positive outside. Shapes are evaluated
only on the patch of a slice that can hold them, so a small structure costs
little however large the image is. Edges are painted with a linear ramp whose
slope matches a Gaussian blur of standard deviation ``sigma_mm`` (the scanner's
in-plane point spread), so no separate blur pass over the volume is needed.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
RAMP_SLOPE = 0.4  # 1/sqrt(2*pi): slope of a Gaussian edge profile at its centre, per sigma

try:  # the ufunc behind np.clip, without its Python wrapper (same values; the renderer calls it ~10^5 times)
    from numpy._core.umath import clip as _clip
except ImportError:  # numpy < 2
    from numpy.core.umath import clip as _clip


def coverage(distance_mm: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Fraction (0..1) of a voxel inside a shape, from its signed distance (blurred edge)."""
    a = distance_mm * F32(-RAMP_SLOPE / max(sigma_mm, 1e-3))
    a += F32(0.5)
    _clip(a, 0.0, 1.0, out=a)
    return a


def coverage_reach(sigma_mm: float) -> float:
    """Distance (mm) beyond which :func:`coverage` is 0: nothing is painted farther out."""
    return 0.5 / RAMP_SLOPE * max(sigma_mm, 1e-3)


def paint(image: np.ndarray, alpha: np.ndarray, value) -> None:
    """Blend ``value`` (scalar or array) into ``image`` with opacity ``alpha``, in place."""
    tmp = np.subtract(value, image, dtype=F32)
    tmp *= alpha
    image += tmp


def ellipse_distance(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipse x^2/a^2 + y^2/b^2 = 1 (first order)."""
    ia2, ib2 = F32(1.0 / (a * a)), F32(1.0 / (b * b))
    x2 = x * x
    y2 = y * y
    q = x2 * ia2 + y2 * ib2
    g = x2 * (ia2 * ia2) + y2 * (ib2 * ib2)
    g += F32(1e-6)
    np.sqrt(g, out=g)
    q -= F32(1.0)
    q /= g
    q *= F32(0.5)
    return q


def ellipsoid_distance(x, y, z, a: float, b: float, c: float) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid with semi-axes a, b, c."""
    ia2, ib2, ic2 = F32(1.0 / (a * a)), F32(1.0 / (b * b)), F32(1.0 / (c * c))
    x2, y2, z2 = x * x, y * y, z * z
    q = x2 * ia2 + y2 * ib2 + z2 * ic2
    g = x2 * (ia2 * ia2) + y2 * (ib2 * ib2) + z2 * (ic2 * ic2)
    g += F32(1e-6)
    np.sqrt(g, out=g)
    q -= F32(1.0)
    q /= g
    q *= F32(0.5)
    return q


def segment_distance(px, py, pz, p0, p1) -> np.ndarray:
    """Distance (mm) from points to the segment p0-p1 (3-vectors)."""
    p0 = np.asarray(p0, float)
    d = np.asarray(p1, float) - p0
    dd = float(d @ d)
    ux, uy, uz = px - F32(p0[0]), py - F32(p0[1]), pz - F32(p0[2])
    if dd < 1e-9:
        return np.sqrt(ux * ux + uy * uy + uz * uz)
    t = ux * F32(d[0] / dd) + uy * F32(d[1] / dd) + uz * F32(d[2] / dd)
    _clip(t, 0.0, 1.0, out=t)
    ux -= t * F32(d[0])
    uy -= t * F32(d[1])
    uz -= t * F32(d[2])
    r = ux * ux
    r += uy * uy
    r += uz * uz
    return np.sqrt(r, out=r)


def smooth_union(d1: np.ndarray, d2: np.ndarray, k_mm: float) -> np.ndarray:
    """Union of two shapes with a fillet of about ``k_mm`` (polynomial smooth minimum)."""
    h = np.clip(0.5 + 0.5 * (d2 - d1) / k_mm, 0.0, 1.0)
    return d2 * (1 - h) + d1 * h - k_mm * h * (1 - h)
