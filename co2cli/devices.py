"""Choosing the torch device: CUDA when present, else CPU."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from co2cli.errors import Co2Error

if TYPE_CHECKING:
    import torch


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def pick_device(device: str = "auto") -> torch.device:
    """'auto' = CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    import torch

    device = DeviceChoice(device).value if device in DeviceChoice._value2member_map_ else device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise Co2Error("CUDA was asked for but no CUDA GPU is available (choose the CPU or auto)")
    if device not in ("cpu", "cuda"):
        raise Co2Error(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)
