"""What a CT can be: its grid checked where a volume enters, before any work.

A header that says 50 mm or 0.01 mm voxels, a zero or negative spacing, voxel axes
lying in one plane, or more voxels than a scan can hold would otherwise make the
resampling allocate gigabytes or loop for minutes; here it fails at once with one
line naming the file.
"""

from __future__ import annotations

import numpy as np

from .errors import OsteoScreenError

# Clinical CT reconstructs at 0.2-1 mm in-plane and 0.5-10 mm slices; micro-CT and
# scout-like 20+ mm grids are not scans OsteoScreen can measure.
SPACING_MIN_MM = 0.1
SPACING_MAX_MM = 20.0
# A whole-body scan is under 2 m long and no gantry is 2 m wide.
FIELD_OF_VIEW_MAX_MM = 2000.0
# Peak memory of a `segment` run per CT voxel, libraries and models included (an upper bound:
# 1.4 GB for 512x512x285, README "Speed"; 1.1 GB for LIDC-IDRI-0001's 512x512x133), and so the
# most voxels a run may take: 512x512x1024 (e.g. chest to pelvis at 0.6 mm), under 5 GB at peak.
PEAK_BYTES_PER_VOXEL = 19
VOXELS_MAX = 512 * 512 * 1024
# |det| of the unit voxel axes: 1 for orthogonal axes, cos(tilt) for a gantry tilt; below
# this the axes are (nearly) coplanar and the grid has no volume.
DIRECTION_VOLUME_MIN = 0.5


def check_voxel_count(sizes, path) -> None:
    """Refuse a grid of more voxels than a CT holds (before anything is allocated)."""
    count = int(np.prod([int(s) for s in sizes], dtype=np.int64))
    if count > VOXELS_MAX:
        shape = "x".join(str(int(s)) for s in sizes)
        need_gb = count * PEAK_BYTES_PER_VOXEL / 1e9
        raise OsteoScreenError(f"{path}: {shape} voxels would need about {need_gb:,.0f} GB, more than a CT "
                               f"(at most {VOXELS_MAX:,} voxels); crop or downsample the scan to the chest "
                               "and upper abdomen")


def check_axes(axes_mm: np.ndarray, path) -> None:
    """The voxel axes (3x3, columns i, j, k in mm): finite, sized like a CT's voxels, not coplanar."""
    axes_mm = np.asarray(axes_mm, float)
    if not np.isfinite(axes_mm).all():
        raise OsteoScreenError(f"{path}: the header's voxel directions or spacing are not numbers; "
                               "export the image again")
    spacing = np.linalg.norm(axes_mm, axis=0)
    if np.any(spacing < SPACING_MIN_MM) or np.any(spacing > SPACING_MAX_MM):
        raise OsteoScreenError(f"{path}: voxel spacing {_fmt(spacing)} mm, outside what a CT can be "
                               f"({SPACING_MIN_MM:g}-{SPACING_MAX_MM:g} mm); fix the spacing in the header")
    if abs(np.linalg.det(axes_mm / spacing)) < DIRECTION_VOLUME_MIN:
        raise OsteoScreenError(f"{path}: degenerate direction cosines (the voxel axes lie nearly in one plane); "
                               "fix the orientation in the header or export the image again")


def check_spacing_values(spacing, path) -> None:
    """Spacing as a header states it (NIfTI pixdim, MetaImage ElementSpacing): zero, negative or
    not a number is an error, which readers would otherwise take as 1 mm or a flipped axis."""
    spacing = np.asarray(spacing, float)
    if not np.isfinite(spacing).all() or np.any(spacing <= 0):
        raise OsteoScreenError(f"{path}: the header gives voxel spacing {_fmt(spacing)} mm (zero, negative or "
                               "not a number); fix the spacing in the header")


def check_grid(volume, path) -> None:
    """All checks of a volume's grid: voxel count, axes and field of view."""
    check_voxel_count(volume.array.shape[:3], path)
    check_axes(volume.ijk_to_ras[:3, :3], path)
    extent = np.abs(volume.ijk_to_ras[:3, :3]) @ np.asarray(volume.shape_ijk, float)
    if np.any(extent > FIELD_OF_VIEW_MAX_MM):
        raise OsteoScreenError(f"{path}: a field of view of {_fmt(extent)} mm, larger than any CT "
                               f"(at most {FIELD_OF_VIEW_MAX_MM:g} mm); check the voxel spacing in the header")


def _fmt(values) -> str:
    return "x".join(f"{v:.4g}" for v in np.asarray(values, float))
