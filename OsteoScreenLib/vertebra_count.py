"""Level identification by counting vertebrae: a second opinion on where L1 is, from the whole chest.

A chest CT shows the thoracic spine, so L1 can be read two ways a radiologist reads it:
- from the top: the first rib-bearing vertebra below one without ribs (C7) is T1, and L1 is the
  13th body counted from it (registry.THORACIC_COUNT rib-bearing bodies, then L1);
- from the last rib pair: L1 is the first body below the last rib-bearing one.
The two agree in the usual spine and disagree by one with 11 or 13 rib pairs: transitional
anatomy that the reader must be told about.

The vertebra counter (a network, ``count.onnx``, on the CT resampled to 5 mm in-plane and 2.5 mm
along S, where the discs show) marks each vertebral body in view, as rib-bearing or not, and the
discs between them (registry.COUNT_CLASSES). This module turns its probabilities into bodies along
the spine and the two readings. Pure functions on arrays and their geometry; the segmenter decides
what to do with the answer (segmenter.reconcile_count).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .postprocess import components
from .registry import COUNT_CLASSES, THORACIC_COUNT
from .volume import Volume

RIB, NO_RIB, DISC = COUNT_CLASSES["rib-bearing body"], COUNT_CLASSES["body without ribs"], COUNT_CLASSES["disc"]
MIN_BODY_VOXELS = 4  # a body is 40-300 voxels on the counter's grid; smaller specks are noise
# Touching bodies are split at a dip of the mass per slice to below this share of the smaller
# peak; peaks closer than this are one body (the shortest bodies, upper thoracic, are ~14 mm high).
TROUGH_RATIO = 0.6
MIN_PEAK_SEPARATION_MM = 10.0
# Successive body centres: 16-22 mm apart at the upper thoracic spine, 30-40 mm at the lumbar
# (body plus disc), a little more on a tilted spine; sideways they move a few mm per level, more
# where the spine runs obliquely to the scanner's axis: the upper thoracic spine of a kyphotic
# patient lying supine runs forwards up to about 45 degrees (a step forwards as long as the step down).
STEP_S_MM = (10.0, 50.0)
MAX_SIDEWAYS_STEP_MM = 20.0
MAX_TILT_SIDEWAYS_PER_MM = 1.0  # tan(45 degrees)
# A step this much longer than its neighbours' steps means a body the counter did not mark:
# counting across it would be one off.
MISSED_BODY_RATIO = 1.6
# A body this much taller along S than its neighbours is likely two bodies the counter ran into
# one (their disc not marked): counting across it would be one off, as across a missed body.
MERGED_BODY_RATIO = 1.6
# A body counts as rib-bearing (or not) when this share of its probability says so; in between,
# its ribs are unclear and no count passes it.
RIB_SURE = 0.75


@dataclass
class Body:
    centroid_ras: np.ndarray
    rib_probability: float  # share of the body's mass the counter gives to "rib-bearing"
    mass: float  # summed body probability over its voxels
    extent_mm: float = 0.0  # height along S of the voxels marked

    @property
    def ribs(self) -> bool | None:
        """True: bears ribs; False: none; None: unclear."""
        if self.rib_probability >= RIB_SURE:
            return True
        if self.rib_probability <= 1.0 - RIB_SURE:
            return False
        return None


@dataclass
class Count:
    bodies: list[Body]  # along the spine, top to bottom
    first_rib: int | None = None  # index of T1: a rib-bearing body with one without ribs above it
    last_rib: int | None = None  # index of the last rib-bearing body, with one without ribs below it
    missed_after: list[int] = field(default_factory=list)  # a body seems missing below these indices
    problems: list[str] = field(default_factory=list)  # why a reading is not available

    @property
    def l1_from_top(self) -> int | None:
        """L1's index counted from T1, when the count reaches it with no body missed on the way."""
        if self.first_rib is None:
            return None
        n = self.first_rib + THORACIC_COUNT
        if n >= len(self.bodies) or any(self.first_rib <= m < n for m in self.missed_after):
            return None
        return n

    @property
    def l1_from_ribs(self) -> int | None:
        """L1's index as the first body below the last rib pair."""
        if self.last_rib is None or self.last_rib in self.missed_after:
            return None
        return self.last_rib + 1

    @property
    def rib_pairs(self) -> int | None:
        if self.first_rib is None or self.last_rib is None:
            return None
        if any(self.first_rib <= m < self.last_rib for m in self.missed_after):
            return None
        return self.last_rib - self.first_rib + 1

    def index_near(self, ras: np.ndarray, within_mm: float = 15.0) -> int | None:
        """The body whose centre lies nearest ``ras`` (within ``within_mm``), or None."""
        if not self.bodies:
            return None
        d = [float(np.linalg.norm(b.centroid_ras - np.asarray(ras, float))) for b in self.bodies]
        n = int(np.argmin(d))
        return n if d[n] <= within_mm else None

    def summary(self) -> dict:
        """What the counter read, for the result's record."""
        return {"bodies": len(self.bodies),
                "centres_ras": [[round(float(v), 1) for v in b.centroid_ras] for b in self.bodies],
                "ribs": "".join({True: "R", False: "-", None: "?"}[b.ribs] for b in self.bodies),
                "first_rib": self.first_rib, "last_rib": self.last_rib, "rib_pairs": self.rib_pairs,
                "l1_from_top": self.l1_from_top, "l1_from_ribs": self.l1_from_ribs,
                "missed_after": list(self.missed_after), "problems": list(self.problems)}


