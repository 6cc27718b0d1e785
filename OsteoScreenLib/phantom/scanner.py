"""What the scanner does to the ideal image: slice profile, correlated noise, streaks.

In-plane blur is applied while painting (soft edges, see :mod:`shapes`);
the slice profile is applied by averaging thin sub-slices; noise is added per
output slice from a small bank of 2D fields with the noise power spectrum of
filtered back-projection (ramp times the squared kernel MTF), combined with
random shifts so no two slices repeat.
"""

from __future__ import annotations

import numpy as np

SUBSLICE_MAX_MM = 1.7  # thickest sub-slice used to build one output slice
NOISE_BANK_SIZE = 10
TRAINING_IN_PLANE_NOISE_FACTOR = 0.75  # noise SD kept when a ~0.7 mm image is sampled at 1.5 mm


def subslice_plan(spacing_k: float, thickness: float, extra_half_width: float):
    """Sub-slice step (mm) and, per output slice, offsets (in steps) and weights of its sub-slices."""
    m = max(1, int(np.ceil(min(spacing_k, thickness + 2 * extra_half_width) / SUBSLICE_MAX_MM)))
    step = spacing_k / m
    half = 0.5 * thickness + extra_half_width + 0.5 * step
    n = int(np.floor(half / step + 1e-6))
    offsets = np.arange(-n, n + 1)
    z = offsets * step
    if extra_half_width > 0:  # box(thickness) convolved with a triangle (linear interpolation)
        fine = (np.arange(41) + 0.5) / 41 - 0.5
        w = np.clip(1.0 - np.abs(z[:, None] - fine[None, :] * thickness) / extra_half_width, 0.0, None).mean(1)
    else:  # overlap of each sub-slice with the slice profile
        lo = np.maximum(z - 0.5 * step, -0.5 * thickness)
        hi = np.minimum(z + 0.5 * step, 0.5 * thickness)
        w = np.clip(hi - lo, 0.0, None)
    if w.sum() <= 0:
        w = (offsets == 0).astype(float)
    keep = w > 1e-4
    offsets, w = offsets[keep], w[keep]
    return step, m, offsets, (w / w.sum()).astype(np.float32)


def noise_bank(rng: np.random.Generator, shape: tuple[int, int], pixel_mm: tuple[float, float], sigma_mm: float,
               grain: float, white: bool = False) -> np.ndarray:
    """``NOISE_BANK_SIZE`` periodic unit-SD 2D noise fields with a CT-like spectrum."""
    nj, ni = shape
    fj = np.fft.fftfreq(nj, d=pixel_mm[1])[:, None]
    fi = np.fft.rfftfreq(ni, d=pixel_mm[0])[None, :]
    f = np.sqrt(fj**2 + fi**2)
    s = sigma_mm * grain
    nps = f * np.exp(-4.0 * np.pi**2 * s**2 * f**2)
    if white:
        nps = nps + 0.6 * nps.max()
    amp = np.sqrt(nps).astype(np.float32)
    bank = np.empty((NOISE_BANK_SIZE, nj, ni), np.float32)
    for b in range(NOISE_BANK_SIZE):
        white_noise = rng.standard_normal((nj, ni), dtype=np.float32)
        field = np.fft.irfft2(np.fft.rfft2(white_noise) * amp, s=(nj, ni)).astype(np.float32)
        field /= max(float(field.std()), 1e-6)
        bank[b] = field
    return bank


def noise_slice(rng: np.random.Generator, bank: np.ndarray) -> np.ndarray:
    """A fresh unit-SD field: two bank fields at random shifts, mixed at a random angle."""
    nb, nj, ni = bank.shape
    a, b = rng.choice(nb, size=2, replace=False)
    phi = rng.uniform(0, 2 * np.pi)
    out = np.roll(bank[a], (int(rng.integers(nj)), int(rng.integers(ni))), axis=(0, 1))
    out *= np.float32(np.cos(phi))
    other = np.roll(bank[b][::-1] if rng.uniform() < 0.5 else bank[b], (int(rng.integers(nj)), int(rng.integers(ni))), axis=(0, 1))
    other *= np.float32(np.sin(phi))
    out += other
    return out


def streak_field(shape, pixel_mm, center_ij, angle_deg, width_mm, amplitude_hu) -> np.ndarray:
    """A dark band through ``center_ij`` (beam hardening between dense structures)."""
    nj, ni = shape
    a = np.radians(angle_deg)
    x = (np.arange(ni, dtype=np.float32) - center_ij[1]) * np.float32(pixel_mm[0])
    y = (np.arange(nj, dtype=np.float32) - center_ij[0]) * np.float32(pixel_mm[1])
    d = y[:, None] * np.float32(np.cos(a)) - x[None, :] * np.float32(np.sin(a))
    along = y[:, None] * np.float32(np.sin(a)) + x[None, :] * np.float32(np.cos(a))
    band = np.exp(-(d / np.float32(width_mm)) ** 2) * np.exp(-(along / np.float32(160.0)) ** 2)
    return (band * np.float32(amplitude_hu)).astype(np.float32)
