"""The result of one case and every way it is shown: one place to add a field.

``CaseResult`` is what :func:`pipeline.run_case` returns. It renders itself as
result.json (schema ``osteoscreen.result/1``), as the CLI's text, as the rows of
the Slicer results table, as a row of the batch's results.csv, and as the text
lines of the report image. ``CaseResult.from_json`` reads result.json back (the
batch table is rebuilt from the case folders).
"""

from __future__ import annotations

import html
import platform
from dataclasses import dataclass, field, fields

from . import __version__
from .registry import CLASSES, FRACTURE_GRADE_NAMES, MODELS, VERTEBRA_NAMES

RESULT_SCHEMA = "osteoscreen.result/1"
STUDY_FIELDS = ["patient_id", "study_uid", "study_date", "accession_number", "series_uid", "series_description",
                "series_kernel", "series_reason", "skipped_series"]
CSV_FIELDS = (
    ["case", "input", "status", "model", "class"]
    + [f"p_{c}" for c in CLASSES]
    + ["bmd_mg_cm3", "tube_voltage_kvp", "contrast_phase"]
    + [f"{n}_roi_hu" for n in VERTEBRA_NAMES]
    + [f"{n}_volume_ml" for n in VERTEBRA_NAMES]
    + ["fracture_finding"]
    + [f"{n}_{f}" for n in VERTEBRA_NAMES for f in ("fracture_grade", "fracture_type", "height_loss",
                                                    "anterior_mm", "middle_mm", "posterior_mm")]
    + ["warnings", "error"]
    # a study of an archive (study.py): identifiers as found, the series read, the others and why
    + STUDY_FIELDS
    + ["osteoscreen_version", "model_version"]
)


@dataclass
class InputInfo:
    """The scan as read, and the scan settings the classifiers used."""

    path: str | None = None
    sha256: str | None = None
    shape: list[int] = field(default_factory=list)
    spacing_mm: list[float] = field(default_factory=list)
    tube_voltage_kvp: int | None = None
    tube_voltage_source: str = "unknown"
    contrast_phase: str | None = None  # as the reader gave it; None: unknown

    @classmethod
    def of(cls, path, ct, sha256, scan=None) -> "InputInfo":
        """From a Volume and its :class:`pipeline.ScanSettings` (None: nothing known)."""
        return cls(str(path) if path is not None else None, sha256, list(ct.shape_ijk),
                   [round(float(s), 4) for s in ct.spacing_mm],
                   scan.kvp if scan else None, scan.kvp_source if scan else "unknown",
                   scan.contrast if scan else None)

    def scan_text(self) -> str:
        kvp = f"{self.tube_voltage_kvp} kVp" if self.tube_voltage_kvp else "unknown"
        return f"{kvp}, contrast {self.contrast_phase or 'unknown'}"


@dataclass
class VertebraResult:
    volume_ml: float | None = None
    centroid_mm: list[float] = field(default_factory=list)
    trabecular_roi_hu: float | None = None  # None: not measured (e.g. L2 with model 2 failing on it)
    roi_area_mm2: float | None = None


@dataclass
class FractureResult:
    """Genant grade of one vertebral body from its heights (fracture.py); grade None: not assessed (``note``)."""

    grade: int | None = None  # 0 normal, 1 mild, 2 moderate, 3 severe
    type: str | None = None  # wedge, biconcave or crush where grade >= 1
    height_loss: float | None = None  # the largest of ``losses`` (0..1)
    anterior_mm: float | None = None
    middle_mm: float | None = None
    posterior_mm: float | None = None
    losses: dict = field(default_factory=dict)  # type -> fraction of height lost (negative: taller)
    reference: str = ""  # what the heights were compared with ("own posterior height", "L2 posterior height")
    note: str = ""

    def summary(self) -> str:
        if self.grade is None:
            return f"fracture not assessed ({self.note})"
        heights = f"heights A/M/P {self.anterior_mm:.1f}/{self.middle_mm:.1f}/{self.posterior_mm:.1f} mm"
        if self.grade == 0:
            return f"{heights}, Genant grade 0"
        return (f"{heights}, Genant grade {self.grade} ({FRACTURE_GRADE_NAMES[self.grade]}) {self.type} fracture, "
                f"{self.height_loss:.0%} height loss")


