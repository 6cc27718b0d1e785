"""Bundled models: self-describing folders under ``Resources/Models/``.

Each folder holds its ONNX weights and ``model_card.json`` (read by the code;
``model_card.md`` is for people). The card lists every weights file with its
SHA-256; files are verified before any use, and ONNX files are protobuf, never
pickle. Inference is rebuilt from the folder alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import OsteoScreenError
from .hashing import sha256_file
from .paths import models_dir

CARD_NAME = "model_card.json"
CARD_SCHEMA = "osteoscreen.model_card/1"


def read_card(folder: Path) -> dict:
    card_path = Path(folder) / CARD_NAME
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise OsteoScreenError(f"{card_path}: model card missing; reinstall OsteoScreen or retrain the model") from None
    except json.JSONDecodeError as exc:
        raise OsteoScreenError(f"{card_path}: model card is not valid JSON ({exc.msg}); reinstall OsteoScreen") from None
    for key in ("name", "version", "files"):
        if key not in card:
            raise OsteoScreenError(f"{card_path}: model card lacks {key!r}; reinstall OsteoScreen")
    return card


def verified_files(folder: Path) -> tuple[dict[str, Path], dict]:
    """The weights files of a model folder (role -> path) and its card, after checking SHA-256."""
    folder = Path(folder)
    card = read_card(folder)
    files = {}
    for role, entry in card["files"].items():
        path = folder / entry["path"]
        if not path.is_file():
            raise OsteoScreenError(f"{path}: model weights missing; reinstall OsteoScreen")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise OsteoScreenError(
                f"{path}: SHA-256 {actual[:12]}... does not match the model card "
                f"({entry['sha256'][:12]}...); the file is corrupt or was replaced: reinstall OsteoScreen"
            )
        files[role] = path
    return files, card


def model_folder(name: str, root: Path | None = None) -> Path:
    folder = (models_dir() if root is None else Path(root)) / name
    if not (folder / CARD_NAME).is_file():
        raise OsteoScreenError(f"model {name!r} is not installed at {folder}; train it (see README) or reinstall")
    return folder


def list_models(root: Path | None = None) -> list[dict]:
    """Every bundled model with its checksum status (for ``osteoscreen info``)."""
    root = models_dir() if root is None else Path(root)
    out = []
    if not root.is_dir():
        return out
    for card_path in sorted(root.glob(f"*/{CARD_NAME}")):
        folder = card_path.parent
        try:
            files, card = verified_files(folder)
            out.append({"name": card["name"], "version": card["version"], "status": "ok",
                        "files": {role: {"path": str(p), "sha256": card["files"][role]["sha256"]}
                                  for role, p in files.items()}})
        except OsteoScreenError as exc:
            out.append({"name": folder.name, "version": "?", "status": f"invalid: {exc}", "files": {}})
    return out
