"""Every checkpoint read in co2cli: torch files (plain or gzip) through `torch.load(weights_only=True)`, strict
structural checks against a network's own state dict, and the names of the files kept beside a checkpoint.

The networks (`i3d.py`, `co2net.py`) do no file I/O; this module builds them from files. Every problem with a
file (missing, empty, truncated, not torch, a pickle that wants to run code, wrong keys, shapes or values) becomes
one `Co2Error` line; random weights are never returned.
"""

from __future__ import annotations

import gzip
import io
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from co2cli.errors import Co2Error

if TYPE_CHECKING:
    import torch

    from co2cli.co2net import CO2Net
    from co2cli.i3d import InceptionI3d

GZIP_MAGIC = b"\x1f\x8b"
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def beside_checkpoint(checkpoint: Path, suffix: str) -> Path:
    """`<stem><suffix>` next to a checkpoint; stem = name up to the first dot (best_CO2.pkl.gz -> best_CO2)."""
    return checkpoint.with_name(checkpoint.name.split(".")[0] + suffix)


def is_gzip(data: bytes) -> bool:
    return data[:2] == GZIP_MAGIC


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception message, without torch's weights_only boilerplate, <= 160 chars."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_TORCH_BOILERPLATE)]
    text = (useful or lines or [type(exc).__name__])[0]
    return text.split(". ")[0][:160]


def read_file_bytes(path: Path, what: str = "weights file") -> bytes:
    """A file's bytes, or one Co2Error line when it is missing or empty."""
    if not path.is_file():
        raise Co2Error(f"{what} not found: {path}")
    data = path.read_bytes()
    if not data:
        raise Co2Error(f"{what} is empty: {path}")
    return data


