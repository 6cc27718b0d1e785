"""Screening an archive: one series per study by the documented rules, manifests, and the screen command."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from OsteoScreenLib import registry
from OsteoScreenLib.batch import expand_inputs
from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.study import SeriesInfo, StudyInput, kernel_class, read_manifest, select_series, select_studies
from OsteoScreenLib.study import dicom_files_under
from OsteoScreenLib.phantom.study_tree import dose_report, new_series, write_study


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Two studies. A: soft-tissue (B30f) and lung (B60f) series of one acquisition, a scout of
    2 slices and a dose SR, each series in its own folder. B: one series and a dose SR in one folder."""
    from OsteoScreenLib.phantom import generate_case, write_case

    tmp = tmp_path_factory.mktemp("archive")
    root = tmp / "archive"
    cases = {}
    for seed in (1, 2):
        write_case(generate_case(seed, "training"), tmp / f"phantom{seed}", fmt="dicom")
        cases[seed] = tmp / f"phantom{seed}" / "ct"
    study_a = root / "patientA" / "study1"
    original = ["ORIGINAL", "PRIMARY", "AXIAL"]
    soft = new_series(cases[1], study_a / "s2", "soft", ConvolutionKernel="B30f", SeriesDescription="Abdomen 1.5 B30f",
                       ImageType=original, PatientID="PAT-A", SeriesNumber=2)
    lung = new_series(cases[1], study_a / "s3", "lung", ConvolutionKernel="B60f", SeriesDescription="Lung 1.5 B60f",
                       ImageType=original, PatientID="PAT-A", SeriesNumber=3)
    middle = soft[len(soft) // 2: len(soft) // 2 + 2]
    scout = new_series(cases[1], study_a / "s1", "scout", files=middle, SeriesDescription="Topogram 0.6 T20f",
                        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], PatientID="PAT-A", SeriesNumber=1)
    dose_report(soft[0], study_a / "s9" / "dose.dcm")
    study_b = root / "patientB" / "study7"
    flat = new_series(cases[2], study_b, "ct", ConvolutionKernel="STANDARD", SeriesDescription="CHEST STD",
                       ImageType=original, PatientID="PAT-B", SeriesNumber=2)
    dose_report(flat[0], study_b / "dose.dcm")
    import pydicom

    uid = {name: pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
           for name, files in (("soft", soft), ("lung", lung), ("scout", scout), ("b", flat))}
    uid["study_a"] = pydicom.dcmread(soft[0], stop_before_pixels=True).StudyInstanceUID
    uid["study_b"] = pydicom.dcmread(flat[0], stop_before_pixels=True).StudyInstanceUID
    return root, uid, cases


def test_the_soft_tissue_series_is_chosen_and_each_other_series_says_why_not(archive):
    root, uid, _ = archive
    selections = {s.study_uid: s for s in select_studies(dicom_files_under(root))}
    assert set(selections) == {uid["study_a"], uid["study_b"]}
    a = selections[uid["study_a"]]
    assert a.chosen.series_uid == uid["soft"] and a.patient_id == "PAT-A"
    reasons = {s.series_uid: why for s, why in a.skipped}
    assert "sharp kernel (B60f)" in reasons[uid["lung"]]
    assert reasons[uid["scout"]].startswith("scout/localizer")
    dose = [why for s, why in a.skipped if s.modality == "SR"]
    assert len(dose) == 1 and dose[0].startswith("structured report (dose report), not a series")
    assert len(a.skipped) == 3
    b = selections[uid["study_b"]]
    assert b.chosen.series_uid == uid["b"] and [s.modality for s, _ in b.skipped] == ["SR"]
    assert b.folder() == root / "patientB" / "study7" and a.folder() == root / "patientA" / "study1"


def test_the_benchmark_s_study_of_five_series_reads_its_soft_tissue_series(archive, tmp_path):
    _, _, cases = archive
    uid = write_study(cases[1], tmp_path / "study", "PAT-W")  # as training/studies/archive_benchmark.py builds it
    (sel,) = select_studies(dicom_files_under(tmp_path))
    assert sel.study_uid == uid["study"] and sel.chosen.series_uid == uid["soft"] and sel.patient_id == "PAT-W"
    reasons = {s.series_uid: why for s, why in sel.skipped}
    assert set(reasons) == {uid[k] for k in ("lung", "thick", "scout", "dose")}
    assert "sharp kernel (B60f)" in reasons[uid["lung"]] and reasons[uid["scout"]].startswith("scout/localizer")
    assert "thinner series was chosen" in reasons[uid["thick"]] or "thicker than" in reasons[uid["thick"]]


