"""Synthetic chest-CT phantoms with known L1/L2 anatomy and QCT bone density.

    from OsteoScreenLib.phantom import PRESETS, generate_case, write_case
    case = generate_case(seed=7, preset="chest")
    write_case(case, "out/case-0007", fmt="nifti")

Random sampling (:mod:`.parameters`) is kept apart from deterministic
rendering (:mod:`.render`): ``render_case(sample_parameters(seed, preset))`` is
``generate_case(seed, preset)``, and any parameter may be changed in between.
Runtime needs numpy only.
"""

from __future__ import annotations

from .case import PhantomCase
from .parameters import GENERATOR_VERSION, sample_parameters
from .presets import PRESETS
from .reference import reference_standard
from .render import render_case
from .writer import write_case

__all__ = ["PRESETS", "GENERATOR_VERSION", "PhantomCase", "generate_case", "reference_standard", "render_case",
           "sample_parameters", "write_case"]


def generate_case(seed: int, preset: str = "chest") -> PhantomCase:
    """Sample the parameters of case ``seed`` and render them (same seed, same bytes)."""
    return render_case(sample_parameters(seed, preset))
