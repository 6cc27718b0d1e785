"""The bundled ONNX networks compute what their PyTorch definitions compute (training side)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("monai")

from OsteoScreenLib.model_store import model_folder, verified_files  # noqa: E402
from OsteoScreenLib.onnx_runner import OnnxNetwork  # noqa: E402

TOLERANCE = 1e-3  # max |softmax difference|, as training/segmentation/config.py ONNX_TOLERANCE


def torch_from_onnx(module, path):
    """Load the ONNX initializers into a PyTorch module with the same parameter names."""
    from onnx import numpy_helper

    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(str(path)).graph.initializer}
    state = module.state_dict()
    missing = [k for k in state if k not in weights and not k.endswith("num_batches_tracked")]
    assert not missing, f"ONNX lacks {missing[:3]}"
    module.load_state_dict({k: weights.get(k, v) for k, v in state.items()})
    return module.eval()


def softmax(z, axis=1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


@pytest.mark.parametrize("stage, shape", [("coarse", (1, 1, 32, 48, 48)), ("fine", (1, 3, 48, 48, 64))])
def test_segmentation_onnx_matches_pytorch(bundled_models, stage, shape):
    from training.segmentation.train import build_network

    files, _ = verified_files(model_folder("segmentation"))
    net = torch_from_onnx(build_network(stage), files[stage])
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        ref = softmax(net(torch.from_numpy(x)).numpy())
    got = softmax(OnnxNetwork(files[stage]).run(x))
    assert np.abs(got - ref).max() < TOLERANCE


@pytest.mark.parametrize("model", ["l1l2", "l1"])
def test_classifier_onnx_matches_pytorch(bundled_models, model):
    from training.classification.config import BMD_SCALE_MG_CM3, MODELS, NETWORK
    from training.classification.export import _Exported
    from training.classification.network import FusionClassifier

    files, card = verified_files(model_folder(f"classifier-{model}"))
    weights_net = torch_from_onnx(_Exported(FusionClassifier(len(MODELS[model]), **NETWORK)), files["classifier"])
    from training.classification.network import IMAGE_CHANNELS

    x = np.random.default_rng(1).normal(size=(3, len(MODELS[model]), IMAGE_CHANNELS, 128, 128)).astype(np.float32)
    with torch.no_grad():
        logits, bmd = (t.numpy() for t in weights_net(torch.from_numpy(x)))
    got = OnnxNetwork(files["classifier"]).run_all(x)
    assert np.abs(softmax(got[0]) - softmax(logits)).max() < 1e-4
    assert np.abs(got[1] - bmd).max() < 1e-4 * BMD_SCALE_MG_CM3
    assert json.dumps(card["files"])  # card lists the file it was checked against
