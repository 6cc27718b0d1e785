"""L1/L2 vertebral-body segmentation with the bundled ONNX networks, coarse to fine.

1. coarse: the whole CT resampled to a few-mm RAS grid; a network marks the L1
   and L2 bodies (it counts from the last rib-bearing vertebra); a small second
   network, the rib check (rib_check.py), asks of the vertebrae around that L1
   whether they bear ribs, and moves both levels by up to two vertebrae when they say so; a
   third network, the vertebra counter (vertebra_count.py), marks every vertebral body in view
   and reads L1 by counting from T1 and from the last rib pair: where both readings agree and
   the levels lie elsewhere, the levels move to the counted ones; any disagreement is a warning;
2. fine: a ~1 mm box around L1-L2; a second network, given the CT and the coarse
   masks as hints, outlines both bodies (averaged with its answer on the mirrored box);
3. the fine probabilities are resampled onto the original CT grid inside the box
   only, then one connected body per level ending at the L1-L2 disc, holes filled,
   L1 above L2.

Everything the preprocessing needs is read from the model card, so inference is
rebuilt from the model folder alone. No torch, no MONAI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import OsteoScreenError
from .measurements import vertebra_centroids
from .model_store import model_folder, verified_files
from .onnx_runner import OnnxNetwork
from .postprocess import components, dilate, fill_holes, largest_component
from .registry import HU_AIR, LABEL_OF, VERTEBRA_NAMES
from .rib_check import check_levels, confirms, move_levels, shift_levels
from .vertebra_count import Count, count_vertebrae
from .resample import axis_aligned_grid, bounds_ras, centred_grid, crop_to_mask, index_box, mask_box, sample, subvolume
from .volume import Volume

MODEL_NAME = "segmentation"
MIN_COARSE_VOXELS = 20  # below this a level counts as not found (at ~5 mm, a body is ~250 voxels)
# A level the coarse stage marks only faintly (a sharply tilted spine, or a level the first or
# last slice cuts) is still taken when the other level was found and it lies one vertebra from it
# on the right side; the reader is warned (and told when it touches the scan's edge).
MIN_FAINT_COARSE_VOXELS = 5
# Level certainty from the coarse stage (calibrated on the tune phantoms and the real cases,
# training/results/level_confidence.md): a level is flagged for the reader to check when the
# mean probability over its region is low, or when much of its probability lies elsewhere
# (the model hesitates between two vertebrae).
LEVEL_CONFIDENCE_MIN = 0.90
LEVEL_SPREAD_MAX = 1.5
# A voxel of one level this far past the mid-plane between the L1 and L2 bodies lies in the other
# body (trim_beyond_disc): the disc is 6-12 mm high and endplates tilt a few degrees, so a body's
# own voxels stay on its side of the mid-plane.
DISC_MIDPLANE_MARGIN_MM = 3.0
# Centroid distance of L1 and L2 (one vertebral body and disc, about 25-35 mm in adults), with margin.
LEVEL_STEP_MM = (15.0, 45.0)
# Most bone-free height between the L1 and L2 bodies along S: the L1-L2 disc is about 7-12 mm at
# its rim (on 20 test phantoms the gap between the reference bodies was -7 to 4 mm, the endplates'
# rims overlapping in S); L2 drawn wholly or partly on L3 left 16 and 27 mm.
MAX_L1_L2_GAP_MM = 14.0
BODY_HU_THRESHOLD = -500.0  # air vs body, to crop the coarse grid to the patient
HALF_STEP_MM = 15.0  # half of one lumbar body and disc
# An outline's centroid farther than this from every body centre the counter found gets a level
# warning (outline_offsets): on the 100 tune phantoms (chest and spine-cropped, model 0.9.0) every
# outline of DSC > 0.9 lay within 9.7 mm; the one beyond, 24 mm (DSC 0.69), was on a scan whose other
# level was wrong (tune_eval*_offsets_0.9.0.md). One that slid across a disc onto two bodies lies about
# half a body step (15-20 mm) away; a whole level off lies on another body and is not caught here.
# Chosen on phantoms, not on a real case.
OUTLINE_OFFSET_MAX_MM = 12.0
L2_NOT_IN_VIEW = ("L2 not found in the field of view (the scan ends below L1): only model 2 (l1, L1 alone) "
                  "can classify this scan")
# A level the scan's first or last slice cuts, with less than this share of the other level's height in
# view, is reported not in view rather than outlined: its central slice, which the classifier reads, is
# not in the scan, and what is left of it is an endplate and the disc beside it (model 2's use case, a
# chest CT ending just below L1; the case, lidc-idri-0001 cut below L1: a choice in the README).
MIN_SHARE_IN_VIEW = 0.5
L2_CUT = ("L2 is cut by the edge of the scan (less than half of it in view) and is not outlined: only model 2 "
          "(l1, L1 alone) can classify this scan")


class Cancelled(Exception):
    """Raised when the caller's cancel callback asks to stop."""


