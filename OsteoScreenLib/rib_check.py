"""Rib check: which vertebra is L1, asked locally of each vertebra instead of counted from the top.

L1 is the first vertebra below the last rib-bearing one. The coarse stage finds L1 by counting
over the whole chest and is sometimes one vertebra off (a short 12th rib, 11 or 13 rib pairs).
A small network answers, for a box around one vertebral body on the coarse grid, whether that
vertebra bears a rib pair. Stepping from the coarse L1 along the spine, the levels are moved by
up to two vertebrae when the ribs say so clearly; otherwise the coarse stage's answer stands.
A spine-cropped scan is checked too when it shows the rib heads and necks (``covers``): there the
coarse stage, which counts from the top, has little to count from.

Pure functions of arrays and geometry; the network runs through ``OnnxNetwork``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .registry import LABEL_OF
from .resample import bounds_ras, centred_grid, sample
from .volume import Volume

# Spacing of neighbouring vertebrae along the spine (centre to centre) accepted from the
# coarse L1 and L2, or from twice it when they lie two vertebrae apart (the coarse stage skipped
# one); outside both the typical step is used.
STEP_RANGE_MM = (22.0, 45.0)
TWO_STEP_RANGE_MM = (50.0, 80.0)
TYPICAL_STEP_MM = 32.0
# Vertebrae asked about (from the coarse L1) and the moves of L1 they can decide.
OFFSETS = (-3, -2, -1, 0, 1, 2)
MOVES = (-2, -1, 0, 1, 2)
# A level is moved only when the ribs favour the move this many times more than the coarse level.
MIN_LIKELIHOOD_RATIO = 20.0
# Below that, a move the ribs favour over the coarse level at all is reported, not made: with
# 0.7.0's rib check, the one sure-and-wrong chest test phantom it could see (4.5 to 1) was the only
# unflagged scan with any move above 1 to 1 (right scans: 0.1 to 1 or below); with 0.7.1's, a
# wrong spine-cropped one leans the right way (4.7 to 1) and 2 of 395 right ones lean. The move
# must be plausible itself (ribs above the new L1, none on it): where the check reads no ribs
# anywhere, as on the real abdominal scan, two negligible likelihoods make a meaningless ratio.
LEAN_LIKELIHOOD_RATIO = 1.0
LEAN_MIN_LIKELIHOOD = 0.1
# A level the check leaves where it is counts as confirmed by the ribs only when they say so: the
# vertebra above L1 reads as rib-bearing and L1 does not. Otherwise (no ribs read anywhere, or ribs on
# L1 too weak to move it) the levels rest on the coarse stage alone and the reader is asked to
# check them: a chest CT whose last ribs the check cannot see is where a level one vertebra off
# would otherwise pass without a warning.
CONFIRM_MIN_PROBABILITY = 0.5
# Only where the CT shows a vertebra's rib heads and necks: this far each side of its centre (R),
# in front of it and behind it (A). A narrower field of view hides the ribs, and missing ribs
# would read as a lumbar vertebra. (The network learnt boxes cut that close: RIB_CHECK_AUGMENT.)
MIN_SIDE_MM = 30.0
MIN_FRONT_MM = 10.0
MIN_BACK_MM = 50.0
# A vertebra is asked about only when its centre lies this far inside the first and last slice.
IN_SCAN_MARGIN_MM = 5.0


@dataclass
class RibDecision:
    shift: int  # vertebrae to move L1 and L2 by (+1 = one vertebra down, -1 = up)
    step_ras: np.ndarray  # from one vertebra to the one below (mm)
    rib_probability: dict[int, float]  # by offset from the coarse L1 (OFFSETS), those inside the scan
    checked: bool  # False when the field of view does not show the ribs
    l2_follows_l1: bool = False  # the coarse L2 was not one vertebra below L1: after a move, L2 = L1 + step
    leaning: int = 0  # a move the ribs favour over staying, but not clearly enough to make (0: none)
    lean_ratio: float = 0.0  # how many times more they favour it than staying


def crop(coarse_input: Volume, center_ras, cfg: dict) -> np.ndarray:
    """The network's input (1, k, j, i): the coarse stage's input around one vertebral body
    (``cfg``: the model card's preprocessing of the rib check, box size and spacing)."""
    grid, shape = centred_grid(center_ras, cfg["size_mm"], cfg["spacing_mm"])
    return sample(coarse_input, grid, shape, order=1, fill=-1.0, antialias=False)[None].astype(np.float32)


def covers(ct: Volume, center_ras) -> bool:
    """Whether the CT's field of view shows a vertebra's rib heads and necks (R and A)."""
    lo, hi = bounds_ras(ct)
    c = np.asarray(center_ras, float)[:2]
    below, above = np.array([MIN_SIDE_MM, MIN_BACK_MM]), np.array([MIN_SIDE_MM, MIN_FRONT_MM])  # R, A
    return bool(np.all(c - below >= lo[:2]) and np.all(c + above <= hi[:2]))


def in_scan(ct: Volume, center_ras, margin_mm: float = IN_SCAN_MARGIN_MM) -> bool:
    """Whether a vertebra's centre lies within the scan's S extent, ``margin_mm`` inside its first
    and last slice (its ribs can be seen at all): a box beyond them holds padding, whose answer
    means nothing."""
    lo, hi = bounds_ras(ct)
    return bool(lo[2] + margin_mm <= float(np.asarray(center_ras, float)[2]) <= hi[2] - margin_mm)


def _below(l1_ras, l2_ras, distance_mm) -> np.ndarray | None:
    """L1 to L2 when L2 lies below L1 at a distance within ``distance_mm``, else None."""
    if l1_ras is None or l2_ras is None:
        return None
    d = np.asarray(l2_ras, float) - np.asarray(l1_ras, float)
    return d if d[2] < 0 and distance_mm[0] <= float(np.linalg.norm(d)) <= distance_mm[1] else None


def l2_below_l1(l1_ras, l2_ras) -> bool:
    """Whether the coarse L2 lies one vertebra below the coarse L1."""
    return _below(l1_ras, l2_ras, STEP_RANGE_MM) is not None


def spine_step(l1_ras, l2_ras) -> np.ndarray:
    """From one vertebra to the one below: L1 to L2 when plausible (or half of it when they lie
    two vertebrae apart), else straight down."""
    one, two = _below(l1_ras, l2_ras, STEP_RANGE_MM), _below(l1_ras, l2_ras, TWO_STEP_RANGE_MM)
    if one is not None:
        return one
    if two is not None:
        return two / 2
    return np.array([0.0, 0.0, -TYPICAL_STEP_MM])


def weigh(p: dict[int, float]) -> tuple[int, float, float]:
    """The move of L1 the ribs favour most (one of MOVES other than 0), the log of its likelihood
    ratio against staying and the log of its own likelihood; (0, -inf, -inf) when no move can be
    weighed.

    ``p``: rib-bearing probability at offsets (OFFSETS) from the coarse L1; an offset outside the
    scan is left out, and a move that needs it is not weighed. Staying needs only the coarse L1
    itself (a scan that starts at it does not show the vertebra above), a move both vertebrae it
    relies on: L1 bears no ribs and the vertebra above it does."""
    eps = 1e-4

    def score(m: int) -> float:
        above = np.log(max(p[m - 1], eps)) if m - 1 in p else 0.0
        return above + np.log(max(1.0 - p[m], eps))

    moves = [m for m in MOVES if m != 0 and m in p and m - 1 in p]
    if 0 not in p or not moves:
        return 0, float("-inf"), float("-inf")
    best = max(moves, key=score)
    return best, float(score(best) - score(0)), float(score(best))


def decide(p: dict[int, float]) -> int:
    """Offset of L1 from the coarse L1 (one of MOVES): the best move when the ribs favour it at
    least MIN_LIKELIHOOD_RATIO times more than staying, else 0 (see ``weigh``)."""
    best, log_ratio, _ = weigh(p)
    return best if log_ratio >= np.log(MIN_LIKELIHOOD_RATIO) else 0


def lean(p: dict[int, float]) -> tuple[int, float]:
    """A plausible move (likelihood at least LEAN_MIN_LIKELIHOOD) the ribs favour over staying
    (more than LEAN_LIKELIHOOD_RATIO) but not clearly enough to make, with its likelihood ratio;
    (0, 0.0) when there is none."""
    best, log_ratio, log_likelihood = weigh(p)
    if (best and log_likelihood >= np.log(LEAN_MIN_LIKELIHOOD)
            and np.log(LEAN_LIKELIHOOD_RATIO) < log_ratio < np.log(MIN_LIKELIHOOD_RATIO)):
        return best, float(np.exp(log_ratio))
    return 0, 0.0


def confirms(p: dict[int, float]) -> bool:
    """Whether the rib-bearing probabilities (by offset from L1) confirm L1 where it is: ribs read
    on the vertebra above it, none on L1 itself (CONFIRM_MIN_PROBABILITY)."""
    above, at = p.get(-1), p.get(0)
    return above is not None and at is not None and above >= CONFIRM_MIN_PROBABILITY > at


def check_levels(ct: Volume, coarse_input: Volume, l1_ras, l2_ras, run, cfg: dict) -> RibDecision:
    """Rib-bearing probability of the vertebrae around the coarse L1, and the level shift they call for.

    ``run``: batch (n, 1, k, j, i) -> logits (n, 1). With L1 not found, its place is one step above L2."""
    step = spine_step(l1_ras, l2_ras)
    anchor = np.asarray(l1_ras, float) if l1_ras is not None else np.asarray(l2_ras, float) - step
    follows = l1_ras is not None and l2_ras is not None and not l2_below_l1(l1_ras, l2_ras)
    # a vertebra outside the scan or whose ribs the field of view hides is not asked (its box
    # would answer anything), and no move relies on it; without the coarse L1 itself, no check
    asked = [(m, c) for m, c in ((m, anchor + m * step) for m in OFFSETS) if in_scan(ct, c) and covers(ct, c)]
    if 0 not in dict(asked):
        return RibDecision(0, step, {}, False, follows)
    logits = np.asarray(run(np.stack([crop(coarse_input, c, cfg) for _, c in asked])), float).reshape(-1)
    p = {m: float(1.0 / (1.0 + np.exp(-v))) for (m, _), v in zip(asked, logits)}
    return RibDecision(decide(p), step, p, True, follows, *lean(p))


def shift_levels(coarse: Volume, shift: int, step_ras: np.ndarray, l1_found: bool,
                 l2_follows_l1: bool = False) -> Volume:
    """Coarse probabilities with L1 and L2 moved ``shift`` vertebrae along ``step_ras``.

    Without an L1 region, L1 is taken from the L2 map one vertebra above its new place; with
    ``l2_follows_l1`` (the coarse L2 was not one vertebra below L1), L2 from the L1 map one below."""
    step = np.asarray(step_ras, float)
    moves = {"L1": ("L1", shift) if l1_found else ("L2", shift - 1),
             "L2": ("L1", shift + 1) if l1_found and l2_follows_l1 else ("L2", shift)}
    return move_levels(coarse, {name: (source, n * step) for name, (source, n) in moves.items()})


def move_levels(coarse: Volume, moves: dict[str, tuple[str, np.ndarray]]) -> Volume:
    """Coarse probabilities with each level's map taken from ``source``'s map moved by a vector (RAS mm)."""
    out = coarse.array.copy()
    for name, (source, vector) in moves.items():
        moved = Volume(coarse.array[..., LABEL_OF[source]], coarse.ijk_to_ras.copy())
        moved.ijk_to_ras[:3, 3] += np.asarray(vector, float)
        out[..., LABEL_OF[name]] = sample(moved, coarse.ijk_to_ras, coarse.array.shape[:3], order=1, fill=0.0,
                                          antialias=False)
    out[..., 0] = np.clip(1.0 - out[..., 1:].sum(-1), 0.0, 1.0)
    return Volume(out, coarse.ijk_to_ras.copy())
