"""Class-name lists: THUMOS14 (shipped), ActivityNet1.2 (kept beside its checkpoint), Kinetics-400 (shipped)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from co2cli.checkpoints import beside_checkpoint
from co2cli.errors import Co2Error


def _packaged(name: str) -> list[str]:
    return resources.files("co2cli").joinpath("data", name).read_text().splitlines()


def thumos14() -> list[str]:
    """The 20 THUMOS14 classes in the order of the W-TALC `classlist.npy` (= CO2-Net's logit order)."""
    return _packaged("thumos14_classes.txt")


def classes_beside(checkpoint: Path) -> list[str]:
    """ActivityNet class names stored as `<checkpoint stem>.classes.txt` beside a checkpoint."""
    path = beside_checkpoint(checkpoint, ".classes.txt")
    if not path.is_file():
        raise Co2Error(f"class names for {checkpoint.name} not found: expected {path} (one name per line, "
                       "in classlist.npy order; `co2 train` and `co2 weights import` write it)")
    return path.read_text().splitlines()


def kinetics400() -> list[str]:
    """The 400 Kinetics classes in DeepMind's I3D logit order (from torchvision's `_meta.py`, see tools/)."""
    return _packaged("kinetics400_classes.txt")
