"""Where the real test cases are: ``shared/data/real`` beside the checkout (torch-free, for any script)."""

from pathlib import Path

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
