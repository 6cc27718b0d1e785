"""The one source of truth for names, label values, codes, colours and thresholds.

Torch-free and import-free on purpose: the CLI, the MRML logic, the phantom
generator, training and the Slicer module all read from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Vertebral bodies that OsteoScreen segments (label values of our label maps) ---


@dataclass(frozen=True)
class VertebraSpec:
    name: str  # segment name in Slicer and key in result.json
    label: int  # value in OsteoScreen label maps (0 = background)
    sct_code: str  # SNOMED CT code of the vertebra
    sct_meaning: str
    color_rgb: tuple[float, float, float]  # 0..1, chosen to contrast in slice views


VERTEBRAE: tuple[VertebraSpec, ...] = (
    VertebraSpec("L1", 1, "66794005", "L1 vertebra", (0.902, 0.706, 0.235)),
    VertebraSpec("L2", 2, "14293000", "L2 vertebra", (0.314, 0.667, 0.902)),
)
VERTEBRA_NAMES: tuple[str, ...] = tuple(v.name for v in VERTEBRAE)
LABEL_OF: dict[str, int] = {v.name: v.label for v in VERTEBRAE}
VERTEBRA_BY_NAME: dict[str, VertebraSpec] = {v.name: v for v in VERTEBRAE}

# Slicer terminology: category of every segment, and the context names that
# Slicer's terminology module uses for its built-in lists.
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
CATEGORY_CODE = ("SCT", "123037004", "Anatomical Structure")


def terminology_entry(name: str) -> str:
    """Slicer's serialized terminology string of one vertebra (as stored in .seg.nrrd)."""
    spec = VERTEBRA_BY_NAME[name]
    category = "^".join(CATEGORY_CODE)
    type_ = f"SCT^{spec.sct_code}^{spec.sct_meaning}"
    return f"{TERMINOLOGY_CONTEXT}~{category}~{type_}~^^~{ANATOMIC_CONTEXT}~^^~^^"


# --- Whole-vertebra level ids (VerSe convention), used by phantoms and imports ---

VERSE_LEVEL_IDS: dict[str, int] = {
    **{f"C{i}": i for i in range(1, 8)},
    **{f"T{i}": 7 + i for i in range(1, 13)},  # T1 = 8 ... T12 = 19
    **{f"L{i}": 19 + i for i in range(1, 6)},  # L1 = 20 ... L5 = 24
    "T13": 28,
    "L6": 25,
}
VERSE_LEVEL_NAMES: dict[int, str] = {v: k for k, v in VERSE_LEVEL_IDS.items()}

# Classes of the vertebra counter (vertebra_count.py): every vertebral body in view, split by
# whether the vertebra bears a rib pair (T1 down to the last thoracic vertebra), and the discs
# between them (with the endplates next to them), where one body ends and the next begins.
COUNT_CLASSES: dict[str, int] = {"background": 0, "rib-bearing body": 1, "body without ribs": 2, "disc": 3}
# Rib-bearing (thoracic) vertebrae in the usual spine: L1 is the 13th body counted from T1.
THORACIC_COUNT = 12

# Label mappings of other tools: segment name -> label value in their label maps.
LABEL_MAPPINGS: dict[str, dict[str, int]] = {
    "osteoscreen": dict(LABEL_OF),
    "verse": {"L1": 20, "L2": 21},
    "totalsegmentator": {"L1": 31, "L2": 30},  # TotalSegmentator v2, task "total"
}

# --- QCT classes (ACR; Chinese expert consensus), on the mean BMD of L1 and L2 ---

CLASSES: tuple[str, ...] = ("normal", "osteopenia", "osteoporosis")
NORMAL_MIN_BMD_MG_CM3 = 120.0  # normal: mean BMD > 120
OSTEOPOROSIS_MAX_BMD_MG_CM3 = 80.0  # osteoporosis: mean BMD < 80; 80..120 osteopenia


def qct_class(mean_bmd_mg_cm3: float) -> str:
    """QCT class of the mean trabecular BMD of L1 and L2 in mg/cm^3."""
    if mean_bmd_mg_cm3 > NORMAL_MIN_BMD_MG_CM3:
        return "normal"
    if mean_bmd_mg_cm3 < OSTEOPOROSIS_MAX_BMD_MG_CM3:
        return "osteoporosis"
    return "osteopenia"


# --- The two classifiers (the paper's models 1 and 2); folder: under Resources/Models ---

