"""Shared fixtures. Everything runs on the real MRML of the slicer-core wheel."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TRAINING_TESTS = Path(__file__).resolve().parent / "training"  # tests of training/: need torch, MONAI ...
REAL_DATA_CANDIDATES = [REPO.parent / "shared" / "data" / "real", Path("/work/shared/data/real")]
REAL_DATA = Path(
    os.environ.get("OSTEOSCREEN_REAL_DATA")
    or next((p for p in REAL_DATA_CANDIDATES if p.is_dir()), REAL_DATA_CANDIDATES[0])
)


def _is_training_test(path: Path) -> bool:
    path = Path(path).resolve()
    return path == TRAINING_TESTS or TRAINING_TESTS in path.parents


def pytest_ignore_collect(collection_path, config):
    """With ``-m "not training"`` the training tests are not even imported (they import torch)."""
    if _is_training_test(collection_path) and "not training" in (config.getoption("markexpr") or ""):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Every test under Testing/Python/training carries the ``training`` marker."""
    for item in items:
        if _is_training_test(item.path):
            item.add_marker(pytest.mark.training)


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.fail(f"real CT cases not found at {REAL_DATA}; set OSTEOSCREEN_REAL_DATA")
    return REAL_DATA


@pytest.fixture
def a_scene():
    import slicer

    return slicer.vtkMRMLScene()


def oblique_matrix(spacing=(0.7, 0.8, 2.5), origin=(-120.5, 33.25, -401.0), angles_deg=(12.0, -7.0, 20.0), flips=(1, 1, 1)):
    """An IJK-to-RAS matrix with rotation, anisotropic spacing and optional flipped axes."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx @ np.diag(np.asarray(flips, float)) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def a_ct_array(shape=(12, 20, 24), seed=0):
    """A small int16 'CT' with air, soft tissue and a bright block at a known place."""
    rng = np.random.default_rng(seed)
    a = np.full(shape, -1000, np.int16)
    a[2:-2, 3:-3, 3:-3] = 40 + rng.integers(-20, 20, (shape[0] - 4, shape[1] - 6, shape[2] - 6))
    a[5:8, 8:12, 10:15] = 700
    return a


def assert_same_in_world(actual, expected, atol_mm=1e-4):
    """Every voxel of ``expected`` sits at the same world position, with the same value, in ``actual``.

    Slicer's readers store a left-handed grid right-handed (one axis reversed); the
    voxel-to-world mapping of the content is what must survive, within ``atol_mm``.
    """
    kji = np.argwhere(np.ones(expected.array.shape[:3], bool))
    world = expected.voxel_centers_ras(kji)
    ijk = (actual.ras_to_ijk @ np.c_[world, np.ones(len(world))].T).T[:, :3]
    spacing = actual.spacing_mm
    assert np.abs((ijk - np.round(ijk)) * spacing).max() < atol_mm
    i, j, k = np.round(ijk).astype(int).T
    assert actual.array.shape == expected.array.shape or sorted(actual.array.shape) == sorted(expected.array.shape)
    np.testing.assert_array_equal(actual.array[k, j, i], expected.array[tuple(kji.T)])


@pytest.fixture(scope="session")
def bundled_models():
    """The bundled ONNX models; a checkout without them fails these tests (they are committed)."""
    from OsteoScreenLib.model_store import list_models

    models = {m["name"]: m for m in list_models()}
    for name in ("segmentation", "classifier-l1l2", "classifier-l1"):
        if models.get(name, {}).get("status") != "ok":
            pytest.fail(f"bundled model {name} missing or invalid: run training/reproduce.sh")
    return models


@pytest.fixture(scope="session")
def a_chest_phantom(tmp_path_factory):
    """A full-size chest phantom from the test split (seed 300000), written as NIfTI."""
    from OsteoScreenLib.phantom import generate_case, write_case

    case = generate_case(300000, "chest")
    folder = write_case(case, tmp_path_factory.mktemp("phantom") / "case", fmt="nifti")
    return case, folder
