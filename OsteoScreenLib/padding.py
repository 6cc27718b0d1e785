"""Values outside the reconstruction circle: the vendor's padding, read as air.

Scanners write a padding value outside the circle they reconstruct (DICOM PixelPaddingValue:
-3024, -2048 or -2000 HU are common) and air noise can dip below -1024 HU. Neither is tissue:
both are taken as air outside the patient, as the phantoms' air (-1024 HU) and the networks'
HU window (from -1000 HU) take them anyway. Pure functions on Volumes.
"""

from __future__ import annotations

import numpy as np

from .registry import HU_AIR, HU_MIN_PLAUSIBLE
from .volume import Volume


def padding_to_air(volume: Volume, padding_hu: tuple[float, float] | None = None,
                   in_place: bool = False) -> tuple[Volume, int]:
    """``volume`` with padding and sub-air values set to air (-1024 HU), and how many voxels changed.

    Every value from ``HU_MIN_PLAUSIBLE`` up to air is taken as outside the patient, and so are
    the values in ``padding_hu`` (the series' declared padding range in HU, lowest and highest)
    wherever it lies; anything else is left for the HU plausibility check to judge.
    ``in_place``: change the volume's own voxels rather than a copy (for a volume no one else
    holds, e.g. one just read; a read-only array is copied all the same).
    """
    a = volume.array
    in_place = in_place and a.flags.writeable
    if a.size == 0 or not np.issubdtype(a.dtype, np.number):
        return volume, 0
    if padding_hu is None:
        lowest = a.min()
        if lowest >= HU_AIR:  # nothing below air (e.g. a volume already read through here): one pass
            return volume, 0
        if lowest >= HU_MIN_PLAUSIBLE:  # every value below air is in range: raise it to air, two passes
            count = int(np.count_nonzero(a < HU_AIR))
            air = np.asarray(HU_AIR, a.dtype)
            return volume.with_array(np.maximum(a, air, out=a) if in_place else np.maximum(a, air)), count
    outside = (a < HU_AIR) & (a >= HU_MIN_PLAUSIBLE)
    if padding_hu is not None:
        lo, hi = min(padding_hu), max(padding_hu)
        outside |= (a >= lo - 0.5) & (a <= hi + 0.5)
    count = int(np.count_nonzero(outside))
    if count == 0:
        return volume, 0
    filled = a if in_place else a.copy()
    filled[outside] = HU_AIR
    return volume.with_array(filled), count


def declared_padding_hu(ds) -> tuple[float, float] | None:
    """The padding range in HU that a DICOM header declares (PixelPaddingValue and, for a range,
    PixelPaddingRangeLimit, both stored values before the rescale), or None."""
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit", value)
    try:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        stored = [int(value), int(limit)]
    except (TypeError, ValueError):
        return None
    if int(ds.get("PixelRepresentation", 0)) == 1:  # signed pixels: the tag may be read unsigned
        bits = int(ds.get("BitsStored", 16) or 16)
        stored = [v - (1 << bits) if v >= 1 << (bits - 1) else v for v in stored]
    hu = [v * slope + intercept for v in stored]
    return min(hu), max(hu)
