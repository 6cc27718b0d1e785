"""The bundled ONNX networks compute what their PyTorch definitions compute (training side).

The PyTorch weights are committed as plain arrays (training/weights/*.npz, no pickle);
the test rebuilds each network in PyTorch and compares it with ONNX Runtime.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from OsteoScreenLib.model_store import model_folder, verified_files  # noqa: E402
from OsteoScreenLib.onnx_runner import OnnxNetwork  # noqa: E402

TOLERANCE = 1e-3  # max |softmax difference|, as training/segmentation/config.py ONNX_TOLERANCE


def softmax(z, axis=1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


@pytest.mark.parametrize("stage, shape", [("coarse", (1, 1, 32, 48, 48)), ("fine", (1, 3, 48, 48, 64))])
def test_segmentation_onnx_matches_pytorch(bundled_models, stage, shape):
    from training.segmentation.export import load_state
    from training.segmentation.network import build_network

    files, _ = verified_files(model_folder("segmentation"))
    net = load_state(build_network(stage), f"segmentation-{stage}")
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        ref = softmax(net(torch.from_numpy(x)).numpy())
    got = softmax(OnnxNetwork(files[stage]).run(x))
    assert np.abs(got - ref).max() < TOLERANCE


def test_rib_check_onnx_matches_pytorch(bundled_models):
    from training.segmentation.export import load_state
    from training.segmentation.rib_check import build_network

    files, card = verified_files(model_folder("segmentation"))
    net = load_state(build_network(), "segmentation-rib_check")
    cfg = card["preprocessing"]["rib_check"]
    shape = [int(round(s / cfg["spacing_mm"])) for s in cfg["size_mm"][::-1]]
    x = np.random.default_rng(2).uniform(-1, 1, size=(4, 1, *shape)).astype(np.float32)
    with torch.no_grad():
        ref = torch.sigmoid(net(torch.from_numpy(x))).numpy()
    got = 1 / (1 + np.exp(-OnnxNetwork(files["rib_check"]).run(x)))
    assert got.shape == (4, 1) and np.abs(got - ref).max() < TOLERANCE


@pytest.mark.parametrize("model", ["l1l2", "l1"])
def test_classifier_onnx_matches_pytorch(bundled_models, model):
    from training.classification.config import BMD_SCALE_MG_CM3, MODELS
    from training.classification.export import build_exported
    from training.classification.network import IMAGE_CHANNELS
    from training.segmentation.export import load_state

    files, card = verified_files(model_folder(f"classifier-{model}"))
    seeds = [m["seed"] for m in card["training_data"].get("ensemble", [{"seed": 0}])]
    net = load_state(build_exported(model, seeds), f"classifier-{model}")
    from OsteoScreenLib.features import scan_vector

    v = len(MODELS[model])
    x = np.random.default_rng(1).normal(size=(3, v, IMAGE_CHANNELS, 128, 128)).astype(np.float32)
    scan = np.stack([scan_vector(80, [2.0] * v), scan_vector(140, [0.3] * v), scan_vector(None, [1.1] * v)])
    with torch.no_grad():
        logits, bmd = (t.numpy() for t in net(torch.from_numpy(x), torch.from_numpy(scan)))
    got = OnnxNetwork(files["classifier"]).run_all(x, scan)
    assert np.abs(softmax(got[0]) - softmax(logits)).max() < 1e-4
    assert np.abs(got[1] - bmd).max() < 1e-4 * BMD_SCALE_MG_CM3


def test_a_different_network_would_not_match(bundled_models):
    """The comparison can fail: a freshly initialised network differs from the bundled one."""
    from training.segmentation.network import build_network

    files, _ = verified_files(model_folder("segmentation"))
    torch.manual_seed(0)
    net = build_network("fine").eval()
    x = np.random.default_rng(0).normal(size=(1, 3, 48, 48, 64)).astype(np.float32)
    with torch.no_grad():
        ref = softmax(net(torch.from_numpy(x)).numpy())
    assert np.abs(softmax(OnnxNetwork(files["fine"]).run(x)) - ref).max() > TOLERANCE


def test_the_rib_check_alone_is_exported_into_a_copy_of_the_model_folder(bundled_models, tmp_path, monkeypatch):
    """export --rib-check-only RUN: a new rib check replaces the old one in an existing folder; the coarse
    and fine files stay byte for byte, the card names the new check's checksum and training, and the
    loader accepts the folder."""
    import json
    import shutil

    from training import model_card
    from training.segmentation import export
    from training.segmentation.rib_check import build_network

    folder = tmp_path / "segmentation"
    shutil.copytree(model_folder("segmentation"), folder)
    monkeypatch.setattr(export, "CHECKPOINTS", tmp_path / "checkpoints")
    monkeypatch.setattr(export, "WEIGHTS", tmp_path / "weights")  # never the committed weights
    monkeypatch.setattr(model_card, "WEIGHTS", tmp_path / "weights")  # (save_state writes there)
    torch.manual_seed(3)
    net = build_network().eval()  # a new network: other weights than the bundled check
    run = tmp_path / "checkpoints" / "rib-check-candidate"
    run.mkdir(parents=True)
    torch.save({"model": net.state_dict()}, run / "final.pt")
    config = {"preset": "chest-coarse", "costal_preset": "chest-coarse-costal", "levels": ["T12", "L1"],
              "train_boxes": 4, "train_cases": 2, "epochs": 1, "tune_boxes": 2, "tune_cases": 1,
              "best": {"tune_accuracy": 0.5}, "generator_version": "1.1.0"}
    before = json.loads((folder / "model_card.json").read_text())
    export.replace_rib_check(folder, config, run)
    assert not (tmp_path / "weights").exists()  # a candidate folder leaves the bundled weights alone
    files, card = verified_files(folder)
    for stage in ("coarse", "fine"):
        assert (folder / f"{stage}.onnx").read_bytes() == (model_folder("segmentation") / f"{stage}.onnx").read_bytes()
        assert card["files"][stage] == before["files"][stage]
        assert card["training_data"]["stages"][stage] == before["training_data"]["stages"][stage]
    assert card["files"]["rib_check"]["sha256"] != before["files"]["rib_check"]["sha256"]
    assert card["training_data"]["stages"]["rib_check"] == config and card["version"] == export.MODEL_VERSION
    assert "`chest-coarse` and `chest-coarse-costal`" in (folder / "model_card.md").read_text()
    x = np.random.default_rng(4).uniform(-1, 1, size=(2, 1, 12, 32, 40)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.abs(OnnxNetwork(files["rib_check"]).run(x) - ref).max() < 1e-4


@pytest.mark.parametrize("stage", ["coarse", "fine", "count"])
def test_one_stage_alone_is_exported_into_a_copy_of_the_model_folder(bundled_models, tmp_path, monkeypatch, stage):
    """``export --coarse-only / --fine-only / --count-only RUN --out CANDIDATE``: that stage's file and
    card entry change, the other stages stay byte for byte, the bundled weights are not touched."""
    import json
    import shutil

    from training import model_card
    from training.segmentation import export
    from training.segmentation.network import build_network

    folder = tmp_path / "segmentation"
    shutil.copytree(model_folder("segmentation"), folder)
    monkeypatch.setattr(model_card, "WEIGHTS", tmp_path / "weights")  # (save_state would write there)
    torch.manual_seed(5)
    net = build_network(stage).eval()  # a new network: other weights than the bundled stage
    run = tmp_path / "checkpoints" / f"{stage}-candidate"
    run.mkdir(parents=True)
    torch.save({"model": net.state_dict()}, run / "final.pt")
    config = {"stage": stage, "iterations": 1, "preset": "chest-box", "generator_version": "2.2.0"}
    (run / "config.json").write_text(json.dumps(config))
    before = json.loads((folder / "model_card.json").read_text())
    monkeypatch.setattr("sys.argv", ["export", f"--{stage}-only", str(run), "--out", str(folder)])
    export.main()
    assert not (tmp_path / "weights").exists()  # a candidate folder leaves the bundled weights alone
    files, card = verified_files(folder)
    for other in {"coarse", "fine", "count", "rib_check"} - {stage}:
        assert (folder / f"{other}.onnx").read_bytes() == (model_folder("segmentation") / f"{other}.onnx").read_bytes()
        assert card["files"][other] == before["files"][other]
    assert card["files"][stage]["sha256"] != before["files"][stage]["sha256"]
    assert card["training_data"]["stages"][stage] == config
    channels = export.NETWORKS[stage]["in_channels"]
    x = np.random.default_rng(6).uniform(-1, 1, size=(1, channels, 32, 48, 48)).astype(np.float32)
    with torch.no_grad():
        ref = softmax(net(torch.from_numpy(x)).numpy())
    assert np.abs(softmax(OnnxNetwork(files[stage]).run(x)) - ref).max() < TOLERANCE