def find_bodies(probabilities: Volume) -> list[Body]:
    """The bodies the counter marks, along the spine from top to bottom.

    ``probabilities``: (k, j, i, C) class probabilities (registry.COUNT_CLASSES) on a RAS-aligned
    grid (k = S). Each body is a connected region where a body class outweighs background and disc,
    split where its mass along S dips between two peaks (neighbouring bodies that touch); the spine is
    the longest chain of bodies that follow one another down (a speck on the sternum, a shoulder or an
    organ is left out; ties go to the chain with more mass)."""
    p = probabilities.array
    body = p[..., RIB] + p[..., NO_RIB]
    others = p[..., 0] if p.shape[-1] <= DISC else np.maximum(p[..., 0], p[..., DISC])
    bodies = []
    slice_mm = float(np.linalg.norm(probabilities.ijk_to_ras[:3, 2]))
    for region in components(body > others, MIN_BODY_VOXELS):
        for part in split_along_s(region, body, max(1, int(round(MIN_PEAK_SEPARATION_MM / slice_mm)))):
            rib, none = float(p[..., RIB][part].sum()), float(p[..., NO_RIB][part].sum())
            kji = np.argwhere(part)
            centre = probabilities.voxel_centers_ras(kji.mean(axis=0))[0]
            extent = (int(kji[:, 0].max()) - int(kji[:, 0].min()) + 1) * slice_mm
            bodies.append(Body(centre, rib / max(rib + none, 1e-6), rib + none, extent))
    if not bodies:
        return []
    chains = [_chain_from(start, bodies) for start in bodies]
    best = max(chains, key=lambda c: (len(c), sum(b.mass for b in c)))
    return sorted(best, key=lambda b: -b.centroid_ras[2])


def _chain_from(start: Body, bodies: list[Body]) -> list[Body]:
    """The bodies reached from ``start`` stepping down the spine, then up."""
    chain = [start]
    for direction in (1, -1):  # down (S decreasing), then up
        current = start
        while True:
            nxt = _next_body(current, bodies, direction)
            if nxt is None:  # each step moves at least STEP_S_MM[0] one way: no body comes twice
                break
            chain.append(nxt)
            current = nxt
    return chain


