"""What the classifiers see, and the opportunistic-CT density measure, from any segmentation.

For each vertebral body: its central axial image (mid-height, perpendicular to the
body's own axis, a fixed physical field of view), masked by the segment; and the
mean HU of an elliptical trabecular ROI centred in the body, away from the cortex
(the measure of Pickhardt et al. and Comp2Comp). Pure numpy on a label map with
its CT: works the same for the model's segments and for a reader's corrections.

How the images and the ROI are made (:class:`Preprocessing`) is part of a classifier: training
writes it into the model card, and the run time reads it back from the card
(:meth:`Preprocessing.from_card`), as the segmenter reads its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import OsteoScreenError
from .registry import CONTRAST_PHASES, LABEL_OF, TUBE_VOLTAGES_KVP
from .resample import crop_to_grid, mask_box, sample, subvolume
from .volume import Volume



@dataclass(frozen=True)
class Preprocessing:
    """How a classifier's inputs are made: the ``preprocessing`` section of its model card.

    The defaults are what the training recipe uses and writes into the cards it exports.
    """

    image_size_px: int = 128
    field_of_view_mm: float = 72.0  # covers the widest lumbar body (~55 mm) with tilt margin
    slab_offsets_mm: tuple[float, ...] = (-1.0, 0.0, 1.0)  # 3 planes averaged: a 3 mm central slab, less noise
    hu_window: tuple[float, float] = (-200.0, 1200.0)
    roi_cortex_margin_mm: float = 3.0  # ROI stays this far inside the segment (cortical shell + partial volume)
    roi_scale: float = 0.7  # ellipse semi-axes relative to the body's equivalent ellipse

    @property
    def step_mm(self) -> float:
        return self.field_of_view_mm / self.image_size_px

    def to_card(self) -> dict:
        """The card's ``preprocessing`` section (``channels``: the two image channels, for people)."""
        return {"image_size_px": self.image_size_px, "field_of_view_mm": self.field_of_view_mm,
                "slab_offsets_mm": list(self.slab_offsets_mm), "hu_window": list(self.hu_window),
                "channels": list(IMAGE_CHANNELS),
                "roi": {"cortex_margin_mm": self.roi_cortex_margin_mm, "scale": self.roi_scale}}

    @classmethod
    def from_card(cls, card: dict) -> "Preprocessing":
        """The preprocessing a model card describes; a card without a usable one is refused."""
        name = card.get("name", "classifier")
        try:
            pre = card["preprocessing"]
            out = cls(image_size_px=_positive(pre["image_size_px"], int), field_of_view_mm=_positive(pre["field_of_view_mm"]),
                      slab_offsets_mm=tuple(float(v) for v in pre["slab_offsets_mm"]),
                      hu_window=tuple(float(v) for v in pre["hu_window"]),
                      roi_cortex_margin_mm=_positive(pre["roi"]["cortex_margin_mm"]), roi_scale=_positive(pre["roi"]["scale"]))
            if list(pre.get("channels", IMAGE_CHANNELS)) != list(IMAGE_CHANNELS):
                raise ValueError(f"channels {pre.get('channels')}")
            if len(out.hu_window) != 2 or out.hu_window[0] >= out.hu_window[1] or not out.slab_offsets_mm:
                raise ValueError("hu_window or slab_offsets_mm")
        except (KeyError, TypeError, ValueError) as exc:
            raise OsteoScreenError(f"model card of {name}: its preprocessing is missing or invalid ({exc}); "
                                   "reinstall OsteoScreen") from None
        return out


IMAGE_CHANNELS = ("body only (0 outside the segment)", "unmasked plane (reference tissues)")  # features.network_image