def normalise_hu(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip to the model's HU window and scale to about [-1, 1]: the same in training."""
    lo, hi = window
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)


def pad_to_multiple(array: np.ndarray, multiple: int, value: float) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the last three axes at their end to a multiple; return the slices of the original."""
    pads = [(0, 0)] * (array.ndim - 3) + [(0, (-s) % multiple) for s in array.shape[-3:]]
    return np.pad(array, pads, constant_values=value), tuple(slice(0, s) for s in array.shape[-3:])


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def coarse_input(ct: Volume, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Network input (1, k, j, i) and grid of the coarse stage: a RAS grid cropped to the body."""
    lo, hi = bounds_ras(ct)
    grid, shape = axis_aligned_grid(lo, hi, cfg["spacing_mm"])
    hu = sample(ct, grid, shape, order=1, fill=-1000.0)
    box = mask_box(hu > BODY_HU_THRESHOLD, margin=2)  # per-axis bounds: no index list of every body voxel
    if box is None:
        raise OsteoScreenError("the CT holds no body (all voxels look like air)")
    start, stop = box
    hu = hu[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    grid = grid.copy()
    grid[:3, 3] = grid[:3, :3] @ start[::-1] + grid[:3, 3]
    return normalise_hu(hu, cfg["hu_window"])[None], grid


def fine_input(ct: Volume, hints: Volume, center_ras, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Network input (3, k, j, i) and grid of the fine stage: CT plus P(L1), P(L2) hints.

    ``hints`` holds class probabilities (k, j, i, 3) on any grid (the coarse output at
    run time; perturbed reference labels in training).
    """
    grid, shape = centred_grid(center_ras, cfg["size_mm"], cfg["spacing_mm"])
    hu = sample(ct, grid, shape, order=1, fill=-1000.0)
    p = sample(hints, grid, shape, order=1, fill=0.0, antialias=False)[..., 1:]
    x = np.concatenate([normalise_hu(hu, cfg["hu_window"])[None], np.moveaxis(p, -1, 0) * 2 - 1], 0)
    return x.astype(np.float32), grid


@dataclass
class SegmentationOutput:
    labels: Volume  # 0 background, 1 = L1, 2 = L2 on the CT grid
    warnings: list[str] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)
    level_confidence: dict[str, dict[str, float]] = field(default_factory=dict)  # see level_certainty
    rib_check: dict = field(default_factory=dict)  # rib-bearing probabilities around L1 and the shift made
    level_warnings: list[str] = field(default_factory=list)  # those of ``warnings`` that question the levels
    count: dict = field(default_factory=dict)  # what the vertebra counter read (Count.summary) and did


class L1L2Segmenter:
    """Loads the model folder once; ``segment`` runs one CT."""

    def __init__(self, folder: Path | None = None, threads: int | None = None):
        folder = model_folder(MODEL_NAME) if folder is None else Path(folder)
        files, self.card = verified_files(folder)
        self.folder = folder
        self.coarse_net = OnnxNetwork(files["coarse"], threads)
        self.fine_net = OnnxNetwork(files["fine"], threads)
        self.coarse_cfg = self.card["preprocessing"]["coarse"]
        self.fine_cfg = self.card["preprocessing"]["fine"]
        # model folders before 0.4.0 have no rib check: their coarse stage's levels stand
        self.rib_net = OnnxNetwork(files["rib_check"], threads) if "rib_check" in files else None
        self.rib_cfg = self.card["preprocessing"].get("rib_check")
        # model folders before 0.9.0 have no vertebra counter
        self.count_net = OnnxNetwork(files["count"], threads) if "count" in files else None
        self.count_cfg = self.card["preprocessing"].get("count")

    # --- stages

    def coarse_stage(self, ct: Volume) -> tuple[Volume, Volume]:
        """Class probabilities (k, j, i, 3) and the network's input (k, j, i) on the coarse RAS grid."""
        x, grid = coarse_input(ct, self.coarse_cfg)
        return Volume(np.moveaxis(self.probabilities(self.coarse_net, x, self.coarse_cfg, -1.0), 0, -1), grid), Volume(x[0], grid)

    def checked_levels(self, ct: Volume, coarse: Volume, coarse_x: Volume) -> tuple[Volume, dict, dict]:
        """The coarse probabilities and levels after the rib check, and what the check found."""
        levels = find_levels(coarse)
        if self.rib_net is None or not levels:
            return coarse, levels, {}
        ras = {name: lv["centroid_ras"] for name, lv in levels.items()}
        decision = check_levels(ct, coarse_x, ras.get("L1"), ras.get("L2"), self.rib_net.run, self.rib_cfg)
        report = {"checked": decision.checked, "shift": decision.shift,
                  "rib_probability": {str(m): round(p, 3) for m, p in decision.rib_probability.items()}}
        if decision.checked and not decision.shift:
            report["confirmed"] = confirms(decision.rib_probability)
        if decision.leaning:
            report.update(leaning=decision.leaning, lean_ratio=round(decision.lean_ratio, 1))
        if decision.shift:
            coarse = shift_levels(coarse, decision.shift, decision.step_ras, "L1" in levels, decision.l2_follows_l1)
            levels = find_levels(coarse)
        return coarse, levels, report

    def counted_levels(self, ct: Volume, coarse: Volume, levels: dict) -> tuple[Volume, dict, dict, list[str]]:
        """The levels after the vertebra counter's two readings (see ``reconcile_count``), what it read,
        and its warnings; unchanged without a counter in the model folder. The counter reads the CT on
        a grid of its own, finer along S than the coarse stage's (the discs between the bodies show)."""
        if self.count_net is None:
            return coarse, levels, {}, []
        x, grid = coarse_input(ct, self.count_cfg)
        probs = self.probabilities(self.count_net, x, self.count_cfg, -1.0)
        counted = count_vertebrae(Volume(np.moveaxis(probs, 0, -1), grid))
        return reconcile_count(coarse, levels, counted)

    def fine_probabilities(self, ct: Volume, coarse: Volume, center_ras: np.ndarray) -> Volume:
        """The fine stage on its box, averaged with its answer on the box mirrored left to right
        (the box is RAS-aligned and centred on the spine; the network learnt mirrored samples): a
        test-time mirror steadies the outline where a real scan differs from the phantoms."""
        x, grid = fine_input(ct, coarse, center_ras, self.fine_cfg)
        p = self.probabilities(self.fine_net, x, self.fine_cfg, 0.0)
        mirrored = self.probabilities(self.fine_net, np.ascontiguousarray(x[..., ::-1]), self.fine_cfg, 0.0)[..., ::-1]
        return Volume(np.moveaxis((p + mirrored) / 2, 0, -1), grid)

    @staticmethod
    def probabilities(net: OnnxNetwork, x: np.ndarray, cfg: dict, pad_value: float) -> np.ndarray:
        """Class probabilities (C, k, j, i) of one network on input ``x`` (C, k, j, i), padded to the
        stage's multiple with ``pad_value`` and cropped back."""
        padded, valid = pad_to_multiple(x[None], cfg["pad_multiple"], pad_value)
        logits = net.run(padded)[0][(slice(None), *valid)]
        return softmax(logits, 0).astype(np.float32)

    # --- whole case

    def segment(
        self,
        ct: Volume,
        progress: Callable[[float, str], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> SegmentationOutput:
        """L1 and L2 of ``ct``, a CT checked where it entered (``ct_io.read_ct``, ``logic.case_input``,
        or ``ct_io.checked_ct`` for a volume made elsewhere): its padding already read as air."""
        if ct.array.size and ct.array.min() < HU_AIR:  # the contract, not a second conversion
            raise OsteoScreenError("the CT holds values below air (the scanner's padding?): read it with "
                                   "ct_io.read_ct, or pass it through ct_io.checked_ct, before segmenting")

        def step(fraction: float, message: str) -> None:
            if cancel is not None and cancel():
                raise Cancelled("segmentation cancelled")
            if progress is not None:
                progress(fraction, message)

        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        step(0.05, "finding L1 and L2")
        coarse, coarse_x = self.coarse_stage(ct)
        coarse, levels, rib_report = self.checked_levels(ct, coarse, coarse_x)
        coarse, levels, count_report, count_warnings = self.counted_levels(ct, coarse, levels)
        timing["coarse"] = time.perf_counter() - t0
        missing = [name for name in VERTEBRA_NAMES if name not in levels]
        centroids = {name: lv["centroid_ras"] for name, lv in levels.items()}
        confidence = {name: lv["certainty"] for name, lv in levels.items()}
        level_warnings = [w for w in (level_warning(n, c) for n, c in confidence.items()) if w]
        # levels the counter moved supersede the rib check's answer
        level_warnings += count_warnings + ([] if count_report.get("moved") else rib_check_warnings(rib_report))
        level_warnings += [f"{name} found only faintly by the level finder: check that "
                           f"{'L1 lies directly above L2' if name == 'L1' else 'L2 lies directly below L1'}"
                           for name, lv in levels.items() if lv.get("faint")]
        if "L1" in missing:
            raise OsteoScreenError(
                f"{' and '.join(missing)} not found in the field of view; OsteoScreen needs a CT that "
                "covers L1 and L2 (a chest CT reaching the upper abdomen), or L1 for model 2"
            )
        if missing:  # a scan that ends below L1: model 2 (L1 alone) can still classify it
            level_warnings.append(L2_NOT_IN_VIEW)
        step(0.4, "outlining the vertebral bodies")
        t1 = time.perf_counter()
        # the fine box centres on the L1-L2 disc; without L2, half a lumbar vertebra below L1
        center = (centroids["L1"] + centroids["L2"]) / 2 if "L2" in centroids else centroids["L1"] - [0, 0, HALF_STEP_MM]
        fine = self.fine_probabilities(ct, level_hints(coarse, levels), center)
        timing["fine"] = time.perf_counter() - t1
        step(0.8, "mapping to the CT grid")
        t2 = time.perf_counter()
        labels, (outline_warnings, order_warnings) = self.to_ct_grid(ct, fine)
        cut = cut_levels(labels)
        if "L1" in cut:
            raise OsteoScreenError("L1 is cut by the edge of the scan (less than half of it in view); OsteoScreen "
                                   "needs a CT that covers L1 and L2, or L1 for model 2")
        level_warnings += [L2_CUT] if cut else []
        for name in missing + cut:  # not in view: nothing of it is outlined, and "could not be outlined" says no more
            labels.array[labels.array == LABEL_OF[name]] = 0
            outline_warnings = [w for w in outline_warnings if not w.startswith(f"{name} ")]
        if count_report.get("centres_ras"):
            count_report["outline_offset_mm"] = outline_offsets(labels, count_report["centres_ras"])
            order_warnings += outline_offset_warnings(count_report["outline_offset_mm"])
        timing["to_ct_grid"] = time.perf_counter() - t2
        timing["total"] = time.perf_counter() - t0
        step(1.0, "done")
        return SegmentationOutput(labels, level_warnings + outline_warnings + order_warnings,
                                  {k: round(v, 3) for k, v in timing.items()}, confidence, rib_report,
                                  level_warnings + order_warnings, count_report)

    def to_ct_grid(self, ct: Volume, fine: Volume) -> tuple[Volume, tuple[list[str], list[str]]]:
        """Fine probabilities -> label map on the CT grid, inside the fine box only, and the
        warnings of ``order_and_edge_checks``."""
        fine = crop_to_mask(fine, fine.array[..., 0] < 0.5, margin=2)  # only where the bodies are
        if fine is None:
            empty = ct.with_array(np.zeros(ct.array.shape, np.uint8))
            return empty, order_and_edge_checks(empty)
        lo, hi = index_box(ct, fine.ijk_to_ras, fine.array.shape[:3], margin=0)
        ct_box = subvolume(ct, lo, hi)
        probs = sample(fine, ct_box.ijk_to_ras, ct_box.array.shape, order=1, fill=0.0, antialias=False)
        probs[..., 0] = np.where(probs.sum(-1) == 0, 1.0, probs[..., 0])
        sub_labels = np.argmax(probs, axis=-1).astype(np.uint8)
        labels = np.zeros(ct.array.shape, np.uint8)
        block = labels[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
        masks = trim_beyond_disc({name: largest_component(sub_labels == LABEL_OF[name]) for name in VERTEBRA_NAMES},
                                 ct_box)
        for name in VERTEBRA_NAMES:
            mask = fill_holes(largest_component(masks[name]))
            block[mask & (block == 0)] = LABEL_OF[name]
        out = ct.with_array(labels)
        return out, order_and_edge_checks(out)


def cut_levels(labels: Volume) -> list[str]:
    """The levels the scan's first or last slice cuts with less than MIN_SHARE_IN_VIEW of the other
    level's height in view (heights along the slice axis; the other level wholly in view)."""
    arr, heights, at_edge = labels.array, {}, {}
    step_mm = float(np.linalg.norm(labels.ijk_to_ras[:3, 2]))
    outlined = np.flatnonzero(arr.reshape(len(arr), -1).any(axis=1))  # one pass over the scan, then its slab
    slab = arr[outlined[0] : outlined[-1] + 1] if len(outlined) else arr[:0]
    for name in VERTEBRA_NAMES:
        ks = np.flatnonzero((slab == LABEL_OF[name]).any(axis=(1, 2))) + (outlined[0] if len(outlined) else 0)
        if len(ks):
            heights[name] = (ks[-1] - ks[0] + 1) * step_mm
            at_edge[name] = bool(ks[0] == 0 or ks[-1] == len(arr) - 1)
    if len(heights) < len(VERTEBRA_NAMES):
        return []
    l1, l2 = VERTEBRA_NAMES
    return [name for name, other in ((l1, l2), (l2, l1))
            if at_edge[name] and not at_edge[other] and heights[name] < MIN_SHARE_IN_VIEW * heights[other]]


def outline_offsets(labels: Volume, centres_ras) -> dict[str, float]:
    """How far (mm) each outline's centroid lies from the nearest body centre the vertebra counter
    marked: an outline on one body lies within a few mm of its centre; one that slid across a disc
    onto parts of two bodies lies about half a body from both (bodies 30-40 mm apart at L1-L2)."""
    centres = np.asarray(centres_ras, float).reshape(-1, 3)
    if not len(centres):
        return {}
    return {name: round(float(np.linalg.norm(centres - centroid, axis=1).min()), 1)
            for name, centroid in vertebra_centroids(labels).items()}


def outline_offset_warnings(offsets_mm: dict[str, float]) -> list[str]:
    """A level warning for each outline farther than OUTLINE_OFFSET_MAX_MM from every counted body."""
    return [f"{name}'s outline lies {mm:.0f} mm from the centre of the nearest vertebral body the vertebra "
            f"counter found: it may cover parts of two vertebrae, across a disc; check the {name} segment"
            for name, mm in offsets_mm.items() if mm > OUTLINE_OFFSET_MAX_MM]


def trim_beyond_disc(masks: dict[str, np.ndarray], grid: Volume,
                     margin_mm: float = DISC_MIDPLANE_MARGIN_MM) -> dict[str, np.ndarray]:
    """L1 and L2 without their voxels beyond the L1-L2 disc: a body ends at its endplate, so a voxel
    of L2 lying more than ``margin_mm`` above the mid-plane between the two bodies (perpendicular to
    the line through their centroids), or of L1 below it, is an outline that leaked into the
    neighbouring body. ``grid``: the geometry of the masks."""
    if any(not masks[name].any() for name in VERTEBRA_NAMES):
        return masks
    voxels = {name: np.argwhere(masks[name]) for name in VERTEBRA_NAMES}
    ras = {name: grid.voxel_centers_ras(kji) for name, kji in voxels.items()}
    c1, c2 = ras["L1"].mean(axis=0), ras["L2"].mean(axis=0)
    down = (c2 - c1) / max(float(np.linalg.norm(c2 - c1)), 1e-6)
    out = {}
    for name, sign in (("L1", 1.0), ("L2", -1.0)):  # how far beyond the mid-plane, towards the other body
        beyond = sign * ((ras[name] - (c1 + c2) / 2) @ down) > margin_mm
        mask = masks[name].copy()
        mask[tuple(voxels[name][beyond].T)] = False
        out[name] = mask
    return out


def find_levels(coarse: Volume) -> dict[str, dict]:
    """Each level the coarse stage finds: its region, the region's centroid (RAS) and certainty;
    absent levels are left out.

    Each label's region of most probability (at least MIN_COARSE_VOXELS), except that L2 is
    taken one vertebra below L1 (LEVEL_STEP_MM) when a region of the L2 label lies there: the
    L2 label can cover parts of two vertebrae, e.g. the lower half of L2 and all of L3 as its
    largest region. L1, which the network finds by counting ribs, is not moved.
    """
    labels = np.argmax(coarse.array, axis=-1)
    candidates = {name: regions(labels == LABEL_OF[name], coarse, LABEL_OF[name]) for name in VERTEBRA_NAMES}
    chosen = {name: max(found, key=lambda r: r["mass"]) for name, found in candidates.items() if found}
    if "L1" in chosen:
        below = [r for r in candidates["L2"] if _one_level_apart(chosen["L1"]["centroid_ras"], r["centroid_ras"])]
        if below:
            chosen["L2"] = max(below, key=lambda r: r["mass"])
    if len(chosen) == 1:
        chosen.update(_faint_level(labels, coarse, chosen))
    return {name: {"centroid_ras": r["centroid_ras"], "region": r["region"], "faint": r.get("faint", False),
                   "certainty": level_certainty(coarse.array[..., LABEL_OF[name]], r["region"])}
            for name, r in chosen.items()}


def _faint_level(labels: np.ndarray, coarse: Volume, chosen: dict[str, dict]) -> dict[str, dict]:
    """The missing level from regions smaller than MIN_COARSE_VOXELS: the one of most probability
    that lies one vertebra from the level found (L1 above L2); none when there is no such region.
    A level cut by the scan's first or last slice is marked faintly too (on spine crops that end
    inside L2 the coarse stage marks L2's visible part with 5-19 voxels): taken, it is outlined
    and reported as touching the edge, as a cut level must be, where "not found" would be wrong."""
    (found, region), = chosen.items()
    name = "L2" if found == "L1" else "L1"
    fits = []
    for r in regions(labels == LABEL_OF[name], coarse, LABEL_OF[name], MIN_FAINT_COARSE_VOXELS):
        c = r["centroid_ras"]
        l1, l2 = (c, region["centroid_ras"]) if name == "L1" else (region["centroid_ras"], c)
        if _one_level_apart(l1, l2):
            fits.append(r)
    return {name: {**max(fits, key=lambda r: r["mass"]), "faint": True}} if fits else {}


def regions(mask: np.ndarray, coarse: Volume, label: int, min_voxels: int = MIN_COARSE_VOXELS) -> list[dict]:
    """The connected regions of ``mask`` (at least ``min_voxels``) with the coarse probability mass of
    ``label`` in each and its centroid (RAS mm): the candidates level finding chooses from."""
    out = []
    for region in components(mask, min_voxels):
        out.append({"region": region, "mass": float(coarse.array[..., label][region].sum()),
                    "centroid_ras": coarse.voxel_centers_ras(np.argwhere(region).mean(axis=0))[0]})
    return out


def _one_level_apart(l1_ras: np.ndarray, l2_ras: np.ndarray) -> bool:
    """L2 lies one vertebra below L1: measured along S, as partial regions shift sideways."""
    return bool(LEVEL_STEP_MM[0] <= l1_ras[2] - l2_ras[2] <= LEVEL_STEP_MM[1])


def level_hints(coarse: Volume, levels: dict[str, dict]) -> Volume:
    """The fine stage's hints: each level's probability kept on its chosen region (and one voxel
    around it) only, so a label that also marks a neighbouring vertebra does not mislead it."""
    probs = coarse.array.copy()
    for name in VERTEBRA_NAMES:
        keep = dilate(levels[name]["region"], 1) if name in levels else np.zeros(probs.shape[:3], bool)
        channel = LABEL_OF[name]
        probs[..., 0] += np.where(keep, 0.0, probs[..., channel])
        probs[..., channel] = np.where(keep, probs[..., channel], 0.0)
    return Volume(probs, coarse.ijk_to_ras)


def level_certainty(probability: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """How sure the coarse stage is of one level: mean probability over the level's region,
    and the level's whole probability mass relative to the region's size (near 1: one place)."""
    n = int(region.sum())
    return {"mean_probability": round(float(probability[region].mean()), 3),
            "spread": round(float(probability.sum()) / n, 3)}


def level_warning(name: str, certainty: dict[str, float]) -> str | None:
    p, spread = certainty["mean_probability"], certainty["spread"]
    if p >= LEVEL_CONFIDENCE_MIN and spread <= LEVEL_SPREAD_MAX:
        return None
    why = f"model confidence {p:.2f}" if p < LEVEL_CONFIDENCE_MIN else "the model hesitates between two vertebrae"
    return (f"{name} level uncertain ({why}): check that {'L1 is the first vertebra below the last rib-bearing one' if name == 'L1' else 'L2 lies directly below L1'}, "
            "and correct the segments if not")


def reconcile_count(coarse: Volume, levels: dict, counted: Count) -> tuple[Volume, dict, dict, list[str]]:
    """The levels after comparing them with the counter's readings of L1 (from T1, from the last
    rib pair), the report and the reader's warnings.

    - Both readings agree on a body and L1 lies elsewhere (or was not found): L1 and L2 move to
      the counted body and the one below it, with a warning (three answers were not one).
    - The readings disagree (11 or 13 rib pairs, a lumbar rib): the levels stay, with a warning.
    - One reading only (a scan that starts below T1, or ends at the last rib pair): a level it
      contradicts gets a warning; it moves nothing alone.
    """
    report = counted.summary()
    top, ribs = counted.l1_from_top, counted.l1_from_ribs
    found = counted.index_near(levels["L1"]["centroid_ras"]) if "L1" in levels else None
    report["l1_from_levels"] = found
    check = "check that L1 is the first vertebra below the last rib-bearing one"
    if top is not None and ribs is not None and top != ribs:
        pairs = counted.rib_pairs
        return coarse, levels, report, [
            f"Counting from T1 and reading the last rib pair disagree ({pairs} rib-bearing vertebrae, 12 usual): "
            f"transitional anatomy, or a rib the counter missed; {check}"]
    agreed = top if top is not None and top == ribs else None
    if agreed is not None and found == agreed:
        report["confirmed"] = True
        return coarse, levels, report, []
    if agreed is not None and "L1" not in levels:  # the level finder missed L1: the counted bodies stand in
        bodies = counted.bodies
        found_here = {"L1": bodies[agreed].centroid_ras}
        if agreed + 1 < len(bodies):
            found_here["L2"] = bodies[agreed + 1].centroid_ras
        marked = mark_levels(coarse, found_here)
        report["moved"] = True
        return marked, find_levels(marked), report, [
            f"{' and '.join(found_here)} found by counting the vertebrae from T1 and from the last rib pair only "
            f"(the level finder did not find L1): {check}"]
    if agreed is not None and "L1" in levels:
        bodies = counted.bodies
        step = bodies[agreed].centroid_ras - levels["L1"]["centroid_ras"]
        moves = {"L1": ("L1", step)}
        if agreed + 1 < len(bodies):  # L2 onto the counted body below (from the L1 map when L2 was not found)
            source = "L2" if "L2" in levels else "L1"
            moves["L2"] = (source, bodies[agreed + 1].centroid_ras - levels[source]["centroid_ras"])
        elif "L2" in levels:
            moves["L2"] = ("L2", step)
        moved = move_levels(coarse, moves)
        new_levels = find_levels(moved)
        if "L1" in new_levels:
            n = agreed - found if found is not None else None
            where = (f"{_vertebrae(n)} {'higher' if n > 0 else 'lower'}" if n else
                     f"{float(np.linalg.norm(step)):.0f} mm away, not on a vertebra the counter marked")
            report["moved"] = True
            return moved, new_levels, report, [
                f"L1 and L2 placed by counting the vertebrae from T1 and from the last rib pair (the level finder "
                f"had L1 {where}): {check}"]
    single = top if top is not None else ribs
    if single is not None and found != single and "L1" in levels:
        how = "counting from T1" if top is not None else "the last rib pair"
        n = single - found if found is not None else None
        where = (f"{_vertebrae(n)} {'lower' if n > 0 else 'higher'}" if n else "elsewhere")
        return coarse, levels, report, [f"The vertebra counter puts L1 {where} ({how}): {check}"]
    return coarse, levels, report, []


# A level placed from a counted body: an ellipsoid of about a vertebral body's size around its
# centre (half axes R, A, S in mm), as a hint the fine stage reads like the coarse stage's.
COUNTED_BODY_HALF_AXES_MM = (16.0, 12.0, 9.0)


def mark_levels(coarse: Volume, centres: dict[str, np.ndarray]) -> Volume:
    """Coarse probabilities with each named level replaced by a body-sized ellipsoid at its centre."""
    out = coarse.array.copy()
    kji = np.indices(out.shape[:3]).reshape(3, -1).T
    ras = coarse.voxel_centers_ras(kji).reshape(*out.shape[:3], 3)
    for name, centre in centres.items():
        d = (((ras - np.asarray(centre, float)) / np.asarray(COUNTED_BODY_HALF_AXES_MM)) ** 2).sum(-1)
        out[..., LABEL_OF[name]] = np.where(d <= 1.0, 0.9, 0.0)
    out[..., 0] = np.clip(1.0 - out[..., 1:].sum(-1), 0.0, 1.0)
    return Volume(out, coarse.ijk_to_ras.copy())


def _vertebrae(n: int) -> str:
    return "one vertebra" if abs(n) == 1 else f"{abs(n)} vertebrae"


def rib_check_warnings(report: dict) -> list[str]:
    """The reader's warnings from the rib check's report (``checked_levels``): levels it moved, or
    a move it favoured without making, or levels the ribs do not confirm (``rib_check.confirms``)."""
    check = "check that L1 is the first vertebra below the last rib-bearing one"
    if report.get("shift"):
        n = report["shift"]
        return [f"L1 and L2 moved {_vertebrae(n)} {'down' if n > 0 else 'up'} by the rib check "
                f"(the counting from the top disagreed): {check}"]
    if report.get("leaning"):
        n = report["leaning"]
        return [f"The rib check leans towards L1 {_vertebrae(n)} {'lower' if n > 0 else 'higher'} "
                f"({report['lean_ratio']:g} to 1, too weak to move the levels): {check}"]
    if report.get("confirmed") is False:
        above = report["rib_probability"].get("-1")
        seen = ("the vertebra above L1 is not in the scan" if above is None else
                f"ribs on the vertebra above L1 {above:.2f}, on L1 {report['rib_probability']['0']:.2f}")
        return [f"The ribs do not confirm the levels ({seen}): {check}"]
    return []


def order_and_edge_checks(labels: Volume) -> tuple[list[str], list[str]]:
    """Warnings on the outlines (a level missing, or touching the scan's edge: it may be cut) and
    on the levels (L1 must lie above L2, and L2 directly below it)."""
    warnings, order = [], []
    arr = labels.array
    all_box = mask_box(arr > 0)
    if all_box is None:
        return [f"{name} could not be outlined; check the segmentation" for name in VERTEBRA_NAMES], []
    block = subvolume(labels, all_box[0][::-1], all_box[1][::-1])  # a view: edits reach ``labels``
    centroids, extent_s = {}, {}
    for name in VERTEBRA_NAMES:
        box = mask_box(block.array == LABEL_OF[name])
        if box is None:
            warnings.append(f"{name} could not be outlined; check the segmentation")
            continue
        lo, hi = box[0] + all_box[0], box[1] + all_box[0]
        if np.any(lo == 0) or np.any(hi == np.array(arr.shape)):
            warnings.append(f"{name} touches the edge of the scan: it may be cut, its measures are less reliable")
        ras = block.voxel_centers_ras(np.argwhere(block.array == LABEL_OF[name]))
        centroids[name] = ras.mean(axis=0)
        extent_s[name] = (ras[:, 2].min(), ras[:, 2].max())
    if len(centroids) == len(VERTEBRA_NAMES):
        s1, s2 = centroids["L1"][2], centroids["L2"][2]
        if s1 < s2:  # the networks disagree with anatomy: swap, and say so
            sub_arr = block.array
            l1 = sub_arr == LABEL_OF["L1"]
            sub_arr[sub_arr == LABEL_OF["L2"]] = LABEL_OF["L1"]
            sub_arr[l1] = LABEL_OF["L2"]
            order.append("L1 and L2 came out in the wrong order and were swapped; check the levels")
            extent_s["L1"], extent_s["L2"] = extent_s["L2"], extent_s["L1"]
        gap = extent_s["L1"][0] - extent_s["L2"][1]
        if gap > MAX_L1_L2_GAP_MM:
            order.append(f"L2 does not lie directly below L1 (a gap of {gap:.0f} mm between them): "
                         "check that L2 is the vertebra directly below L1, and correct the segments if not")
    return warnings, order
