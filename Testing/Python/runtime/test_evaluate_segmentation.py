"""`osteoscreen evaluate-segmentation`: DSC and HD95 per level, with label mappings."""

import csv

import numpy as np
import pytest

from OsteoScreenLib.cli import main
from OsteoScreenLib.ct_io import write_volume
from OsteoScreenLib.metrics import dice, hausdorff95
from OsteoScreenLib.volume import Volume


def test_a_real_reference_against_itself_and_against_a_shifted_level(real_data, tmp_path, capsys):
    ref = real_data / "verse012" / "labels.nii.gz"
    csv_path = tmp_path / "table.csv"
    assert main(["evaluate-segmentation", "--reference", str(ref), "--reference-labels", "verse",
                 "--prediction", str(ref), "--prediction-labels", "L1=20,L2=22", "--csv", str(csv_path)]) == 0
    rows = {r["segment"]: r for r in csv.DictReader(open(csv_path))}
    assert float(rows["L1"]["dsc"]) == 1.0 and float(rows["L1"]["hd95_mm"]) == 0.0
    assert float(rows["L2"]["dsc"]) == 0.0 and float(rows["L2"]["hd95_mm"]) > 15  # L3 is not L2
    capsys.readouterr()
    assert main(["evaluate-segmentation", "--reference", str(ref), "--reference-labels", "verse", "--prediction",
                 str(ref), "--prediction-labels", "verse", "--csv", str(csv_path)]) == 1  # CSV exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate-segmentation", "--reference", str(ref), "--prediction", str(ref)]) == 1
    assert "pass the right label mapping" in capsys.readouterr().err  # default mapping 1/2 does not fit VerSe


def test_hausdorff_of_a_shifted_box_is_the_shift():
    grid = Volume(np.zeros((20, 20, 20)), np.diag([1.0, 1.0, 2.0, 1.0]))
    a = np.zeros((20, 20, 20), bool)
    a[5:10, 5:10, 5:10] = True
    b = np.roll(a, 2, axis=0)  # 2 slices = 4 mm along k
    assert hausdorff95(a, b, grid) == pytest.approx(4.0)
    assert dice(a, b) == pytest.approx(0.6)


def test_a_prediction_on_another_grid_is_compared_on_the_reference_grid(tmp_path):
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    ref = np.zeros((20, 20, 20), np.uint8)
    ref[4:12, 4:12, 4:12] = 1
    coarse = ref[::2, ::2, ::2]
    m = np.diag([2.0, 2.0, 2.0, 1.0])
    m[:3, 3] = 0.5  # voxel corners aligned with the fine grid
    write_volume(Volume(ref, grid), tmp_path / "ref.nii.gz")
    write_volume(Volume(coarse, m), tmp_path / "pred.nii.gz")
    assert main(["evaluate-segmentation", "--reference", str(tmp_path / "ref.nii.gz"),
                 "--prediction", str(tmp_path / "pred.nii.gz"), "--csv", str(tmp_path / "t.csv")]) == 0
    rows = {r["segment"]: r for r in csv.DictReader(open(tmp_path / "t.csv"))}
    assert float(rows["L1"]["dsc"]) == 1.0