def _series(uid, kernel="B30f", spacing=1.0, slices=200, image_type=("ORIGINAL", "PRIMARY", "AXIAL"), **kw):
    s = SeriesInfo(uid, "study", modality=kw.pop("modality", "CT"), kernel=kernel, image_type=list(image_type),
                   files=[Path(f"{uid}-{n}") for n in range(slices)], positions=[n * spacing for n in range(slices)],
                   normal_z=kw.pop("normal_z", 1.0), **kw)
    return s


def test_rules_in_order_coverage_image_type_kernel_then_thinnest():
    # thin and thick soft-tissue series over the same length: the thinner one
    sel = select_series("study", [_series("thick", spacing=3.0, slices=100), _series("thin", spacing=1.0, slices=300)])
    assert sel.chosen.series_uid == "thin" and "thinner series was chosen" in sel.skipped[0][1]
    # below the thinnest limit and above the thickest: excluded with the limit in the reason
    sel = select_series("study", [_series("t", spacing=0.3, slices=900), _series("T", spacing=8.0, slices=40),
                                  _series("ok", spacing=2.0, slices=150)])
    reasons = {s.series_uid: why for s, why in sel.skipped}
    assert sel.chosen.series_uid == "ok"
    assert f"thinner than {registry.SERIES_MIN_SPACING_MM:g} mm" in reasons["t"]
    assert f"thicker than {registry.SERIES_MAX_SPACING_MM:g} mm" in reasons["T"]
    # a short soft series loses to a lung series that reaches the upper abdomen
    sel = select_series("study", [_series("short", spacing=1.0, slices=120), _series("long", "B70f", 1.0, 320)])
    assert sel.chosen.series_uid == "long" and "less than 200 mm" in sel.skipped[0][1]
    # neither long enough: the longest is read
    sel = select_series("study", [_series("a", spacing=1.0, slices=100), _series("b", spacing=1.0, slices=150)])
    assert sel.chosen.series_uid == "b"
    # a derived (secondary) reconstruction loses to the original
    sel = select_series("study", [_series("derived", image_type=("DERIVED", "SECONDARY", "AXIAL")), _series("orig")])
    assert sel.chosen.series_uid == "orig" and "not ORIGINAL/PRIMARY" in sel.skipped[0][1]
    # sagittal reformat, MR, too few slices: excluded; nothing left is a clear reason
    sel = select_series("study", [_series("sag", normal_z=0.0), _series("mr", modality="MR"), _series("few", slices=5)])
    assert sel.chosen is None and sel.reason.startswith("no usable CT series")
    reasons = {s.series_uid: why for s, why in sel.skipped}
    assert reasons["sag"].startswith("not axial") and reasons["mr"].startswith("modality MR")
    assert reasons["few"].startswith("5 slice(s)")


@pytest.mark.parametrize("kernel,description,expected", [
    ("B30f", "", "soft"), ("Br40d", "", "soft"), ("B60f", "", "sharp"), ("Br64", "", "sharp"),
    ("STANDARD", "", "soft"), ("LUNG", "", "sharp"), ("BONEPLUS", "", "sharp"), ("SOFT", "", "soft"),
    ("", "Thorax 1.0 B70f", "sharp"), ("", "Abdomen 3.0 I31f", "soft"), ("", "Chest", "unknown"), ("C", "", "unknown")])
def test_kernel_classes(kernel, description, expected):
    assert kernel_class(kernel, description) == expected


def test_a_single_series_folder_is_still_read_as_a_folder(archive):
    _, _, cases = archive
    assert expand_inputs([cases[1]]) == [cases[1]]  # the phantom's ct/ folder: one series, as before


