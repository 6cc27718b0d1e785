"""Everything that defines the segmentation model, in one place (saved in checkpoints and the card)."""

from __future__ import annotations

from OsteoScreenLib.rib_check import MIN_BACK_MM, MIN_FRONT_MM, MIN_SIDE_MM

PREPROCESSING = {
    # Whole CT -> 5 mm RAS grid cropped to the body: enough to count ribs and find L1/L2.
    "coarse": {"spacing_mm": 5.0, "hu_window": [-1000.0, 1500.0], "pad_multiple": 16},
    # 1 mm box around the L1-L2 midpoint: both bodies with margin for tilt and coarse error.
    "fine": {"spacing_mm": 1.0, "size_mm": [80.0, 80.0, 112.0], "hu_window": [-1000.0, 1500.0], "pad_multiple": 16},
    # Rib check: a box of the coarse input around one vertebral body (x = R, y = A, z = S): the body,
    # its rib heads and the first 60-100 mm of each rib, the neighbouring bodies at top and bottom.
    "rib_check": {"spacing_mm": 5.0, "size_mm": [200.0, 160.0, 60.0]},
    # Vertebra counter: the whole CT at 5 mm in-plane (R, A) and 2.5 mm along S, where the discs
    # between the bodies still show.
    "count": {"spacing_mm": [5.0, 5.0, 2.5], "hu_window": [-1000.0, 1500.0], "pad_multiple": 16},
}

