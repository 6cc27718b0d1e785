"""Where the cases of a batch run: in this process (:func:`batch.run_batch`) or on Ray workers.

Both engines run each case through :func:`batch.run_one` with a :class:`ScreenProcessor`, into
the same case folders, and the driver builds the same results.csv / results.parquet, so the
outputs do not depend on the engine. Ray is an optional extra (``pip install osteoscreen[distributed]``):
local Ray by default, ``address`` for a cluster (whose workers must see the input and output
paths, e.g. a shared file system). Each worker loads the models once, on its first case.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

from .atomic import ensure_folder, write_json
from .batch import (ERROR_NAME, RESULT_NAME, BatchSummary, case_names, csv_row, error_record, finish_tables,
                    run_one, write_csv)
from .errors import OsteoScreenError

ENGINES = ("local", "ray")


class ScreenProcessor:
    """Read, segment, classify and write one input (a file, a series folder or a study) into its folder.

    Picklable: a Ray worker gets a copy without models and loads its own on first use.
    """

    def __init__(self, model: str, kvp=None, contrast=None, models=None, cancel=None):
        self.model, self.kvp, self.contrast = model, kvp, contrast
        self._models, self.cancel = models, cancel

    @property
    def models(self):
        if self._models is None:
            from .pipeline import Models

            self._models = Models()
        return self._models

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_models": None, "cancel": None}

    def __call__(self, source, folder: Path) -> None:
        from .pipeline import read_case, run_case, write_case
        from .study import StudyInput

        if isinstance(source, StudyInput):
            if source.files is None:
                raise OsteoScreenError(source.selection.reason)
            case = read_case(source.path, self.kvp, self.contrast, source.files)
        else:
            case = read_case(source, self.kvp, self.contrast)
        outcome = run_case(self.models, case, self.model, cancel=self.cancel)
        if isinstance(source, StudyInput):
            outcome.result.series_selection = source.selection.to_json()
        write_case(case, outcome, folder, overwrite=True)


class _RayWorker:
    """A Ray actor: one processor (so one set of loaded models) for every case it is given."""

    def __init__(self, processor: ScreenProcessor):
        self.processor = processor

    def run(self, source, folder: str):
        status, error = run_one(self.processor, source, Path(folder))
        loaded = self.processor._models is not None
        return status, error, {"pid": os.getpid(), "models_id": id(self.processor._models) if loaded else None}


def run_batch_ray(
    inputs: list,
    output_dir: Path,
    processor: ScreenProcessor,
    overwrite: bool = False,
    progress: Callable[[int, int, str, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    address: str | None = None,
    workers: int | None = None,
) -> BatchSummary:
    """As :func:`batch.run_batch`, with the cases on Ray workers (``workers`` actors, default one per CPU)."""
    try:
        import ray
    except ImportError:
        raise OsteoScreenError("--engine ray needs Ray; install it with pip install osteoscreen[distributed]") from None
    if workers is not None and workers < 1:
        raise OsteoScreenError("--workers must be at least 1")
    output_dir = ensure_folder(output_dir)
    names = case_names(inputs)
    summary = BatchSummary(csv_path=output_dir / "results.csv")
    pending = []
    for source, case in zip(inputs, names):
        if (output_dir / case / RESULT_NAME).exists() and not overwrite:
            summary.skipped.append(case)
        else:
            pending.append((source, case))

    def table() -> None:
        write_csv(summary.csv_path, [csv_row(c, output_dir / c, s) for s, c in zip(inputs, names)])

    table()
    for n, case in enumerate(summary.skipped):
        if progress is not None:
            progress(n + 1, len(inputs), case, "skipped (done)")
    if pending:
        started_here = not ray.is_initialized()
        if started_here:
            _check_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # no cluster at that address, or Ray cannot start here
                where = address or "this machine"
                raise OsteoScreenError(f"cannot start or reach Ray on {where} ({exc.__class__.__name__}: "
                                       f"{str(exc).splitlines()[0] if str(exc) else ''}); check --address") from None
        try:
            _run_on_ray(ray, pending, output_dir, processor, summary, cancel, workers, progress, len(inputs), table)
        finally:
            if started_here:
                ray.shutdown()
    finish_tables(summary, output_dir, inputs, names)
    return summary


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address must answer within seconds: Ray itself retries for minutes."""
    if not address or address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except ValueError:
        raise OsteoScreenError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto; check --address") from None
    except OSError as exc:
        raise OsteoScreenError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); check --address "
                               "and that the cluster is running") from None


def _run_on_ray(ray, pending, output_dir, processor, summary, cancel, workers, progress, total, table) -> None:
    """Keep every worker busy with one case at a time; record each case as it returns."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_workers = max(1, min(workers or cpus, len(pending)))
    worker_class = ray.remote(num_cpus=1)(_RayWorker)
    free = [worker_class.remote(processor) for _ in range(n_workers)]
    in_flight: dict = {}
    queue = list(pending)
    done = len(summary.skipped)
    while queue or in_flight:
        while queue and free and not (cancel is not None and cancel()):
            source, case = queue.pop(0)
            actor = free.pop()
            in_flight[actor.run.remote(source, str(output_dir / case))] = (source, case, actor)
        if not in_flight:
            break  # cancelled
        (ref,), _ = ray.wait(list(in_flight), num_returns=1)
        source, case, actor = in_flight.pop(ref)
        try:
            status, error, worker = ray.get(ref)
            summary.workers.setdefault(worker["pid"], []).append((case, worker["models_id"]))
            free.append(actor)
        except ray.exceptions.RayError as exc:  # the worker died (out of memory, node lost): record, replace
            error = f"internal error: the Ray worker was lost ({exc.__class__.__name__})"
            write_json(output_dir / case / ERROR_NAME, error_record(source, error), overwrite=True)
            status = f"failed: {error}"
            free.append(ray.remote(num_cpus=1)(_RayWorker).remote(processor))
        if error is None:
            summary.done.append(case)
        else:
            summary.failed[case] = error
        done += 1
        table()
        if progress is not None:
            progress(done, total, case, status)