def test_manifests_of_paths_and_of_study_uids(archive, tmp_path):
    root, uid, cases = archive
    by_path = tmp_path / "paths.csv"
    by_path.write_text(f"path\n{root / 'patientA'}\n{cases[2]}\n")
    items = expand_inputs([by_path])
    assert [i.selection.study_uid for i in items if isinstance(i, StudyInput)] == [uid["study_a"]]
    assert cases[2] in items
    by_uid = tmp_path / "uids.csv"
    by_uid.write_text(f"StudyInstanceUID,note\n{uid['study_b']},x\n1.2.3.404,missing\n")
    with pytest.raises(OsteoScreenError, match="needs --dicom-root"):
        read_manifest(by_uid)
    items = expand_inputs([by_uid], dicom_root=root)
    assert [i.selection.study_uid for i in items] == [uid["study_b"], "1.2.3.404"]
    assert items[0].selection.chosen.series_uid == uid["b"]
    assert items[1].files is None and "not found under" in items[1].selection.reason
    bad = tmp_path / "bad.csv"
    bad.write_text("accession\n123\n")
    with pytest.raises(OsteoScreenError, match="'path' or a 'study_instance_uid' column"):
        expand_inputs([bad])


def test_screen_over_a_tree_writes_one_case_per_study_with_the_series_it_read(archive, tmp_path, capsys):
    from OsteoScreenLib.cli import main

    root, uid, _ = archive
    out = tmp_path / "out"
    assert main(["screen", str(root), "--output-dir", str(out)]) == 0
    cases = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert cases == ["study1", "study7"]
    result = json.loads((out / "study1" / "result.json").read_text())
    assert result["series_selection"]["chosen"]["series_uid"] == uid["soft"]
    assert {s["series_uid"] for s in result["series_selection"]["skipped"]} >= {uid["lung"], uid["scout"]}
    assert (out / "study1" / "seg.dcm").exists()  # the SEG references the chosen series
    import pydicom

    seg = pydicom.dcmread(out / "study1" / "seg.dcm", stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid["soft"]
    rows = {r["case"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["study1"]["status"] == "ok" and rows["study1"]["series_uid"] == uid["soft"]
    assert rows["study1"]["patient_id"] == "PAT-A" and "B60f" in rows["study1"]["skipped_series"]
    assert rows["study7"]["study_uid"] == uid["study_b"] and rows["study7"]["class"] in registry.CLASSES
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["case"] for r in table] == ["study1", "study7"]
    assert table[0]["series_uid"] == uid["soft"] and isinstance(table[0]["L1_roi_hu"], float)
    assert table[1]["bmd_mg_cm3"] == pytest.approx(float(rows["study7"]["bmd_mg_cm3"]))
    assert table[0]["osteoscreen_version"] and table[0]["model_version"]
    capsys.readouterr()
    assert main(["screen", str(root), "--output-dir", str(out)]) == 0  # resumable: both done already
    assert "0 done, 2 already done, 0 failed" in capsys.readouterr().out


def test_a_study_without_a_usable_series_fails_alone_with_the_reasons(archive, tmp_path):
    from OsteoScreenLib.cli import main

    root, uid, _ = archive
    tree = tmp_path / "tree"
    shutil.copytree(root / "patientA" / "study1" / "s1", tree / "scout")  # a study of only a scout and a dose SR
    shutil.copytree(root / "patientA" / "study1" / "s9", tree / "dose")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"study_instance_uid\n{uid['study_a']}\n")
    assert main(["screen", str(manifest), "--dicom-root", str(tree), "--output-dir", str(tmp_path / "out")]) == 3
    (row,) = csv.DictReader(open(tmp_path / "out" / "results.csv"))
    assert row["status"] == "failed" and "no usable CT series" in row["error"] and "scout/localizer" in row["error"]
    error = json.loads(next((tmp_path / "out").glob("*/error.json")).read_text())
    assert error["series_selection"]["chosen"] is None


def test_without_pyarrow_only_the_csv_is_written_and_the_note_says_why(tmp_path, monkeypatch):
    import builtins

    from OsteoScreenLib.batch import run_batch

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)

    def process(source, folder):
        (folder / "result.json").write_text(json.dumps({"model": {"name": "l1l2"}, "vertebrae": {}, "warnings": []}))

    summary = run_batch([tmp_path / "a.nii.gz"], tmp_path / "out", process)
    assert summary.parquet_path is None and "pip install osteoscreen[parquet]" in summary.parquet_note
    assert (tmp_path / "out" / "results.csv").exists() and not (tmp_path / "out" / "results.parquet").exists()