NETWORKS = {
    # MONAI UNet arguments (spatial_dims=3, out_channels=3: background, L1, L2)
    # batch norm: instance statistics would change with how much of the input is padding,
    # and the coarse input's size varies from scan to scan
    "coarse": {"in_channels": 1, "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1, "norm": "batch"},
    "fine": {"in_channels": 3, "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1},
    # the vertebra counter (out_channels=4: background, rib-bearing body, body without ribs, disc;
    # registry.COUNT_CLASSES)
    "count": {"in_channels": 1, "out_channels": 4, "channels": [16, 32, 64, 128], "strides": [2, 2, 2],
              "num_res_units": 1, "norm": "batch"},
}
# Rib check (training/segmentation/rib_check.py): a small 3D CNN, one logit (the vertebra bears ribs).
RIB_CHECK_NETWORK = {"channels": [8, 16, 32], "dropout": 0.2}
# Vertebrae whose boxes it learns from, and how far the box centre jitters (a coarse region's
# centroid is a few mm off the body centre).
RIB_CHECK_LEVELS = ("T9", "T10", "T11", "T12", "T13", "L1", "L2", "L3")
RIB_CHECK_JITTER_MM = 8.0
# Rib-check augmentation (rib_check.py --augment): the box turned like a tilted spine, cut at the
# sides like a spine-cropped reconstruction (down to the rib heads and necks: the run-time check
# asks for at least MIN_SIDE_MM each side, MIN_FRONT_MM in front and MIN_BACK_MM behind the
# vertebra's centre), and degraded like another scanner's image.
RIB_CHECK_AUGMENT = {
    "p_pose": 0.7, "rotate_deg": (20.0, 8.0, 8.0),
    "p_side_crop": 0.5, "side_half_mm": (MIN_SIDE_MM, 100.0), "side_offset_mm": 8.0,
    "p_ap_crop": 0.4, "front_mm": (MIN_FRONT_MM - 5.0, 80.0), "back_mm": (MIN_BACK_MM, 80.0),
    "blur_sd_voxels": (0.0, 0.6), "p_sharpen": 0.5, "intensity_scale": (0.85, 1.15), "intensity_shift": 0.06,
    "texture_sd": 0.03, "noise_sd": 0.03,
}

# Coarse-stage augmentation (augment.py, train --augment): poses, fields of view and image
# quality of real scans that the phantoms vary too little. Angles about R (sagittal tilt), A, S.
COARSE_AUGMENT = {
    "spacing_mm": PREPROCESSING["coarse"]["spacing_mm"],
    "p_pose": 0.7, "rotate_deg": (25.0, 10.0, 10.0), "scale": (0.9, 1.1),
    "p_short_scan": 0.4, "above_l1_mm": (0.0, 100.0), "p_cut_l2": 0.4,
    "p_spine_crop": 0.25, "crop_width_mm": (90.0, 220.0), "crop_offset_mm": 25.0,
    "blur_sd_voxels": (0.0, 1.0), "p_sharpen": 0.5, "intensity_scale": (0.85, 1.15), "intensity_shift": 0.06,
    "texture_sd": 0.03, "noise_sd": 0.03,
}
# Domain randomisation of the coarse stage (augment.py; from generator 2.0 on, with COARSE_AUGMENT):
# tissue values remapped through moved knots, a smooth bias field, bright blobs that are not bone.
COARSE_RANDOMISATION = {
    **COARSE_AUGMENT,
    "cut_l2_max_fraction": 1.25,  # a short scan may end anywhere from L2's middle to the L1-L2 disc
    "p_remap": 0.8,
    "remap_knots_hu": (-1000.0, -850.0, -100.0, 0.0, 60.0, 250.0, 700.0, 1500.0),
    "remap_sd_hu": (0.0, 60.0, 30.0, 20.0, 25.0, 60.0, 120.0, 150.0),
    "p_bias": 0.5, "bias_hu": 50.0,
    "p_blobs": 0.6, "blob_count": (1, 8), "blob_radius_mm": (3.0, 25.0), "blob_hu": (150.0, 1500.0),
}

# Fine-stage augmentation (augment.py, train --augment): on real scans the coarse levels can lie
# up to about half a vertebra (15 mm) off; the hints are moved that far (S, A, R) so the fine stage
# outlines the whole body the hint points at, not the part of two bodies under it.
FINE_AUGMENT = {"spacing_mm": PREPROCESSING["fine"]["spacing_mm"], "p_hint_shift": 0.5, "hint_shift_mm": (15.0, 6.0, 6.0)}
# The fine stage with --randomise: the CT channel's grey values remapped and a bias field, as for the
# coarse stage (no bright blobs: the box holds little beside the vertebrae, and a blob next to one would
# teach the outline to stop at bright bone); and in half the samples one hint stretched up or down the
# spine by up to 12 mm, past its vertebra's endplate (on the real chest CT lidc-idri-0001 the coarse L2
# reached 7.5-10 mm into L3 and the fine stage followed it; a choice listed in the README).
FINE_RANDOMISATION = {**FINE_AUGMENT, "p_hint_stretch": 0.5, "hint_stretch_mm": 12.0,
                      **{k: COARSE_RANDOMISATION[k] for k in
                         ("p_remap", "remap_knots_hu", "remap_sd_hu", "p_bias", "bias_hu")}}

# Deterministic phantom splits mirroring the paper (548 train / 100 tune / 400 test).
SPLITS = {"train": (100000, 548), "tune": (200000, 100), "test": (300000, 400)}  # first seed, count

# Fine-stage training: the box centre jitters like a coarse error, hints are perturbed labels.
CENTER_JITTER_MM = 8.0
HINT_SHIFT_MM = 4.0

# Each stage learns from the phantoms that look like its run-time input: the coarse stage
# from whole chest CTs on a coarse grid and spine-cropped scans, the fine stage from 1 mm
# boxes cut out of full-size chest and spine scans (with the coarse stage's own hints).
# The fine stage starts from weights pre-trained on the faster `training` preset (1.5 mm).
PRESETS = {"coarse": "chest-coarse,spine", "fine": "chest,spine", "fine-pretrain": "training", "count": "chest-count,spine"}

# Vertebra-counter augmentation (augment.py, train --stage count --augment): the coarse stage's
# randomisation, and scans that start anywhere from the neck to mid-thorax and end anywhere from
# mid-T12 down (``random_scan_range``): a body is marked when its core is in view.
COUNT_RANDOMISATION = {
    **COARSE_RANDOMISATION,
    "p_short_scan": 0.0, "p_cut_l2": 0.0,  # cuts made by L1/L2 labels mean nothing to the counter
    "p_cut_top": 0.4, "p_cut_bottom": 0.4,
}

ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-3  # max |softmax(ONNX) - softmax(PyTorch)| accepted at export
