"""Model folders: weights verified by SHA-256 before use, clear errors otherwise."""

import json

import pytest

from OsteoScreenLib.errors import OsteoScreenError
from OsteoScreenLib.hashing import sha256_file
from OsteoScreenLib.model_store import list_models, verified_files


@pytest.fixture
def a_model_folder(tmp_path):
    folder = tmp_path / "Models" / "toy"
    folder.mkdir(parents=True)
    (folder / "net.onnx").write_bytes(b"not really onnx, but bytes to hash")
    card = {"name": "toy", "version": "1", "files": {"net": {"path": "net.onnx", "sha256": sha256_file(folder / "net.onnx")}}}
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def test_a_model_with_matching_checksum_is_accepted(a_model_folder):
    files, card = verified_files(a_model_folder)
    assert files["net"] == a_model_folder / "net.onnx" and card["name"] == "toy"


def test_a_tampered_model_file_is_refused(a_model_folder):
    (a_model_folder / "net.onnx").write_bytes(b"replaced weights")
    with pytest.raises(OsteoScreenError, match="does not match the model card"):
        verified_files(a_model_folder)
    assert "invalid" in list_models(a_model_folder.parent)[0]["status"]


def test_a_missing_card_or_weights_is_a_clear_error(a_model_folder):
    (a_model_folder / "net.onnx").unlink()
    with pytest.raises(OsteoScreenError, match="weights missing"):
        verified_files(a_model_folder)
    (a_model_folder / "model_card.json").unlink()
    with pytest.raises(OsteoScreenError, match="model card missing"):
        verified_files(a_model_folder)
