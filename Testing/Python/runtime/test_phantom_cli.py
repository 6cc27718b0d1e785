"""The `osteoscreen phantom` command writes readable cases and refuses bad requests."""

import json

from OsteoScreenLib.cli import main
from OsteoScreenLib.ct_io import read_ct, read_volume


def test_the_phantom_command_writes_cases_that_load_back(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--preset", "training", "--seed", "5", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "phantom-00005" in out and "phantom-00006" in out and "mg/cm3" in out
    case = tmp_path / "phantom-00005"
    ct, labels = read_ct(case / "ct.nii.gz"), read_volume(case / "labels.nii.gz")
    assert ct.same_grid(labels)
    meta = json.loads((case / "meta.json").read_text())
    assert meta["seed"] == 5 and meta["qct_class"] in ("normal", "osteopenia", "osteoporosis")


def test_the_phantom_command_rejects_an_unknown_preset(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--preset", "mri"]) == 1
    assert "unknown preset" in capsys.readouterr().err


def test_the_phantom_command_writes_a_chest_box_case(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--preset", "chest-box", "--seed", "3"]) == 0
    assert "phantom-00003" in capsys.readouterr().out
    case = tmp_path / "phantom-00003"
    ct, labels = read_ct(case / "ct.nii.gz"), read_volume(case / "labels.nii.gz")
    assert ct.same_grid(labels) and ct.array.shape[1] < 512
    meta = json.loads((case / "meta.json").read_text())
    assert meta["preset"] == "chest-box" and "box_of" in meta["grid"]