def _positive(value, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{value!r} is not a positive number")
    return kind(value)


DEFAULT_PREPROCESSING = Preprocessing()
MIN_BODY_VOLUME_ML = 3.0
MAX_BODY_VOLUME_ML = 150.0
# A vertebral body has a bright cortical shell even when its trabecular bone is fatty
# (severe osteoporosis reaches about 0 HU); a soft-tissue blob has none.
MIN_BODY_P95_HU = 150.0
MAX_AXIS_TILT_DEG = 50.0  # a body axis further from the scanner's S axis than this is not trusted


@dataclass
class BodyFeatures:
    name: str
    image_hu: np.ndarray  # (IMAGE_SIZE_PX, IMAGE_SIZE_PX) HU on the central plane (slab mean)
    mask: np.ndarray  # same shape, bool: inside the segment
    roi: np.ndarray  # same shape, bool: trabecular ROI
    roi_hu: float
    roi_area_mm2: float
    volume_ml: float
    centroid_ras: np.ndarray
    axis_ras: np.ndarray  # unit vector of the body's craniocaudal axis (towards superior)
    preprocessing: Preprocessing = field(default=DEFAULT_PREPROCESSING)  # how the image and ROI were made

    def network_image(self) -> np.ndarray:
        return network_image(self.image_hu, self.mask, self.preprocessing)


def network_image(image_hu: np.ndarray, mask: np.ndarray, pre: Preprocessing = DEFAULT_PREPROCESSING) -> np.ndarray:
    """The classifiers' input for one body, (2, H, W) in [-1, 1].

    Channel 0: the body alone (0 outside the segment), as in the paper. Channel 1:
    the same plane unmasked, so the network also sees muscle, fat and vessels next
    to the spine: the reference tissues of internal (phantomless) QCT calibration,
    which tell scanners, tube voltages and contrast phases apart.
    """
    lo, hi = pre.hu_window
    x = ((np.clip(image_hu, lo, hi) - lo) / (hi - lo) * 2 - 1).astype(np.float32)
    return np.stack([np.where(mask, x, 0.0).astype(np.float32), x])


def scan_vector(kvp: int | None, roi_hu, contrast: str | None = None) -> np.ndarray:
    """The classifiers' second input, float32, of scan_vector_size(V) for V bodies.

    The tube voltage one-hot (last entry: unknown, e.g. a NIfTI file), each body's ROI HU / 100,
    their products, then the contrast phase one-hot (last entry: unknown). A linear layer on it
    holds one HU-to-BMD line per voltage, the calibration of single-energy QCT, shifted by the
    iodine in the marrow; the images add what a mean over the ROI misses (marrow texture, the
    reference tissues).
    """
    onehot = np.zeros(len(TUBE_VOLTAGES_KVP) + 1, np.float32)
    onehot[TUBE_VOLTAGES_KVP.index(kvp) if kvp in TUBE_VOLTAGES_KVP else -1] = 1.0
    phase = np.zeros(len(CONTRAST_PHASES) + 1, np.float32)
    phase[CONTRAST_PHASES.index(contrast) if contrast in CONTRAST_PHASES else -1] = 1.0
    hu = np.asarray(roi_hu, np.float32) / 100.0
    return np.concatenate([onehot, hu, np.outer(onehot, hu).ravel(), phase]).astype(np.float32)


def scan_vector_size(n_vertebrae: int) -> int:
    return (len(TUBE_VOLTAGES_KVP) + 1) * (1 + n_vertebrae) + n_vertebrae + len(CONTRAST_PHASES) + 1


def body_axis(world_points: np.ndarray) -> np.ndarray:
    """Craniocaudal axis of a body: the principal axis most aligned with superior."""
    centred = world_points - world_points.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    best = vecs[:, int(np.argmax(np.abs(vecs[2])))]
    best = best if best[2] > 0 else -best
    if np.degrees(np.arccos(np.clip(best[2], -1, 1))) > MAX_AXIS_TILT_DEG:
        return np.array([0.0, 0.0, 1.0])
    return best / np.linalg.norm(best)


def plane_grid(center: np.ndarray, axis: np.ndarray, offset_mm: float,
               pre: Preprocessing = DEFAULT_PREPROCESSING) -> np.ndarray:
    """IJK-to-RAS of a 1-slice grid: i along the patient's left-right, j anterior-posterior."""
    u = np.array([1.0, 0.0, 0.0]) - axis * axis[0]
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)  # with axis = S and u = R this is A
    step = pre.step_mm
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = u * step, v * step, axis
    half = (pre.image_size_px - 1) / 2 * step
    m[:3, 3] = center + axis * offset_mm - u * half - v * half
    return m


def erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """2D binary erosion with a 3x3 cross, repeated (pure numpy)."""
    m = mask.copy()
    for _ in range(iterations):
        p = np.pad(m, 1, constant_values=False)
        m = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m


def elliptical_roi(mask: np.ndarray, pre: Preprocessing = DEFAULT_PREPROCESSING) -> np.ndarray:
    """An ellipse centred in the body, inside the segment minus the cortical margin."""
    inner = erode(mask, int(round(pre.roi_cortex_margin_mm / pre.step_mm)))
    if inner.sum() < 10:
        return inner
    pts = np.argwhere(inner).astype(float)
    c = pts.mean(axis=0)
    cov = np.cov((pts - c).T)
    vals, vecs = np.linalg.eigh(cov)
    semi = pre.roi_scale * 2 * np.sqrt(np.maximum(vals, 1e-6))  # equivalent-ellipse semi-axes
    jj, ii = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d = np.stack([jj - c[0], ii - c[1]], -1) @ vecs
    return ((d[..., 0] / semi[0]) ** 2 + (d[..., 1] / semi[1]) ** 2 <= 1) & inner


def body_features(ct: Volume, labels: Volume, name: str, pre: Preprocessing = DEFAULT_PREPROCESSING) -> BodyFeatures:
    """Central image and trabecular ROI of one vertebral body, made as ``pre`` says (a classifier's
    model card); errors for implausible segments."""
    box = mask_box(labels.array == LABEL_OF[name], margin=1)  # the body's box: small arrays below
    if box is None:
        raise OsteoScreenError(f"the {name} segment is empty; segment {name} or correct the segmentation")
    ct_box = subvolume(ct, box[0][::-1], box[1][::-1])  # labels are on the CT grid
    labels = subvolume(labels, box[0][::-1], box[1][::-1])
    mask3d = labels.array == LABEL_OF[name]
    kji = np.argwhere(mask3d)
    voxel_ml = abs(np.linalg.det(labels.ijk_to_ras[:3, :3])) / 1000.0
    volume_ml = len(kji) * voxel_ml
    if volume_ml < MIN_BODY_VOLUME_ML:
        raise OsteoScreenError(
            f"the {name} segment is too small ({volume_ml:.1f} ml; a vertebral body is 15-60 ml); correct it"
        )
    if volume_ml > MAX_BODY_VOLUME_ML:
        raise OsteoScreenError(f"the {name} segment is too large ({volume_ml:.0f} ml) for one vertebral body; correct it")
    p95_hu = float(np.percentile(ct_box.array[mask3d], 95))
    if p95_hu < MIN_BODY_P95_HU:
        raise OsteoScreenError(
            f"the {name} segment is mostly soft tissue (95th percentile {p95_hu:.0f} HU, no cortical bone); "
            "correct the segmentation"
        )
    world = labels.voxel_centers_ras(kji)
    center = world.mean(axis=0)
    axis = body_axis(world)
    images, masks = [], []
    float_mask = labels.with_array(mask3d.astype(np.float32))
    for offset in pre.slab_offsets_mm:
        grid = plane_grid(center, axis, offset, pre)
        shape = (1, pre.image_size_px, pre.image_size_px)
        images.append(sample(crop_to_grid(ct, grid, shape), grid, shape, order=1, fill=-1000.0, antialias=False)[0])
        masks.append(sample(crop_to_grid(float_mask, grid, shape), grid, shape, order=1, fill=0.0, antialias=False)[0])
    image = np.mean(images, axis=0)
    mask = masks[len(masks) // 2] >= 0.5  # the central plane
    roi = elliptical_roi(mask, pre)
    step = pre.step_mm
    if roi.sum() < 10:
        raise OsteoScreenError(f"the {name} segment is too thin on its central slice for a trabecular ROI; correct it")
    return BodyFeatures(
        name=name, image_hu=image.astype(np.float32), mask=mask, roi=roi,
        roi_hu=float(image[roi].mean()), roi_area_mm2=float(roi.sum() * step * step),
        volume_ml=float(volume_ml), centroid_ras=center, axis_ras=axis, preprocessing=pre,
    )