def test_the_ray_engine_gives_the_local_engine_s_outputs_and_loads_the_models_once_per_worker(archive, tmp_path):
    pytest.importorskip("ray")
    import slicer

    from OsteoScreenLib.logic import OsteoScreenLogic

    root, uid, _ = archive
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    local = logic.screen([root], tmp_path / "local")
    seen = []
    summary = logic.screen([root], tmp_path / "ray", engine="ray", workers=1,
                           progress=lambda done, total, case, status: seen.append((done, total, case)))
    assert summary.done == ["study1", "study7"] == local.done and not summary.failed
    assert sorted(seen) == [(1, 2, "study1"), (2, 2, "study7")] or sorted(c for _, _, c in seen) == ["study1", "study7"]
    (pid, cases), = summary.workers.items()  # one worker: both cases, one set of models
    assert pid != __import__("os").getpid() and [c for c, _ in cases] == ["study1", "study7"]
    assert len({m for _, m in cases}) == 1 and cases[0][1] is not None
    rows = {e: list(csv.DictReader(open(tmp_path / e / "results.csv"))) for e in ("local", "ray")}
    for a, b in zip(rows["local"], rows["ray"]):
        assert a["case"] == b["case"] and a["class"] == b["class"] and a["series_uid"] == b["series_uid"]
        for k in ("bmd_mg_cm3", "L1_roi_hu", "L2_roi_hu", "p_normal"):
            assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-4, abs=1e-3)
    assert (tmp_path / "ray" / "results.parquet").exists() and (tmp_path / "ray" / "study1" / "seg.dcm").exists()
    again = logic.screen([root], tmp_path / "ray", engine="ray")  # resumable: nothing left, Ray not even started
    assert again.skipped == ["study1", "study7"] and not again.done and not again.workers


def test_the_ray_engine_refuses_a_cluster_it_cannot_reach(archive, tmp_path, capsys):
    pytest.importorskip("ray")
    from OsteoScreenLib.cli import main

    root, _, _ = archive
    code = main(["screen", str(root), "--output-dir", str(tmp_path / "o"), "--engine", "ray",
                 "--address", "127.0.0.1:1"])
    assert code == 1 and "cannot reach a Ray cluster at 127.0.0.1:1" in capsys.readouterr().err


def test_non_image_sop_classes_are_matched_as_whole_uids():
    ct = "1.2.840.10008.5.1.4.1.1.2"
    sel = select_series("study", [_series("ct", sop_class_uid=ct), _series("enh", sop_class_uid=ct + ".1", slices=1),
                                  _series("sc", sop_class_uid="1.2.840.10008.5.1.4.1.1.7.2", slices=1),
                                  _series("vl", sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.1", modality="XC")])
    reasons = {s.series_uid: why for s, why in sel.skipped}
    assert sel.chosen.series_uid == "ct" and reasons["enh"].startswith("Enhanced CT")
    assert reasons["sc"].startswith("secondary capture") and reasons["vl"].startswith("modality XC")


def test_a_killed_batch_of_studies_resumes_with_the_same_case_names(archive, tmp_path):
    from OsteoScreenLib.batch import run_batch

    root, uid, _ = archive
    calls = []

    def process(source, folder, kill_at=None):
        calls.append(source.selection.study_uid)
        if source.selection.study_uid == kill_at:
            raise KeyboardInterrupt  # as if the process were killed here
        (folder / "result.json").write_text(json.dumps({"model": {"name": "l1l2"}, "vertebrae": {}, "warnings": [],
                                                         "series_selection": source.selection.to_json()}))

    with pytest.raises(KeyboardInterrupt):
        run_batch(expand_inputs([root]), tmp_path / "out", lambda s, f: process(s, f, kill_at=uid["study_b"]))
    calls.clear()
    summary = run_batch(expand_inputs([root]), tmp_path / "out", process)  # headers read again: same studies, names
    assert summary.skipped == ["study1"] and summary.done == ["study7"] and calls == [uid["study_b"]]
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [r["series_uid"] for r in rows] == [uid["soft"], uid["b"]]


@pytest.mark.parametrize("extra,message", [
    (["--dicom-root", "{root}"], "give a manifest .csv"),
    (["--dicom-root", "{root}/missing"], "no such folder; check --dicom-root"),
    (["--workers", "2"], "are for --engine ray"),
    (["--address", "auto"], "are for --engine ray")])
def test_options_that_do_not_fit_are_refused_in_one_line(archive, tmp_path, capsys, extra, message):
    from OsteoScreenLib.cli import main

    root, _, _ = archive
    args = [a.format(root=root) for a in extra]
    assert main(["screen", str(root), "--output-dir", str(tmp_path / "o"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
