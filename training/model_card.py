"""Model-card helpers shared by the segmentation and classification recipes.

Both recipes write a self-describing model folder (``Resources/Models/<name>/``: weights,
``model_card.json`` read by the code, ``model_card.md`` read by people) and keep the PyTorch
weights beside it as plain arrays; these helpers are the one place for both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from OsteoScreenLib.model_store import CARD_NAME

WEIGHTS = Path(__file__).resolve().parent / "weights"


def save_state(net: torch.nn.Module, name: str) -> Path:
    """The PyTorch weights beside the ONNX file, as plain arrays (.npz, no pickle): tests
    rebuild the PyTorch network from them and compare it with ONNX Runtime."""
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    path = WEIGHTS / f"{name}.npz"
    np.savez_compressed(path, **{k: v.detach().cpu().numpy() for k, v in net.state_dict().items()})
    return path


def source_commit() -> str | None:
    """The git commit the training code and phantom generator came from (None outside git)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ":/OsteoScreenLib", ":/training"],
                               capture_output=True, text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


# Training runs record the generator version of their phantoms from 1.1.0 on; the runs before
# that did not, and all of them learnt from generator 1.0.0.
UNRECORDED_GENERATOR_VERSION = "1.0.0"


def generator_of(cfg: dict) -> str:
    return cfg.get("generator_version", UNRECORDED_GENERATOR_VERSION)


def generator_versions(train_configs: dict) -> str:
    """'1.1.0' when every stage learnt from one version, else 'coarse 1.1.0, fine 1.0.0, ...'."""
    versions = {stage: generator_of(cfg) for stage, cfg in train_configs.items() if cfg}
    if len(set(versions.values())) == 1:
        return next(iter(versions.values()))
    return ", ".join(f"{stage.replace('_', ' ')} {v}" for stage, v in versions.items())


def card_markdown(card: dict) -> str:
    lines = [f"# Model card: {card['name']} {card['version']}", "", card["task"], "",
             "## Files", ""]
    lines += [f"- `{f['path']}` ({f['format']}), SHA-256 `{f['sha256']}`" for f in card["files"].values()]
    lines += ["", "## Training data", "", card["training_data"]["source"] + ".",
              f"Generator version {card['training_data']['generator_version']}; seeds: "
              + ", ".join(f"{k} {v[1]} from {v[0]}" for k, v in card["training_data"]["splits_first_seed_and_count"].items()),
              ""]
    if card["training_data"].get("reference_standard"):
        lines += [f"Labels: {card['training_data']['reference_standard']}.", ""]
    for stage, cfg in card["training_data"].get("stages", {}).items():
        if cfg:
            lines.append(_stage_line(stage, cfg))
    lines += ["", "## Preprocessing", "", "```", json.dumps(card["preprocessing"], indent=1), "```", "",
              "## Labels", ""]
    lines += [f"- {k}: {v}" for k, v in card["labels"].items()]
    lines += ["", "## Metrics", "", "```", json.dumps(card["metrics"], indent=1), "```", "",
              "## Intended use", "", card["intended_use"], "", "## Limits", ""]
    lines += [f"- {x}" for x in card["limits"]]
    return "\n".join(lines) + "\n"


def _stage_line(stage: str, cfg: dict) -> str:
    """One line per stage: which phantoms, how long, and what it started from."""
    if "train_boxes" in cfg:  # the rib check
        extra = [f"`{cfg['rib_swap_preset']}` (the same cases with ribs moved between vertebrae, so that the shape "
                 "of a vertebra does not tell)" if cfg.get("rib_swap_preset") else "",
                 f"`{cfg['body_joint_preset']}` (the lowest two rib pairs joined to their body only)"
                 if cfg.get("body_joint_preset") else "",
                 f"`{cfg['costal_preset']}` (ribs running as on real CT beside the spine: heads at the back corner of "
                 "the body, out and back to the rib angle)" if cfg.get("costal_preset") else ""]
        names = [f"`{cfg['preset']}`"] + [e for e in extra if e]
        presets = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        line = (f"- rib check: presets {presets}, {cfg['train_boxes']} vertebra boxes ({', '.join(cfg['levels'])}) "
                f"of {cfg['train_cases']} training seeds, {cfg['epochs']} epochs; tune accuracy "
                f"{cfg['best']['tune_accuracy']} on {cfg['tune_boxes']} boxes of {cfg['tune_cases']} seeds")
        if cfg.get("augment"):
            line += (f" ({cfg['best']['tune_accuracy_narrowest']} cut to the narrowest field of view checked); "
                     "augmented: turned, cut at the sides and front like a spine-cropped scan, degraded")
        if cfg.get("init"):
            c = cfg["init"]["config"]
            line += (f"; started from `{cfg['init']['run']}` ({c['epochs']} epochs, generator {generator_of(c)}, "
                     f"{'augmented' if c.get('augment') else 'not augmented'})")
        return line + f"; phantoms of generator {generator_of(cfg)}."
    line = (f"- {stage} stage: presets `{cfg.get('preset')}`, {cfg.get('train_count')} training seeds "
            f"({cfg.get('train_samples', cfg.get('train_count'))} samples), {cfg.get('iterations')} iterations, "
            f"batch {cfg.get('batch')}, lr {cfg.get('lr')}")
    if cfg.get("augment"):
        line += (f"; augmented: hints moved up to {cfg['augment']['hint_shift_mm'][0]:g} mm" if stage == "fine" else
                 "; augmented: turned, cut to short or spine-cropped fields of view, blurred or sharpened, noisier")
        if stage == "count":
            line += "; scans starting anywhere in the thorax and ending anywhere in the lumbar spine"
        if stage in ("coarse", "count") and "p_remap" in cfg["augment"]:
            line += "; domain randomisation: tissue values remapped, a bias field, bright blobs that are not bone"
            line += ", short scans down to the L1-L2 disc" if stage == "coarse" else ""
        if stage == "fine" and "p_remap" in cfg["augment"]:
            line += "; domain randomisation of the CT: tissue values remapped, a bias field"
    init = cfg.get("init")
    if init:
        c = init["config"]
        line += (f"; started from `{init['run']}` (presets `{c.get('preset')}`, {c.get('train_count')} seeds, "
                 f"{c.get('iterations')} iterations, generator {generator_of(c)})")
    return line + f"; phantoms of generator {generator_of(cfg)}."


def update_card(folder: Path, metrics: dict) -> None:
    card_path = folder / CARD_NAME
    card = json.loads(card_path.read_text())
    card["metrics"] = {**card.get("metrics", {}), **metrics}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    (folder / "model_card.md").write_text(card_markdown(card))
