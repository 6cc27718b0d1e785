"""The classifier network: one shared 2D encoder per vertebra, late fusion by concatenation.

Why late fusion: each body is encoded by the same weights (twice the data for the
encoder), the fused head compares the two levels, and model 2 is the same network
with one input, so both models differ only in what they see.
"""

from __future__ import annotations

import torch
from torch import nn

from OsteoScreenLib.features import scan_vector_size

IMAGE_CHANNELS = 2  # masked body, unmasked context (features.network_image)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class VertebraEncoder(nn.Module):
    def __init__(self, width: int, features: int):
        super().__init__()
        w = width
        self.body = nn.Sequential(_block(IMAGE_CHANNELS, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 4 * w))
        self.project = nn.Linear(4 * w * 2, features)  # global mean + max pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return torch.relu(self.project(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)))


class FusionClassifier(nn.Module):
    """Inputs: images (N, V, C, H, W), V vertebrae with C channels each (features.network_image),
    and the scan vector (N, S) of features.scan_vector (tube voltage, ROI HU). Outputs class
    logits (N, 3) and BMD / 100 (N, 1).

    The scan vector also reaches both outputs through linear skips: the per-voltage HU-to-BMD
    line is then learnt directly, and the image branch only has to learn what it misses.
    """

    def __init__(self, n_vertebrae: int, width: int = 24, features: int = 96, dropout: float = 0.2):
        super().__init__()
        self.n = n_vertebrae
        scan = scan_vector_size(n_vertebrae)
        self.encoder = VertebraEncoder(width, features)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features * n_vertebrae + scan, features),
                                  nn.ReLU(inplace=True))
        self.classes = nn.Linear(features, 3)
        self.bmd = nn.Linear(features, 1)
        self.classes_skip = nn.Linear(scan, 3)
        self.bmd_skip = nn.Linear(scan, 1)

    def forward(self, x: torch.Tensor, scan: torch.Tensor):
        n, v, c, h, w = x.shape
        f = self.encoder(x.reshape(n * v, c, h, w)).reshape(n, -1)
        z = self.head(torch.cat([f, scan], 1))
        return self.classes(z) + self.classes_skip(scan), self.bmd(z) + self.bmd_skip(scan)