@dataclass
class ModelInfo:
    name: str
    version: str
    sha256: str

    @property
    def title(self) -> str:
        return MODELS[self.name]["title"] if self.name in MODELS else self.name


@dataclass
class Prediction:
    class_name: str  # one of registry.CLASSES
    probabilities: dict[str, float]
    bmd_mg_cm3: float


@dataclass
class CaseResult:
    input: InputInfo
    segmentation_source: str
    vertebrae: dict[str, VertebraResult]
    model: ModelInfo | None = None
    prediction: Prediction | None = None  # None: segmented only (no bundled classifier)
    warnings: list[str] = field(default_factory=list)
    timing_s: dict = field(default_factory=dict)
    segmentation_path: str | None = None  # relative to result.json, where the segmentation was saved with it
    dicom_files: dict[str, str] = field(default_factory=dict)  # {"seg": ..., "sr": ...} beside result.json
    reference_agreement: dict | None = None  # the demo: the segments against the case's reference labels
    fractures: dict[str, FractureResult] = field(default_factory=dict)  # name -> Genant grade (fracture.py)
    series_selection: dict | None = None  # a study of an archive: the series read and those skipped (study.py)
    osteoscreen_version: str = __version__
    machine: str = field(default_factory=platform.platform)

    # --- result.json

    def to_json(self) -> dict:
        segmentation = {"source": self.segmentation_source}
        if self.segmentation_path is not None:
            segmentation["path"] = self.segmentation_path
        out = {
            "schema": RESULT_SCHEMA,
            "osteoscreen_version": self.osteoscreen_version,
            "input": dict(vars(self.input)),
            "segmentation": segmentation,
            "model": dict(vars(self.model)) if self.model else None,
            "prediction": None if self.prediction is None else {
                "class": self.prediction.class_name,
                "probabilities": dict(self.prediction.probabilities),
                "bmd_mg_cm3": self.prediction.bmd_mg_cm3,
            },
            "vertebrae": {n: dict(vars(v)) for n, v in self.vertebrae.items()},
            "warnings": list(self.warnings),
            "timing_s": dict(self.timing_s),
            "machine": self.machine,
        }
        if self.dicom_files:
            out["dicom"] = dict(self.dicom_files)
        if self.reference_agreement is not None:
            out["reference_agreement"] = self.reference_agreement
        if self.series_selection is not None:
            out["series_selection"] = self.series_selection
        if self.fractures:  # absent: not assessed (segment only, or a version before 0.9)
            out["fractures"] = {n: dict(vars(f)) for n, f in self.fractures.items()}
        return out

    @classmethod
    def from_json(cls, d: dict) -> "CaseResult":
        """Read result.json back; fields an older version did not write are left empty."""
        pred, model = d.get("prediction"), d.get("model")
        return cls(
            input=_known(InputInfo, d.get("input", {})),
            segmentation_source=d.get("segmentation", {}).get("source", "unknown"),
            segmentation_path=d.get("segmentation", {}).get("path"),
            vertebrae={n: _known(VertebraResult, v) for n, v in d.get("vertebrae", {}).items()},
            model=ModelInfo(model["name"], model.get("version", ""), model.get("sha256", "")) if model else None,
            prediction=Prediction(pred["class"], dict(pred["probabilities"]), pred["bmd_mg_cm3"]) if pred else None,
            warnings=list(d.get("warnings", [])),
            timing_s=dict(d.get("timing_s", {})),
            dicom_files=dict(d.get("dicom", {})),
            reference_agreement=d.get("reference_agreement"),
            fractures={n: _known(FractureResult, f) for n, f in (d.get("fractures") or {}).items()},
            series_selection=d.get("series_selection"),
            osteoscreen_version=d.get("osteoscreen_version", ""),
            machine=d.get("machine", ""),
        )

    # --- people

    def measured(self) -> dict[str, VertebraResult]:
        """The vertebrae whose trabecular ROI was measured."""
        return {n: v for n, v in self.vertebrae.items() if v.trabecular_roi_hu is not None}

    def findings(self) -> list[str]:
        """What the reader must see first: each vertebral fracture of Genant grade 1 or more."""
        out = []
        for name, f in self.fractures.items():
            if f.grade:
                out.append(f"{name} vertebral fracture, Genant grade {f.grade} ({FRACTURE_GRADE_NAMES[f.grade]}, "
                           f"{f.type}, {f.height_loss:.0%} height loss): a fragility fracture means osteoporosis "
                           "whatever the BMD; confirm on the images")
        return out

    def text_lines(self, warning_label: str = "warning") -> list[str]:
        """The command line's summary (``classify``, ``demo``): findings first."""
        lines = [f"  FINDING: {f}" for f in self.findings()]
        if self.prediction is not None:
            p = self.prediction
            probs = "  ".join(f"P({c}) {v:.2f}" for c, v in p.probabilities.items())
            lines.append(f"  {p.class_name} (model {self.model.name}), estimated BMD {p.bmd_mg_cm3:.0f} mg/cm3; {probs}")
        for name, v in self.vertebrae.items():
            roi = f", trabecular ROI {v.trabecular_roi_hu:.0f} HU" if v.trabecular_roi_hu is not None else ""
            fracture = f"; {self.fractures[name].summary()}" if name in self.fractures else ""
            lines.append(f"  {name}: {v.volume_ml:.1f} ml{roi}{fracture}")
        for name, a in (self.reference_agreement or {}).items():
            if "fraction_inside_reference" in a:
                lines.append(f"  model {name} vs reference labels: centroid inside {a['centroid_in_reference']}, "
                             f"{a['fraction_inside_reference']:.0%} of voxels inside")
        lines += [f"  {warning_label}: {w}" for w in self.warnings]
        return lines

    def table_rows(self) -> list[tuple[str, str]]:
        """(measure, value) rows of the results table in Slicer: findings first."""
        rows = [("Finding", f) for f in self.findings()]
        if self.prediction is not None:
            p = self.prediction
            rows += [("Model", f"{self.model.name} v{self.model.version}"), ("Class", p.class_name)]
            rows += [(f"P({c})", f"{v:.3f}") for c, v in p.probabilities.items()]
            rows.append(("Estimated BMD (mg/cm3)", f"{p.bmd_mg_cm3:.1f}"))
        i = self.input
        rows.append(("Tube voltage (kVp)", f"{i.tube_voltage_kvp} ({i.tube_voltage_source})" if i.tube_voltage_kvp
                     else "unknown"))
        rows.append(("Contrast phase", i.contrast_phase or "unknown"))
        for name, v in self.vertebrae.items():
            if v.trabecular_roi_hu is not None:
                rows.append((f"{name} trabecular ROI (HU)", f"{v.trabecular_roi_hu:.1f}"))
            rows.append((f"{name} volume (ml)", f"{v.volume_ml:.1f}"))
            if name in self.fractures:
                rows.append((f"{name} fracture (Genant)", self.fractures[name].summary()))
        rows += [("Warning", w) for w in self.warnings]
        return rows

    def html(self) -> str:
        """Rich text for the Slicer panel."""
        p, i = self.prediction, self.input
        lines = [f'<b style="color:#c00000">{html.escape(f)}</b>' for f in self.findings()]
        if p is not None:
            lines.append(f"<b>{p.class_name.capitalize()}</b> ({self.model.title}, v{self.model.version})")
            lines.append("Probabilities: " + ", ".join(f"{c} {v:.2f}" for c, v in p.probabilities.items()))
            lines.append(f"Estimated BMD: {p.bmd_mg_cm3:.1f} mg/cm\u00b3")
        lines.append(f"Tube voltage: {i.tube_voltage_kvp} kVp ({i.tube_voltage_source})" if i.tube_voltage_kvp
                     else "Tube voltage: unknown")
        lines.append(f"Contrast phase: {i.contrast_phase or 'unknown'}")
        lines += [f"{n} trabecular ROI: {v.trabecular_roi_hu:.1f} HU" for n, v in self.measured().items()]
        lines += [f"{n}: {html.escape(f.summary())}" for n, f in self.fractures.items()]
        lines += [f'<span style="color:#b36b00">Warning: {html.escape(w)}</span>' for w in self.warnings]
        return "<br>".join(lines)

    def csv_row(self) -> dict:
        """The fields of this case in results.csv (``case``, ``input`` and ``status`` come from the batch)."""
        p = self.prediction
        row = {"status": "ok", "model": self.model.name if self.model else None,
               "class": p.class_name if p else None, "bmd_mg_cm3": p.bmd_mg_cm3 if p else None,
               "tube_voltage_kvp": self.input.tube_voltage_kvp, "contrast_phase": self.input.contrast_phase,
               "warnings": " | ".join(self.warnings), "osteoscreen_version": self.osteoscreen_version,
               "model_version": self.model.version if self.model else None}
        row.update(selection_row(self.series_selection))
        row.update({f"p_{c}": p.probabilities[c] if p else None for c in CLASSES})
        for n in VERTEBRA_NAMES:
            v = self.vertebrae.get(n)
            row[f"{n}_roi_hu"] = v.trabecular_roi_hu if v else None
            row[f"{n}_volume_ml"] = v.volume_ml if v else None
            f = self.fractures.get(n)
            row.update({f"{n}_fracture_grade": f.grade if f else None, f"{n}_fracture_type": f.type if f else None,
                        f"{n}_height_loss": f.height_loss if f else None})
            row.update({f"{n}_{k}_mm": getattr(f, f"{k}_mm") if f else None
                        for k in ("anterior", "middle", "posterior")})
        row["fracture_finding"] = " | ".join(self.findings())
        return row

    def report_lines(self, image_fov_mm: float) -> list[tuple[str, str]]:
        """(text, style) lines of the report image below its views; style: title, figure, note or warning."""
        p = self.prediction
        probs = "  ".join(f"{c} {v:.2f}" for c, v in p.probabilities.items())
        rois = "   ".join(f"{n} {v.trabecular_roi_hu:.0f} HU" for n, v in self.measured().items())
        grades = "   ".join(f"{n} grade {f.grade} {f.type or ''}".rstrip() if f.grade is not None
                           else f"{n} not assessed" for n, f in self.fractures.items())
        fracture_lines = [(f"fracture (Genant): {grades}; heights A/M/P in the sagittal view", "figure")
                          ] if grades else []
        return [(f"FRACTURE: {f}", "finding") for f in self.findings()] + [
            (f"{p.class_name.upper()}   estimated BMD {p.bmd_mg_cm3:.0f} mg/cm3 (mean of L1 and L2)", "title"),
            (f"probabilities: {probs}", "figure"),
            (f"trabecular ROI: {rois}", "figure"),
            *fracture_lines,
            (f"model {self.model.name} v{self.model.version}; tube voltage {self.input.scan_text()}; "
             f"axial views {image_fov_mm:.0f} mm, ROI in red", "note"),
        ] + [(f"warning: {w}", "warning") for w in self.warnings[:3]]


def selection_row(selection: dict | None) -> dict:
    """The study columns of results.csv from a study's ``series_selection`` (None: not a study)."""
    if not selection:
        return {}
    chosen = selection.get("chosen") or {}
    skipped = " | ".join(f"{s.get('description') or s.get('series_uid')}: {s.get('reason')}"
                         for s in selection.get("skipped", []))
    return {"patient_id": selection.get("patient_id"), "study_uid": selection.get("study_uid"),
            "study_date": selection.get("study_date"), "accession_number": selection.get("accession_number"),
            "series_uid": chosen.get("series_uid"), "series_description": chosen.get("description"),
            "series_kernel": chosen.get("kernel"), "series_reason": chosen.get("reason") or selection.get("error"),
            "skipped_series": skipped}


def _known(cls, d: dict):
    """A dataclass from the keys of ``d`` it knows (others, e.g. a later version's, are ignored)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
