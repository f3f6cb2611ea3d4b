"""Where the ground truth beside the repo lives, and how tests that need it behave when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
CO2_FIXTURES = SHARED / "fixtures" / "co2net"
I3D_FIXTURES = SHARED / "fixtures" / "i3d"
THUMOS_ANNOTATIONS = SHARED / "data" / "thumos14reduced-annotations"
SAMPLE_VIDEOS = SHARED / "data" / "videos"


def need(path: Path) -> Path:
    """Return `path`, or skip when ../shared is absent from a user's clone. In CI (CI=true) absence is a failure."""
    if path.exists():
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing: CI must have ../shared beside the repository")
    pytest.skip(f"needs {path} (the ../shared ground truth beside the repository is absent in this clone)")
    raise AssertionError  # unreachable