MODELS: dict[str, dict] = {
    "l1l2": {"folder": "classifier-l1l2", "vertebrae": ("L1", "L2"), "title": "Model 1: L1 + L2 fusion",
             "explanation": "uses both vertebral bodies; the paper's best model",
             "help": "Uses both vertebral bodies (the paper's model 1); the default when the scan covers L1 and L2."},
    "l1": {"folder": "classifier-l1", "vertebrae": ("L1",), "title": "Model 2: L1 only",
           "explanation": "needs only L1: for shorter scans with less radiation",
           "help": "Uses L1 alone (the paper's model 2), for lower-radiation chest scans that stop above L2."},
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
DEFAULT_MODEL = "l1l2"


# --- Vertebral fracture: Genant semiquantitative grades on the heights of each body (fracture.py) ---
# Genant HK, Wu CY, van Kuijk C, Nevitt MC. Vertebral fracture assessment using a semiquantitative
# technique. J Bone Miner Res 1993;8:1137-48. Grade 0: under 20 % height loss; 1 (mild): 20-25 %;
# 2 (moderate): 25-40 %; 3 (severe): over 40 %.
FRACTURE_GRADE_MIN_LOSS: tuple[float, ...] = (0.20, 0.25, 0.40)  # the least loss of grades 1, 2, 3
FRACTURE_GRADE_NAMES: tuple[str, ...] = ("normal", "mild", "moderate", "severe")
FRACTURE_TYPES: tuple[str, ...] = ("wedge", "biconcave", "crush")
# Where the heights are taken: bands across the body's anterior-posterior depth (0 = anterior
# surface, 1 = posterior), as morphometry places its six points inside the corners, not on them.
FRACTURE_HEIGHT_BANDS: dict[str, tuple[float, float]] = {
    "anterior": (0.10, 0.25), "middle": (0.40, 0.60), "posterior": (0.75, 0.90)}
# ... and in a mid-sagittal slab this fraction of the body's width: the central endplate of a
# biconcave fracture, not the intact rim beside it (a lateral radiograph sees the middle too).
FRACTURE_SLAB_WIDTH_FRACTION = 0.30
# An empty stretch this long between body and arch along the anterior-posterior axis is the
# spinal canal: a whole-vertebra mask (VerSe, TotalSegmentator) is cut there to its body.
FRACTURE_CANAL_GAP_MM = 2.0
FRACTURE_SAMPLE_MM = 0.5  # the body-aligned grid the heights are read on (nearest voxel)
FRACTURE_MIN_BODY_ML = 3.0  # smaller: not a vertebral body (an L1 body is about 20-40 ml)
# An outline whose anterior height exceeds its posterior height by more than this is not a vertebral
# body's shape at L1-L2 (there the anterior height is about 0.85-1.0 of the posterior; the phantoms'
# crushed bodies reach 1.3): it has leaked into a disc or a neighbour, and is not graded (a wrong
# "severe fracture" would be read first).
FRACTURE_MAX_ANTERIOR_OVER_POSTERIOR = 1.5


# --- Tube voltage: the slope of HU against BMD depends on it (single-energy QCT) ---

TUBE_VOLTAGES_KVP: tuple[int, ...] = (80, 100, 120, 140)  # what the classifiers know; others are "unknown"
TUBE_VOLTAGE_SNAP_KVP = 5  # a header value this close to a known voltage counts as it (135 -> 140; 110 is neither)


def tube_voltage(kvp) -> int | None:
    """The known tube voltage a recorded kVp stands for, or None (missing or unlike any known one)."""
    try:
        value = float(kvp)
    except (TypeError, ValueError):
        return None
    best = min(TUBE_VOLTAGES_KVP, key=lambda v: abs(v - value))
    return best if abs(best - value) <= TUBE_VOLTAGE_SNAP_KVP else None


# --- Contrast phase: iodine in the marrow raises its HU (about 8 HU arterial, 18 HU portal venous at 120 kVp) ---

CONTRAST_PHASES: tuple[str, ...] = ("none", "arterial", "portal")  # "portal": portal venous
CONTRAST_PHASE_TITLES: dict[str, str] = {"none": "None (unenhanced)", "arterial": "Arterial", "portal": "Portal venous"}


def contrast_phase(value) -> str | None:
    """A known contrast phase from a user's word, or None (unknown)."""
    v = str(value or "").strip().lower().replace(" ", "").replace("-", "").replace("_", "")
    aliases = {"none": "none", "unenhanced": "none", "noncontrast": "none", "native": "none", "arterial": "arterial",
               "portal": "portal", "portalvenous": "portal", "venous": "portal"}
    return aliases.get(v)


# --- Plausibility limits for CT input ---

HU_AIR = -1024.0  # air outside the patient; padding and sub-air noise are read as this (padding.py)
# Below: not Hounsfield units (e.g. raw detector values). Down to it: air, or the padding that scanners
# write outside the reconstruction circle (-2000, -2048, -3024 HU are common; padding.py).
HU_MIN_PLAUSIBLE = -3072.0
HU_MAX_PLAUSIBLE = 32767.0


# --- The oldest Slicer the module supports: 5.10 is the first with Python 3.12 (OsteoScreenLib needs 3.10+).
# CMakeLists.txt and the README state the same (Testing/Python/slicer_module/test_slicer_module.py checks it).

MINIMUM_SLICER_VERSION: tuple[int, int] = (5, 10)


# --- MRML node attributes that OsteoScreen sets (read back by the module, the logic and the worker) ---

SOURCE_ATTRIBUTE = "OsteoScreen.Source"  # on a segmentation: where its segments come from (model version, file)
WARNINGS_ATTRIBUTE = "OsteoScreen.Warnings"  # on a segmentation: the model's warnings, JSON list
RESULT_TABLE_ATTRIBUTE = "OsteoScreen.ResultTable"  # "1" on a table OsteoScreen made (and may refill)
SOURCE_PATH_ATTRIBUTE = "OsteoScreen.SourcePath"  # on a CT: the file or folder it was read from
# Slicer's own, on a volume its DICOM module loaded: the SOP Instance UIDs of its slices, space-separated
SLICER_DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
SOURCE_SHA256_ATTRIBUTE = "OsteoScreen.SourceSHA256"
KVP_ATTRIBUTE = "OsteoScreen.TubeVoltageKVP"  # on a CT: as the header or the user gives it
KVP_SOURCE_ATTRIBUTE = "OsteoScreen.TubeVoltageSource"
CONTRAST_ATTRIBUTE = "OsteoScreen.ContrastPhase"  # on a CT: as the reader gives it (DICOM does not record it)


# --- Screening an archive: which series of a study `screen` reads (study.py, docs/archive.md) ---
# A study's series are filtered (each rule's reason is recorded for a skipped series), then the
# eligible ones ranked: covers the upper abdomen, original acquisition, soft-tissue kernel, thinnest slices.

SERIES_MODALITY = "CT"
# SOP classes that are never an image series to read: dose reports and other structured reports,
# secondary captures (dose screens, key images), presentation states, raw data.
SERIES_NON_IMAGE_SOP_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report (dose report)",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture (dose screen or key images)",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT (multi-frame, not read yet: export classic CT images)",
}
SERIES_LOCALIZER_IMAGE_TYPES: tuple[str, ...] = ("LOCALIZER", "SCOUT", "TOPOGRAM")
SERIES_MIN_SLICES = 20  # fewer: a scout, a single-slice series or a few key images
SERIES_AXIAL_MIN_COSINE = 0.9  # slice normal within ~25 degrees of the body axis (as dicom_io)
SERIES_MIN_SPACING_MM = 0.5  # thinner: rare research reconstructions, slow for nothing
SERIES_MAX_SPACING_MM = 5.0  # thicker: too coarse for the vertebral bodies' heights and ROI
# Z extent that reaches from the chest down past L2 (the upper abdomen); a series shorter than it
# is still read when no series of the study is longer (the longest is taken).
SERIES_MIN_EXTENT_MM = 200.0
SERIES_PREFERRED_IMAGE_TYPE: tuple[str, ...] = ("ORIGINAL", "PRIMARY")
# Reconstruction kernels (ConvolutionKernel, else hints in SeriesDescription), upper case, matched
# as substrings. Soft tissue / standard first; lung and bone (sharp) kernels raise noise and the HU
# of trabecular bone. Siemens kernels "B<nn>", "Br<nn>", "I<nn>f", "Qr<nn>" are classed by their
# number: below SERIES_SHARP_KERNEL_NUMBER soft, from it sharp.
SERIES_SOFT_KERNEL_HINTS: tuple[str, ...] = ("STANDARD", "STND", "SOFT", "BODY", "ABDOMEN", "MEDIASTIN", "SMOOTH",
                                             "FC08", "FC17", "FC18")
SERIES_SHARP_KERNEL_HINTS: tuple[str, ...] = ("LUNG", "BONE", "SHARP", "DETAIL", "EDGE", "FC51", "FC52", "FC30")
SERIES_SHARP_KERNEL_NUMBER = 50
KERNEL_RANK: dict[str, int] = {"soft": 0, "unknown": 1, "sharp": 2}
