"""Writing a phantom case folder atomically: ct, labels, levels and meta.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_path
from ..ct_io import write_ct, write_volume
from ..errors import OsteoScreenError
from .case import PhantomCase

FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "dicom": ""}


def write_case(case: PhantomCase, folder: str | os.PathLike, fmt: str = "nifti", overwrite: bool = False) -> Path:
    """Write ``case`` into ``folder`` (created whole or not at all) and return the folder.

    ``fmt`` 'nifti' or 'nrrd' writes ``ct``/``labels``/``levels`` with that
    extension; 'dicom' writes the CT as a DICOM series in ``ct/`` and the label
    maps as NIfTI.
    """
    if fmt not in FORMATS:
        raise OsteoScreenError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    folder = Path(folder)
    ext = FORMATS[fmt] or ".nii.gz"
    with atomic_path(folder, overwrite) as tmp:
        tmp.mkdir(parents=True)
        if fmt == "dicom":
            from ..dicom_io import write_dicom_series

            write_dicom_series(case.ct, tmp / "ct", description=f"OsteoScreen phantom seed {case.meta['seed']}",
                               uid_seed=int(case.meta["seed"]), kvp=case.meta["parameters"]["scanner"]["kvp"],
                               padding_hu=case.meta.get("padding_hu"))
        else:
            write_ct(case.ct, tmp / f"ct{ext}")
        write_volume(case.labels, tmp / f"labels{ext}")
        write_volume(case.levels, tmp / f"levels{ext}")
        (tmp / "meta.json").write_text(json.dumps(case.meta, indent=2) + "\n")
    return folder