def read_state_dict(source: str | Path | bytes, label: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a file path or bytes (plain or gzip), loaded with `weights_only=True` on the CPU.

    Accepts the usual wrappers ({'state_dict': ...}, DataParallel's 'module.' prefix).
    """
    import torch

    label = label or ("checkpoint" if isinstance(source, bytes) else str(source))
    data = source if isinstance(source, bytes) else read_file_bytes(Path(source))
    if not data:
        raise Co2Error(f"{label} is empty")
    if is_gzip(data):  # checkpoints are often shared as .gz
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise Co2Error(f"{label} is a damaged gzip file ({exc})") from None
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise next to our own message
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise Co2Error(f"{label} was refused by the safe loader (it holds more than plain tensors): "
                       f"{_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - junk bytes raise RuntimeError, EOFError, struct.error, ...
        raise Co2Error(f"{label} is not a readable PyTorch weights file (truncated or wrong format): "
                       f"{type(exc).__name__}: {_first_line(exc)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise Co2Error(f"{label} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def read_training_state(path: Path) -> object:
    """A training state (`co2 train`'s `<stem>.train_state.pt`: tensors, numbers, strings) as it was saved, read
    with `weights_only=True` on the CPU; a damaged file is one Co2Error line."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged state file is one clear line
        raise Co2Error(f"training state {path} is unreadable ({type(exc).__name__}); delete it or pass --fresh") \
            from None


def check_against(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], label: str,
                  what: str) -> None:
    """Co2Error (one line) unless `state_dict` has exactly `expected`'s keys and shapes and finite values."""
    import torch

    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    if missing or extra:
        parts = [f"{len(missing)} missing key(s) e.g. {missing[0]}"] if missing else []
        parts += [f"{len(extra)} unexpected key(s) e.g. {extra[0]}"] if extra else []
        raise Co2Error(f"{label} is not {what}: {', '.join(parts)}")
    for key, ref in expected.items():
        value = state_dict[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise Co2Error(f"{label}: {key} has shape {list(value.shape)}, expected {list(ref.shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise Co2Error(f"{label}: {key} contains NaN or infinite values")


# ---------------------------------------------------------------------------------------------------------------
# I3D


def check_i3d_state_dict(state_dict: Mapping[str, torch.Tensor], in_channels: int, num_classes: int = 400,
                         label: str = "checkpoint") -> None:
    """Co2Error unless `state_dict` is a piergiaj/pytorch-i3d layout I3D for `in_channels` (3 RGB, 2 flow)."""
    import torch

    from co2cli.i3d import InceptionI3d

    with torch.device("meta"):  # shapes only: skips allocating and initialising 12.7 M random weights
        expected = InceptionI3d(num_classes, in_channels).state_dict()
    stem = state_dict.get("Conv3d_1a_7x7.conv3d.weight")
    if stem is not None and stem.ndim == 5 and stem.shape[1] != in_channels and set(state_dict) == set(expected):
        kind = {3: "an RGB", 2: "a flow"}.get(int(stem.shape[1]), f"a {stem.shape[1]}-channel")
        raise Co2Error(f"{label} is {kind} I3D checkpoint, expected {in_channels} input channels "
                       f"({'RGB' if in_channels == 3 else 'flow'})")
    check_against(state_dict, expected, label, "an I3D (piergiaj/pytorch-i3d layout) state dict")


def load_i3d(source: str | Path | Mapping[str, torch.Tensor], in_channels: int = 3,
             device: str | torch.device = "cpu", num_classes: int = 400, label: str | None = None,
             channels_last: bool | None = None) -> InceptionI3d:
    """An eval-mode I3D on `device` with weights loaded strictly from a file or a state dict.

    `channels_last` (default: on for CPU) stores weights as channels_last_3d: oneDNN then needs ~10% less CPU
    time (bench/bench_i3d.py) with the same float32 accuracy.
    """
    import torch

    from co2cli.i3d import InceptionI3d

    if isinstance(source, Mapping):
        state_dict, label = dict(source), label or "state dict"
    else:
        label = label or str(source)
        state_dict = read_state_dict(source, label)
    check_i3d_state_dict(state_dict, in_channels, num_classes, label)
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint (assign=True)
        model = InceptionI3d(num_classes, in_channels)
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(floats, strict=True, assign=True)
    dev = torch.device(device)
    model = model.to(dev).eval()
    if channels_last if channels_last is not None else dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last_3d)
    return model


# ---------------------------------------------------------------------------------------------------------------
# CO2-Net


def co2net_classes(state_dict: Mapping[str, torch.Tensor], label: str = "checkpoint") -> int:
    """Number of action classes a CO2-Net state dict was trained for (classifier output rows - 1)."""
    weight = state_dict.get("classifier.4.weight")
    if weight is None or weight.ndim != 3:
        raise Co2Error(f"{label} is not a CO2-Net checkpoint: it has no classifier.4.weight of shape "
                       "[C+1, 2048, 1]")
    return int(weight.shape[0]) - 1


def co2net_from_state_dict(state_dict: Mapping[str, torch.Tensor], label: str = "checkpoint",
                           temporal_pool_kernel: int | None = None, n_class: int | None = None) -> CO2Net:
    """An eval-mode CO2Net sized for `state_dict` (or for exactly `n_class` classes), loaded strictly."""
    from co2cli.co2net import CO2Net

    found = co2net_classes(state_dict, label)
    if n_class is not None and found != n_class:
        raise Co2Error(f"{label}: classifier.4.weight has shape {list(state_dict['classifier.4.weight'].shape)}, "
                       f"expected [{n_class + 1}, 2048, 1] ({n_class} classes + background)")
    model = CO2Net(found, temporal_pool_kernel=temporal_pool_kernel)
    check_against(state_dict, model.state_dict(), label, "a CO2-Net state dict")
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()


def load_co2net(path: str | Path, device: str | torch.device = "cpu",
                temporal_pool_kernel: int | None = None) -> CO2Net:
    """An official-format CO2-Net checkpoint (plain or .gz) in eval mode on `device`."""
    return co2net_from_state_dict(read_state_dict(path), str(path), temporal_pool_kernel).to(device)
