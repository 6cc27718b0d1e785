"""The Slicer module's background worker: ``PythonSlicer -m OsteoScreenLib.worker JOB.json``.

Runs one task of the pipeline (segment, classify, compare) on files the module
wrote, outside the application: it needs only what ``PythonSlicer`` provides
(numpy, VTK, ``slicer``'s base kits, the segmentations module's own wrapping).
Protocol: one JSON object per stdout line after :data:`PREFIX`: progress, then
exactly one of done / error / cancelled. The job file gives the task and its
inputs; ``cancel_file`` appearing asks the worker to stop at its next check (the
module also ends the whole process tree when it does not stop in time).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

PREFIX = "OSTEOSCREEN-WORKER "
EXIT_OK, EXIT_USER_ERROR, EXIT_CANCELLED, EXIT_INTERNAL = 0, 1, 2, 4


def emit(**message) -> None:
    sys.stdout.write(PREFIX + json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


def run(job: dict) -> dict:
    """The task of ``job``; returns what the done message carries."""
    from .pipeline import Models, ScanSettings, labels_from_file, read_case, run_case, save_segmentation
    from .segmenter import Cancelled

    def cancel() -> bool:
        return os.path.exists(job["cancel_file"])

    def check() -> None:
        if cancel():
            raise Cancelled("cancelled")

    def progress(fraction, message) -> None:
        emit(progress=float(fraction), message=str(message))

    progress(0.02, "reading the CT")
    case = read_case(job["ct"])
    case.path = job.get("source_path") or case.path
    check()
    task = job["task"]
    if task == "segment":
        models = Models()
        out = run_case(models, case, model=None, progress=progress, cancel=cancel).segmentation
        check()
        path = save_segmentation(out.labels, os.path.join(job["out_dir"], "segmentation.seg.nrrd"))
        return {"segmentation": str(path), "source": models.segmentation_source, "warnings": out.warnings,
                "timing_s": out.timing_s}
    if task == "classify":
        case.scan = ScanSettings(job.get("kvp"), job.get("kvp_source") or "unknown", job.get("contrast"))
        case.warnings = list(job.get("warnings") or [])
        labels = labels_from_file(job["segmentation"], case.ct)
        check()
        progress(0.3, "classifying with model " + job["model"])
        outcome = run_case(Models(), case, job["model"], labels, job.get("segmentation_source"))
        check()
        path = os.path.join(job["out_dir"], "result.json")
        from .atomic import write_json

        write_json(path, outcome.result.to_json(), overwrite=True)
        return {"result": path}
    if task == "compare":
        from .metrics import compare_labelmaps
        from .registry import LABEL_OF

        reference = labels_from_file(job["reference"], case.ct)
        compared = labels_from_file(job["compared"], case.ct)
        check()
        progress(0.3, "comparing the segmentations")
        return {"rows": compare_labelmaps(reference, compared.array, LABEL_OF)}
    raise ValueError(f"unknown task {task!r}")


def main(argv: list[str]) -> int:
    from .errors import OsteoScreenError
    from .segmenter import Cancelled

    with open(argv[0]) as f:
        job = json.load(f)
    emit(progress=0.0, message="starting")
    try:
        outcome = run(job)
    except Cancelled:
        emit(cancelled=True)
        return EXIT_CANCELLED
    except OsteoScreenError as exc:
        emit(error=str(exc))
        return EXIT_USER_ERROR
    except Exception as exc:  # the module shows one line; the traceback goes to its log
        traceback.print_exc(file=sys.stdout)
        emit(error=f"internal error ({type(exc).__name__}: {exc}); details are in the log", internal=True)
        return EXIT_INTERNAL
    emit(done=True, **outcome)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
