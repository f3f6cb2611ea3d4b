"""Choosing the torch device: CUDA when present, else CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from co2cli.errors import Co2Error

if TYPE_CHECKING:
    import torch


def pick_device(device: str = "auto") -> torch.device:
    """'auto' = CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise Co2Error("CUDA was asked for but no CUDA GPU is available (choose the CPU or auto)")
    if device not in ("cpu", "cuda"):
        raise Co2Error(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)