def split_along_s(region: np.ndarray, foreground: np.ndarray, min_peak_slices: int) -> list[np.ndarray]:
    """``region`` cut into one part per peak of its foreground mass per slice (k): two touching
    bodies show two peaks with a dip between them (the disc); a dip shallower than TROUGH_RATIO
    of the smaller peak, or peaks closer than ``min_peak_slices``, are one body."""
    ks = np.nonzero(region.any(axis=(1, 2)))[0]
    lo, hi = int(ks.min()), int(ks.max()) + 1
    mass = (foreground[lo:hi] * region[lo:hi]).sum(axis=(1, 2))
    padded = np.concatenate([[0.0], mass, [0.0]])
    peaks = [n for n in range(len(mass)) if padded[n + 1] > padded[n] and padded[n + 1] >= padded[n + 2]]
    cuts = []  # slice indices (relative) where a new body starts
    kept = [peaks[0]] if peaks else []
    for n in peaks[1:]:
        a = kept[-1]
        trough = a + int(np.argmin(mass[a:n + 1]))
        if n - a >= min_peak_slices and mass[trough] < TROUGH_RATIO * min(mass[a], mass[n]):
            cuts.append(trough + 1 if mass[trough] >= mass[min(trough + 1, len(mass) - 1)] else trough)
            kept.append(n)
        elif mass[n] > mass[a]:
            kept[-1] = n
    bounds = [0, *cuts, len(mass)]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = np.zeros_like(region)
        part[lo + a:lo + b] = region[lo + a:lo + b]
        if part.sum() >= MIN_BODY_VOXELS:
            parts.append(part)
    return parts


def _next_body(current: Body, bodies: list[Body], direction: int) -> Body | None:
    """The nearest body one step further down (direction 1) or up (-1) the spine."""
    fits = []
    for b in bodies:
        step = direction * (current.centroid_ras[2] - b.centroid_ras[2])
        sideways = float(np.linalg.norm(b.centroid_ras[:2] - current.centroid_ras[:2]))
        if STEP_S_MM[0] <= step <= STEP_S_MM[1] and sideways <= max(MAX_SIDEWAYS_STEP_MM, MAX_TILT_SIDEWAYS_PER_MM * step):
            fits.append((step, b))
    return min(fits, key=lambda f: f[0])[1] if fits else None


def count(bodies: list[Body]) -> Count:
    """The two readings of L1 from the bodies along the spine (see the module's docstring)."""
    out = Count(bodies)
    if len(bodies) < 2:
        out.problems.append("fewer than two vertebral bodies found")
        return out
    s = np.array([b.centroid_ras[2] for b in bodies])
    missed = set(_longer_than_neighbours(s[:-1] - s[1:], MISSED_BODY_RATIO))  # a step too long
    for n in _longer_than_neighbours(np.array([b.extent_mm for b in bodies]), MERGED_BODY_RATIO):
        missed |= {m for m in (n - 1, n) if m >= 0}  # a body too tall: the steps into and out of it
    out.missed_after = sorted(missed)
    ribs = [b.ribs for b in bodies]
    bearing = [n for n, r in enumerate(ribs) if r]
    if not bearing:
        out.problems.append("no rib-bearing vertebra found")
        return out
    first, last = bearing[0], bearing[-1]
    if any(r is not True for r in ribs[first:last + 1]):
        out.problems.append("the ribs are unclear or interrupted between the first and the last rib pair")
        return out
    if first > 0 and ribs[first - 1] is False:
        out.first_rib = first
    if last + 1 < len(bodies) and ribs[last + 1] is False:
        out.last_rib = last
    return out


def _longer_than_neighbours(values: np.ndarray, ratio: float) -> list[int]:
    """Indices whose value exceeds ``ratio`` times the median of up to two neighbours on each side."""
    out = []
    for n, value in enumerate(values):
        near = np.concatenate([values[max(0, n - 2):n], values[n + 1:n + 3]])
        if len(near) and value > ratio * float(np.median(near)):
            out.append(n)
    return out


def count_vertebrae(probabilities: Volume) -> Count:
    return count(find_bodies(probabilities))
