"""A volume is a voxel array together with its voxel-to-world transform.

Conventions (those of Slicer's ``slicer.util.arrayFromVolume``):
``array`` is indexed ``[k, j, i]`` (slice, row, column) and ``ijk_to_ras`` maps
the homogeneous voxel index ``(i, j, k, 1)`` to world RAS millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# RAS <-> LPS: flip the first two world axes.
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    array: np.ndarray
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if self.ijk_to_ras.shape != (4, 4):
            raise ValueError("ijk_to_ras must be a 4x4 matrix")

    @classmethod
    def from_geometry(cls, array, spacing_mm, origin_ras, directions=None) -> "Volume":
        """Build from spacing (i, j, k), origin (RAS mm) and direction columns (3x3)."""
        directions = np.eye(3) if directions is None else np.asarray(directions, float)
        m = np.eye(4)
        m[:3, :3] = directions * np.asarray(spacing_mm, float)[None, :]
        m[:3, 3] = origin_ras
        return cls(np.asarray(array), m)

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.array.shape[:3]
        return (i, j, k)

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin_ras(self) -> np.ndarray:
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def directions(self) -> np.ndarray:
        """Unit direction columns of the i, j, k axes in RAS."""
        return self.ijk_to_ras[:3, :3] / self.spacing_mm[None, :]

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry, other voxels (e.g. a label map on the CT grid)."""
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"array shape {array.shape} does not match volume {self.array.shape}")
        return Volume(array, self.ijk_to_ras.copy())

    def voxel_centers_ras(self, kji: np.ndarray) -> np.ndarray:
        """World RAS positions of voxel indices given as rows of (k, j, i)."""
        kji = np.atleast_2d(np.asarray(kji, float))
        ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
        return (self.ijk_to_ras @ ijk1.T).T[:, :3]

    def same_grid(self, other: "Volume", tol_mm: float = 1e-4) -> bool:
        return self.array.shape[:3] == other.array.shape[:3] and np.allclose(
            self.ijk_to_ras, other.ijk_to_ras, atol=tol_mm
        )

    def axis_codes(self) -> str:
        """Orientation code like 'RAS' or 'LPS': the world direction each voxel axis points to."""
        letters = (("L", "R"), ("P", "A"), ("I", "S"))
        out = []
        for col in self.directions.T:
            a = int(np.argmax(np.abs(col)))
            out.append(letters[a][1] if col[a] > 0 else letters[a][0])
        return "".join(out)
