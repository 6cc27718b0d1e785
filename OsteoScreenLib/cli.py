"""The ``osteoscreen`` command: argument parsing and printing over the Python API.

Exit status: 0 success, 1 a user error (one-line message, no traceback),
3 a batch with some failed cases, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from . import __version__
from .errors import OsteoScreenError, about

EXIT_OK, EXIT_USER_ERROR, EXIT_PARTIAL = 0, 1, 3


def _quiet_vtk_logging() -> None:
    """Send VTK/MRML log chatter to nowhere; our errors carry their own messages."""
    from . import vtk_classes as vtk

    vtk.vtkObject.GlobalWarningDisplayOff()
    if hasattr(vtk, "vtkLogger"):
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)


# --------------------------------------------------------------------------- commands


def cmd_info(args) -> int:
    from .model_store import list_models

    rows = [("osteoscreen", __version__), ("python", platform.python_version())]
    for dist in ("numpy", "vtk", "slicer-core", "pydicom", "highdicom", "onnxruntime"):
        try:
            rows.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            rows.append((dist, "not installed"))
    models = list_models()
    if args.json:
        print(json.dumps({"versions": dict(rows), "models": models}, indent=2))
        return EXIT_OK
    for name, version in rows:
        print(f"{name:<14} {version}")
    print("bundled models:" if models else "bundled models: none")
    for m in models:
        print(f"  {m['name']:<14} {m['version']:<8} {m['status']}")
        for role, f in m["files"].items():
            print(f"    {role:<12} sha256 {f['sha256']}  {f['path']}")
    return EXIT_OK


def cmd_convert(args) -> int:
    from .ct_io import read_ct, write_volume

    volume = read_ct(args.input)
    write_volume(volume, args.output, overwrite=args.overwrite)
    k, j, i = volume.array.shape
    print(f"wrote {args.output} ({i}x{j}x{k}, {volume.axis_codes()}, spacing {_fmt(volume.spacing_mm)} mm)")
    return EXIT_OK


def cmd_segment(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from .ct_io import volume_extension, write_volume
    from .measurements import vertebra_stats
    from .pipeline import Models, read_case, run_case, save_segmentation

    ct_path = Path(args.ct)
    out = Path(args.output) if args.output else _default_seg_path(ct_path)
    label_map = not str(out).lower().endswith(".seg.nrrd")
    if label_map and volume_extension(out) not in (".nii.gz", ".nii", ".nrrd"):
        raise OsteoScreenError(f"{out}: write .seg.nrrd, or a label map .nii.gz, .nii or .nrrd")
    reference = dicom_reference(args, ct_path)
    dicom_seg = dicom_seg_path(out) if reference else None  # a DICOM series: a DICOM SEG beside
    for target in (out, dicom_seg):
        if target is not None and target.exists() and not args.overwrite:
            raise OsteoScreenError(f"{target}: already exists; pass --overwrite to replace it")
    models = Models()
    with ThreadPoolExecutor(1) as pool:
        # The models load while the CT is read (the reader works without Python's lock). A load
        # error is not taken here: run_case loads them again and reports it, after any read error.
        pool.submit(lambda: models.segmenter)
        case = read_case(ct_path, digest=False)  # no result records the input's hash here
    with about(ct_path):
        output = run_case(models, case, model=None).segmentation
    if label_map:
        write_volume(output.labels, out, overwrite=args.overwrite)
    else:
        save_segmentation(output.labels, out, overwrite=args.overwrite)
    print(f"wrote {out} in {output.timing_s['total']:.1f} s")
    if dicom_seg is not None:
        from .dicom_export import write_dicom_outputs

        with about(reference):
            write_dicom_outputs(reference, output.labels, None, dicom_seg.parent, args.overwrite,
                                segmentation_source=models.segmentation_source, seg_name=dicom_seg.name, sr_name=None)
        print(f"wrote {dicom_seg} (DICOM SEG)")
    for name, v in vertebra_stats(output.labels).items():
        print(f"  {name}: {v['volume_ml']:.1f} ml, centroid {v['centroid_mm']} mm (RAS)")
    for w in output.warnings:
        print(f"  warning: {w}")
    return EXIT_OK


def cmd_classify(args) -> int:
    from .atomic import write_json
    from .pipeline import Models, labels_from_file, read_case, run_case
    from .segmentation_nodes import parse_label_mapping

    from .dicom_export import SEG_NAME, SR_NAME, write_dicom_outputs

    # result.json, and for a DICOM series (or one given with --dicom-reference) seg.dcm and sr.dcm beside it
    reference = dicom_reference(args, Path(args.ct))
    targets = [Path(args.json)] if args.json else []
    if args.json and reference:
        targets += [Path(args.json).with_name(SEG_NAME), Path(args.json).with_name(SR_NAME)]
    for target in targets:
        if target.exists() and not args.overwrite:
            raise OsteoScreenError(f"{target}: already exists; pass --overwrite to replace it")
    case = read_case(args.ct, args.kvp, args.contrast)
    mapping = parse_label_mapping(args.labels) if args.labels else None
    labels = labels_from_file(args.segmentation, case.ct, mapping)
    with about(args.segmentation):
        result = run_case(Models(), case, args.model, labels, source=f"file {args.segmentation}").result
    if len(targets) > 1:
        with about(reference):
            result.dicom_files = write_dicom_outputs(reference, labels, result, Path(args.json).parent, args.overwrite)
    print("\n".join(result.text_lines()))
    if args.json:
        write_json(args.json, result.to_json(), overwrite=args.overwrite)
    return EXIT_OK


def cmd_screen(args) -> int:
    import slicer

    from .logic import OsteoScreenLogic

    logic = OsteoScreenLogic(slicer.vtkMRMLScene())

    def progress(done: int, total: int, case: str, status: str) -> None:
        width = 24
        bar = "#" * int(width * done / total) + "-" * (width - int(width * done / total))
        print(f"[{bar}] {done}/{total} {case}: {status}", file=sys.stderr, flush=True)

    if args.dicom_root and not Path(args.dicom_root).is_dir():
        raise OsteoScreenError(f"{args.dicom_root}: no such folder; check --dicom-root")
    if args.dicom_root and not any(str(i).lower().endswith(".csv") for i in args.inputs):
        raise OsteoScreenError("--dicom-root is where a manifest's StudyInstanceUIDs are found; give a manifest .csv")
    if args.engine != "ray" and (args.address or args.workers):
        raise OsteoScreenError("--address and --workers are for --engine ray")
    summary = logic.screen(args.inputs, Path(args.output_dir), args.model, args.overwrite, progress, kvp=args.kvp,
                           contrast=args.contrast, dicom_root=args.dicom_root, engine=args.engine,
                           address=args.address, workers=args.workers)
    print(f"{len(summary.done)} done, {len(summary.skipped)} already done, {len(summary.failed)} failed; "
          f"table: {summary.csv_path}" + (f" and {summary.parquet_path}" if summary.parquet_path else ""))
    if summary.parquet_note:
        print(f"  note: {summary.parquet_note}")
    for case, error in summary.failed.items():
        print(f"  failed {case}: {error}")
    return EXIT_PARTIAL if summary.failed else EXIT_OK


def cmd_evaluate_segmentation(args) -> int:
    import slicer

    from .atomic import write_text
    from .metrics import comparison_csv
    from .logic import OsteoScreenLogic
    from .segmentation_nodes import parse_label_mapping

    if args.csv and Path(args.csv).exists() and not args.overwrite:
        raise OsteoScreenError(f"{args.csv}: already exists; pass --overwrite to replace it")
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    pred_path, ref_path = Path(args.prediction), Path(args.reference)
    grid_node = None
    if args.ct:
        grid_node = logic.load_ct(args.ct)
    else:  # the reference's own grid
        from .ct_io import read_volume
        from .mrml_convert import volume_to_node

        if str(ref_path).lower().endswith(".seg.nrrd"):
            raise OsteoScreenError("a .seg.nrrd reference needs --ct to define the grid")
        grid_node = volume_to_node(logic.scene, read_volume(ref_path), str(ref_path))
    ref = logic.load_segmentation(ref_path, grid_node, parse_label_mapping(args.reference_labels))
    pred = logic.load_segmentation(pred_path, grid_node, parse_label_mapping(args.prediction_labels))
    rows = logic.compare_segmentations(ref, pred, grid_node)
    print(f"{'segment':<8} {'DSC':>7} {'HD95 mm':>8} {'ref ml':>8} {'pred ml':>8}")
    for r in rows:
        print(f"{r['segment']:<8} {r['dsc']:>7.4f} {r['hd95_mm']:>8.2f} {r['reference_ml']:>8.1f} {r['prediction_ml']:>8.1f}")
    if args.csv:
        write_text(args.csv, comparison_csv(rows), overwrite=args.overwrite)
    return EXIT_OK


def dicom_reference(args, ct_path: Path) -> Path | None:
    """The DICOM series a SEG (and SR) refers to: the input itself when it is a DICOM folder, else the
    series named with --dicom-reference (the one a NIfTI or NRRD input was converted from)."""
    given = getattr(args, "dicom_reference", None)
    if given:
        if not Path(given).is_dir():
            raise OsteoScreenError(f"{given}: --dicom-reference must be the folder of the DICOM series the CT was "
                                   "made from")
        return Path(given)
    return ct_path if ct_path.is_dir() else None


def dicom_seg_path(out: Path) -> Path:
    """The DICOM SEG that ``segment`` writes beside its output: case.seg.nrrd -> case.seg.dcm."""
    name = out.name
    for ext in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return out.with_name(f"{name}.seg.dcm")


def _default_seg_path(ct_path: Path) -> Path:
    from .logic import display_name

    return ct_path.parent / f"{display_name(ct_path)}.seg.nrrd"


def cmd_demo(args) -> int:
    from .demo import run_demo
    from .segmentation_nodes import parse_label_mapping

    case = Path(args.case)
    labels = case / "labels.nii.gz"
    result = run_demo(case / "ct.nii.gz", labels if labels.exists() else None, parse_label_mapping(args.labels),
                      Path(args.output_dir), args.overwrite, args.model)
    print(f"demo: {result.input.path} -> {args.output_dir}/ (segmentation.seg.nrrd, result.json"
          + (", report.png)" if result.prediction else ")"))
    print("\n".join(result.text_lines(warning_label="note")))
    print(f"  {result.timing_s['total']:.1f} s")
    return EXIT_OK


def cmd_phantom(args) -> int:
    from .phantom import PRESETS, generate_case, write_case

    if args.preset not in PRESETS:
        raise OsteoScreenError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    if args.count < 1 or args.seed < 0:
        raise OsteoScreenError("--count must be at least 1 and --seed at least 0")
    from .atomic import ensure_folder

    out = ensure_folder(args.out_dir)  # before minutes of rendering
    for n in range(args.count):
        seed = args.seed + n
        folder = out / f"phantom-{seed:05d}"
        if folder.exists() and not args.overwrite:
            print(f"skip {folder} (exists; --overwrite to replace)")
            continue
        case = generate_case(seed, args.preset)
        write_case(case, folder, fmt=args.format, overwrite=args.overwrite)
        meta = case.meta
        print(f"{folder}: QCT BMD {meta['qct_bmd_mg_cm3']['mean']:.1f} mg/cm3 ({meta['qct_class']}), "
              f"true {meta['bmd_mg_cm3']['mean']:.1f}")
    return EXIT_OK


def _fmt(values) -> str:
    return "x".join(f"{v:.4g}" for v in values)


# --------------------------------------------------------------------------- parser


def _model_option(parser) -> None:
    from .registry import DEFAULT_MODEL, MODEL_NAMES, MODELS

    parser.add_argument("--model", choices=MODEL_NAMES, default=DEFAULT_MODEL,
                        help="; ".join(f"{n}: {m['title']}" for n, m in MODELS.items()))


def _dicom_reference_option(parser) -> None:
    parser.add_argument("--dicom-reference", default=None, metavar="DICOM_DIR",
                        help="for a CT file (NIfTI, NRRD) made from a DICOM series: that series' folder, to write "
                        "the DICOM SEG (and SR) referring to it; the CT must lie on the series' grid")


def _scan_options(parser) -> None:
    from .registry import CONTRAST_PHASES, TUBE_VOLTAGES_KVP

    parser.add_argument("--kvp", type=int, choices=TUBE_VOLTAGES_KVP, default=None,
                        help="tube voltage of scans whose file does not record it (NIfTI, NRRD); a DICOM header wins. "
                        "The BMD estimate is more precise with it")
    parser.add_argument("--contrast", choices=CONTRAST_PHASES, default=None,
                        help="contrast phase of the scans: none (unenhanced), arterial or portal (venous); "
                        "iodine raises the marrow's HU, so the BMD estimate is more precise with it")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="osteoscreen",
        description="Opportunistic osteoporosis screening on chest CT (L1/L2 segmentation and QCT classes).",
    )
    p.add_argument("--version", action="version", version=f"osteoscreen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("info", help="versions and bundled models with their SHA-256")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("convert", help="convert a CT (NIfTI, NRRD, MetaImage, DICOM folder) to NIfTI or NRRD")
    s.add_argument("input", help="CT file or DICOM folder")
    s.add_argument("output", help="output file: .nii.gz, .nii, .nrrd or .mha")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("phantom", help="generate synthetic chest CT phantoms with known L1/L2 and BMD")
    s.add_argument("out_dir")
    s.add_argument("--seed", type=int, default=0, help="seed of the first case (case n uses seed + n)")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--preset", default="chest",
                   help="chest (default, 512x512), chest-coarse (same cases, 128x128 at 5 mm), chest-box (same "
                   "cases, only a box around L1-L2 of the chest grid), spine or training")
    s.add_argument("--format", choices=("nifti", "nrrd", "dicom"), default="nifti")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_phantom)

    s = sub.add_parser("segment", help="segment the L1 and L2 vertebral bodies of a CT")
    s.add_argument("ct", help="CT file or DICOM folder")
    s.add_argument("--output", help="OUT.seg.nrrd (default: next to the CT), or a label map .nii.gz/.nii/.nrrd; "
                   "for a DICOM series also OUT.seg.dcm (DICOM SEG) beside it")
    _dicom_reference_option(s)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_segment)

    s = sub.add_parser("classify", help="classify a CT from its L1/L2 segmentation (normal / osteopenia / osteoporosis)")
    s.add_argument("ct", help="CT file or DICOM folder")
    s.add_argument("--segmentation", required=True, help=".seg.nrrd, or a label map (1 = L1, 2 = L2, or see --labels)")
    s.add_argument("--labels", default=None, help="label mapping of a label map: verse, totalsegmentator or L1=..,L2=..")
    _model_option(s)
    s.add_argument("--json", help="write result.json here (for a DICOM series also seg.dcm and sr.dcm, DICOM SEG "
                   "and SR, beside it)")
    _dicom_reference_option(s)
    _scan_options(s)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser("screen", help="segment and classify many scans into a folder (resumable)")
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="CT files, DICOM series folders, folders of those, DICOM trees of whole studies (one series "
                   "chosen per study, see docs/archive.md), or a manifest .csv with a 'path' or a "
                   "'study_instance_uid' column")
    s.add_argument("--dicom-root", default=None,
                   help="folder in which the StudyInstanceUIDs of a manifest are looked for")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: one case after another in this process (default); ray: cases in parallel on Ray "
                   "workers, each loading the models once (pip install osteoscreen[distributed])")
    s.add_argument("--address", default=None,
                   help="with --engine ray: the Ray cluster to use (e.g. ray://head:10001 or auto); default: start "
                   "Ray on this machine. The workers must see the input and output paths")
    s.add_argument("--workers", type=int, default=None, help="with --engine ray: how many workers (default: one per CPU)")
    s.add_argument("--output-dir", required=True)
    _model_option(s)
    _scan_options(s)
    s.add_argument("--overwrite", action="store_true", help="redo cases that are already done")
    s.set_defaults(func=cmd_screen)

    s = sub.add_parser("evaluate-segmentation", help="DSC and 95 %% Hausdorff of a prediction against a reference")
    s.add_argument("--reference", required=True, help="reference label map or .seg.nrrd")
    s.add_argument("--prediction", required=True, help="predicted label map or .seg.nrrd")
    s.add_argument("--reference-labels", default="osteoscreen", help="mapping of the reference, e.g. L1=20,L2=21 or verse")
    s.add_argument("--prediction-labels", default="osteoscreen", help="mapping of the prediction")
    s.add_argument("--ct", help="grid to compare on (default: the reference's grid)")
    s.add_argument("--csv", help="write the table here")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_evaluate_segmentation)

    s = sub.add_parser("demo", help="run the main job end to end on a case folder (ct.nii.gz [+ labels.nii.gz])")
    s.add_argument("--case", required=True, help="folder holding ct.nii.gz and, optionally, reference labels.nii.gz")
    s.add_argument("--labels", default="totalsegmentator", help="label mapping of labels.nii.gz")
    s.add_argument("--output-dir", default="demo-output")
    _model_option(s)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_vtk_logging()
    try:
        return args.func(args)
    except OsteoScreenError as exc:
        print(f"osteoscreen: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("osteoscreen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
