"""The segmentation networks (MONAI UNet) as the config defines them: one place for training,
sample preparation (the coarse stage's hints) and export."""

from __future__ import annotations

from monai.networks.nets import UNet

from .config import NETWORKS


def build_network(stage: str) -> UNet:
    return UNet(spatial_dims=3, **{"out_channels": 3, **NETWORKS[stage]})
