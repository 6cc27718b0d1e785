"""Bundled models: self-describing folders under ``Resources/Models/``.

Each folder holds ``model.onnx`` and ``model_card.json`` (read by the code;
``model_card.md`` is for people). The weights are verified by SHA-256 against
the card before any use; ONNX files are protobuf, never pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import OsteoScreenError
from .hashing import sha256_file
from .paths import models_dir

CARD_NAME = "model_card.json"


def read_card(folder: Path) -> dict:
    card_path = folder / CARD_NAME
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise OsteoScreenError(f"{card_path}: model card missing; reinstall OsteoScreen") from None
    except json.JSONDecodeError as exc:
        raise OsteoScreenError(f"{card_path}: model card is not valid JSON ({exc.msg})") from None
    for key in ("name", "version", "weights", "sha256"):
        if key not in card:
            raise OsteoScreenError(f"{card_path}: model card lacks {key!r}; reinstall OsteoScreen")
    return card


def verified_weights(folder: Path) -> tuple[Path, dict]:
    """The weights file of a model folder and its card, after checking the SHA-256."""
    card = read_card(folder)
    weights = folder / card["weights"]
    if not weights.is_file():
        raise OsteoScreenError(f"{weights}: model weights missing; reinstall OsteoScreen")
    actual = sha256_file(weights)
    if actual != card["sha256"]:
        raise OsteoScreenError(
            f"{weights}: SHA-256 {actual[:12]}... does not match the model card "
            f"({card['sha256'][:12]}...); the file is corrupt or was replaced: reinstall OsteoScreen"
        )
    return weights, card


def list_models(root: Path | None = None) -> list[dict]:
    """Every bundled model with its checksum status (for ``osteoscreen info``)."""
    root = models_dir() if root is None else root
    out = []
    if not root.is_dir():
        return out
    for card_path in sorted(root.glob(f"*/{CARD_NAME}")):
        folder = card_path.parent
        try:
            weights, card = verified_weights(folder)
            out.append({"name": card["name"], "version": card["version"], "sha256": card["sha256"],
                        "path": str(weights), "status": "ok"})
        except OsteoScreenError as exc:
            out.append({"name": folder.name, "sha256": "?", "path": str(folder), "status": f"invalid: {exc}"})
    return out
