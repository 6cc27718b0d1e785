"""A generated phantom: CT, labels, levels and the metadata that describes them."""

from __future__ import annotations

from dataclasses import dataclass

from ..volume import Volume


@dataclass
class PhantomCase:
    ct: Volume  # int16 HU
    labels: Volume  # uint8: 0 background, 1 = L1 body, 2 = L2 body
    levels: Volume  # uint8: whole vertebrae with VerSe ids
    meta: dict  # JSON-serialisable: seed, version, preset, BMD, class and every parameter
