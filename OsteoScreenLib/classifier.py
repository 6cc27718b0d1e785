"""The two osteoporosis classifiers (ONNX Runtime) and the result of one case.

Model 1 ``l1l2`` fuses the central images of L1 and L2; model 2 ``l1`` uses L1
alone (a shorter scan, less radiation). Both output the three QCT class
probabilities and an estimate of the mean BMD of L1 and L2 (mg/cm^3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OsteoScreenError
from .features import BodyFeatures, Preprocessing, body_features, scan_vector
from .model_store import model_folder, verified_files
from .onnx_runner import OnnxNetwork
from .registry import CLASSES, LABEL_OF, MODELS, qct_class  # MODELS: read by training too
from .segmenter import softmax
from .volume import Volume

def check_model_name(name: str) -> dict:
    if name not in MODELS:
        raise OsteoScreenError(f"unknown model {name!r}; choose l1l2 (L1 + L2) or l1 (L1 only)")
    return MODELS[name]


@dataclass
class Classification:
    model: str
    model_version: str
    model_sha256: str
    probabilities: dict[str, float]
    predicted_class: str
    bmd_mg_cm3: float
    features: dict[str, BodyFeatures]
    warnings: list[str] = field(default_factory=list)


class OsteoporosisClassifier:
    def __init__(self, model: str = "l1l2", folder: Path | None = None, threads: int | None = None):
        self.spec = check_model_name(model)
        self.name = model
        folder = model_folder(self.spec["folder"]) if folder is None else Path(folder)
        files, self.card = verified_files(folder)
        # how the images and the ROI are made: the card's, as the segmenter reads its own
        self.preprocessing = Preprocessing.from_card(self.card)
        self.net = OnnxNetwork(files["classifier"], threads)
        self.sha256 = self.card["files"]["classifier"]["sha256"]

    def classify(self, ct: Volume, labels: Volume, kvp: int | None = None, contrast: str | None = None) -> Classification:
        """Classify one case from its CT and L1/L2 label map on the CT grid.

        ``kvp``: the tube voltage (one of registry.TUBE_VOLTAGES_KVP); ``contrast``: the contrast
        phase (registry.CONTRAST_PHASES); None when unknown. The BMD estimate is more precise
        with them: single-energy QCT calibrates per voltage, and iodine raises the marrow's HU.
        """
        present = {n for n, v in LABEL_OF.items() if np.any(labels.array == v)}
        needed = self.spec["vertebrae"]
        missing = [n for n in needed if n not in present]
        if missing:
            hint = "; use model 2 (l1), which needs L1 only" if self.name == "l1l2" and missing == ["L2"] else ""
            raise OsteoScreenError(f"{' and '.join(missing)} not segmented: {self.spec['title']} needs {'+'.join(needed)}{hint}")
        features = {n: body_features(ct, labels, n, self.preprocessing) for n in needed}
        warnings = []
        for n in sorted(present - set(needed)):  # ROI HU is reported for every segmented level
            try:
                features[n] = body_features(ct, labels, n, self.preprocessing)
            except OsteoScreenError as exc:
                warnings.append(str(exc))
        if kvp is None:
            warnings.append("tube voltage unknown (the file does not record it): BMD estimated without it, "
                            "less precise; give it with --kvp or in the module")
        x = np.stack([features[n].network_image() for n in needed])[None]
        scan = scan_vector(kvp, [features[n].roi_hu for n in needed], contrast)[None]
        logits, bmd = self.net.run_all(x, scan)[:2]
        p = softmax(logits[0].astype(np.float64), axis=-1)
        probabilities = {c: round(float(v), 4) for c, v in zip(CLASSES, p)}
        predicted, bmd_value = CLASSES[int(np.argmax(p))], round(float(np.ravel(bmd)[0]), 1)
        bmd_class = qct_class(bmd_value)
        if bmd_class != predicted:  # the two heads disagree: a case near a threshold
            warnings.append(f"the class ({predicted}) and the estimated BMD ({bmd_value:.0f} mg/cm3, "
                            f"{bmd_class} range) disagree: the case lies near a threshold; read both")
        return Classification(
            model=self.name, model_version=self.card["version"], model_sha256=self.sha256,
            probabilities=probabilities, predicted_class=predicted,
            bmd_mg_cm3=bmd_value, features=features, warnings=warnings,
        )
