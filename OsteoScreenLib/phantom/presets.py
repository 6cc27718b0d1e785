"""Named scan set-ups of the phantom generator: what field of view and grid each one makes."""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "chest": {
        "description": "Full-size chest CT: 512x512, in-plane 0.6-0.98 mm, slices 0.625-5 mm; "
        "from the thoracic inlet or upper thorax (C6-T6) down to between the lower half of L2 and L4.",
        "matrix": 512,
        "pixel_mm": (0.6, 0.98),
        "top_levels": {"C6": 0.2, "C7": 0.35, "T1": 0.25, "T2": 0.08, "T3": 0.04, "T4": 0.03, "T5": 0.03, "T6": 0.02},
        "dfov_margin_mm": (15.0, 110.0),
        "bottom": ("L2", 0.5, "L4", 1.0),
        "field_of_view": "chest",  # the presets made from this one keep it: a whole chest, its grid sized to the body
    },
    "spine": {
        "description": "Spine-cropped field of view like the VerSe cases: T9-T11 down to L2-L4, "
        "about 90-160 mm wide around the spine; axial grid or thick sagittal-slab voxels.",
        "crop_width_mm": (90.0, 160.0),
        "pixel_mm": (0.6, 1.0),
        "top_levels": {"T9": 0.3, "T10": 0.4, "T11": 0.3},
        "bottom": ("L2", 0.5, "L4", 1.0),
    },
    "training": {
        "description": "The grid segmentation training uses: isotropic 1.5 mm voxels, 160x160 in-plane "
        "(240 mm around the spine, random offset), from T8-T11 down to L3-L5, with the blur "
        "and noise of a clinical scan resampled to that grid.",
        "matrix": 160,
        "voxel_mm": 1.5,
        "top_levels": {"T8": 0.25, "T9": 0.25, "T10": 0.25, "T11": 0.25},
        "bottom": ("L3", 0.0, "L5", 1.0),
    },
}

# The coarse level-finding stage sees a whole chest CT at 5 mm: render the same chest
# cases directly on a 4x coarser in-plane grid with 5 mm slices (about 16x faster).
PRESETS["chest-coarse"] = {
    **PRESETS["chest"],
    "description": "The chest preset on a coarse grid for training level finding: 128x128 "
    "(2.4-3.9 mm pixels), 5 mm slices; same seeds, same anatomy as `chest`.",
    "matrix": 128,
    "pixel_mm": tuple(4 * p for p in PRESETS["chest"]["pixel_mm"]),
    "slice_mm": 5.0,
}

# Training the vertebra counter: the chest-coarse cases with 2.5 mm slices, so that the discs
# between the bodies (4-12 mm) show; at 5 mm slices they blur into the bodies and no count is read.
PRESETS["chest-count"] = {
    **PRESETS["chest-coarse"],
    "description": "The chest-coarse cases with 2.5 mm slices (the discs between the bodies visible): for "
    "training the vertebra counter; same seeds, same anatomy as `chest`.",
    "slice_mm": 2.5,
}

# Training the rib check only: the chest-coarse cases with ribs taken from the lowest rib-bearing
# vertebrae or given to L1 (``parameters.sample_rib_swap``). In every other phantom a vertebra's
# shape (thoracic or lumbar) tells whether it bears ribs, and a network can learn the shape
# instead of the ribs; real T11 and T12 often look lumbar. Not anatomy: a counterfactual that
# makes the ribs themselves the only cue.
PRESETS["chest-coarse-ribswap"] = {
    **PRESETS["chest-coarse"],
    "description": "The chest-coarse cases with the ribs of the lowest one or two rib-bearing vertebrae "
    "removed, or a full (thin, steep) rib pair given to L1: for training the rib check only.",
    "rib_swap": True,
}

# Training the fine segmentation stage and the classifier only needs the region around L1-L2
# of a chest CT: render the same chest cases on a box of the chest grid (a sub-lattice of it:
# same spacing, voxel centres on chest voxel centres), about 10-20x faster than the whole scan.
PRESETS["chest-box"] = {
    **PRESETS["chest"],
    "description": "The chest preset rendered only on a box of its grid around L1-L2: 176x176 mm in-plane, "
    "75 mm above to 75 mm below the L1-L2 midpoint (widened to hold both bodies, clipped to the chest "
    "field of view), centre jittered by up to 15 mm; same seeds, anatomy, scanner, pose and voxel "
    "centres as `chest`, labels equal to the chest labels cropped to the box; noise and streaks are "
    "other realisations with the same statistics.",
    "box_mm": (176.0, 176.0),  # in-plane size (i, j)
    "box_z_mm": (75.0, 75.0),  # above and below the L1-L2 midpoint: holds the fine stage's 112 mm box with its jitter
    "box_jitter_mm": 15.0,  # uniform, each axis, from its own random stream (the chest stream is unchanged)
    "box_body_margin_mm": 5.0,  # the box always holds the L1 and L2 bodies with this margin (where the FOV does)
    "parent": "chest",
}
