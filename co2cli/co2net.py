"""CO2-Net (Cross-modal Consensus Network, Hong et al., ACM MM 2021): network, loss and video-level scores.

Network code only (no file I/O: `checkpoints.load_co2net` builds it from a file). The module and parameter names
mirror the official implementation so its state dicts (`best_CO2.pkl`) load strictly. Input features are
(B, T, 2048) float32 with RGB I3D in channels 0..1023 and flow I3D in 1024..2047; T counts snippets (16 frames at
25 fps each). The class activation sequence `cas` has C + 1 columns, the last one
being background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from co2cli.features import FEATURE_DIM, STREAM_DIM


MODALITY_DIM = STREAM_DIM  # RGB = channels [0, 1024), flow = [1024, 2048)
THUMOS_CLASSES = 20
ACTIVITYNET_CLASSES = 100


def _init_conv(module: nn.Module) -> None:
    # The original re-initialises every conv with Kaiming-uniform weights and zero biases (model.weights_init).
    if isinstance(module, nn.Conv1d):
        nn.init.kaiming_uniform_(module.weight)
        if module.bias is not None:
            module.bias.data.fill_(0)


class ModalityAttention(nn.Module):
    """One modality's attention branch (the original's `BWA_fusion_dropout_feat_v2`).

    The other modality gates this one's channels bit-wise; the gated feature yields a per-snippet attention in
    (0, 1). All dropouts here are hard-coded at 0.5 in the original, independent of the model's dropout ratio.
    """

    def __init__(self, dim: int = MODALITY_DIM, embed_dim: int = 1024, attention_dim: int = 512) -> None:
        super().__init__()
        self.bit_wise_attn = nn.Sequential(nn.Conv1d(dim, embed_dim, 3, padding=1), nn.LeakyReLU(0.2), nn.Dropout(0.5))
        self.channel_conv = nn.Sequential(nn.Conv1d(dim, embed_dim, 3, padding=1), nn.LeakyReLU(0.2), nn.Dropout(0.5))
        # Quirk kept: the last dropout sits between the 1x1 conv and the sigmoid.
        self.attention = nn.Sequential(
            nn.Conv1d(embed_dim, attention_dim, 3, padding=1), nn.LeakyReLU(0.2), nn.Dropout(0.5),
            nn.Conv1d(attention_dim, attention_dim, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(attention_dim, 1, 1), nn.Dropout(0.5), nn.Sigmoid(),
        )
        self.channel_avg = nn.AdaptiveAvgPool1d(1)  # no parameters; kept for the original's exact arithmetic

    def forward(self, own: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """own, other: (B, 1024, T). Returns attention (B, 1, T) and the gated feature (B, 1024, T)."""
        # A k=3 conv over the length-1 time average: only its centre tap matters (padding 1 on both sides).
        channel_attn = self.channel_conv(self.channel_avg(own))
        bit_wise_attn = self.bit_wise_attn(other)
        filtered = torch.sigmoid(bit_wise_attn * channel_attn) * own
        return self.attention(filtered), filtered


class CO2Net(nn.Module):
    """CO2-Net for THUMOS14 (`temporal_pool_kernel=None`) or ActivityNet1.2 (`ANT_CO2`, odd kernel).

    State-dict keys equal the official checkpoints', including the unused `feat_encoder` (strict loading needs it).
    The keyword-only widths exist for cheap CPU learning checks on synthetic features: `feature_dim` (input
    channels, RGB in the first half; 2048), `hidden_dim` (fused feature and classifier width; 2048) and
    `attention_dim` (512). Their defaults give the original network (same keys, shapes and seeded initialisation).
    """

    def __init__(self, n_class: int = THUMOS_CLASSES, dropout_ratio: float = 0.7,
                 temporal_pool_kernel: int | None = None, *, feature_dim: int = FEATURE_DIM,
                 hidden_dim: int = FEATURE_DIM, attention_dim: int = 512) -> None:
        super().__init__()
        self.n_class = n_class
        self.modality_dim = feature_dim // 2
        self.vAttn = ModalityAttention(self.modality_dim, self.modality_dim, attention_dim)
        self.fAttn = ModalityAttention(self.modality_dim, self.modality_dim, attention_dim)
        # Never used in forward; kept so official state dicts load strictly and seeded init matches the original.
        self.feat_encoder = nn.Sequential(
            nn.Conv1d(feature_dim, hidden_dim, 3, padding=1), nn.LeakyReLU(0.2), nn.Dropout(dropout_ratio))
        self.fusion = nn.Sequential(
            nn.Conv1d(feature_dim, hidden_dim, 1, padding=0), nn.LeakyReLU(0.2), nn.Dropout(dropout_ratio))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout_ratio),
            nn.Conv1d(hidden_dim, hidden_dim, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Dropout(0.7),  # hard-coded in the original
            nn.Conv1d(hidden_dim, n_class + 1, 1))
        self.temporal_pool_kernel = temporal_pool_kernel
        # ANT_CO2 smooths cas and all attentions; count_include_pad=True shrinks values near both ends.
        self.pool: nn.Module = (
            nn.AvgPool1d(temporal_pool_kernel, 1, padding=temporal_pool_kernel // 2, count_include_pad=True)
            if temporal_pool_kernel else nn.Identity())
        self.apply(_init_conv)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """features: (B, T, 2048) float32, T in snippets. Returns time-major outputs:

        feat (B, T, hidden_dim = 2048) fused feature, cas (B, T, C+1) class logits (last = background),
        attn (B, T, 1) = (v_atn + f_atn) / 2, v_atn and f_atn (B, T, 1) in (0, 1).
        """
        x = features.transpose(-1, -2)
        rgb, flow = x[:, :self.modality_dim], x[:, self.modality_dim:]
        v_atn, v_feat = self.vAttn(rgb, flow)
        f_atn, f_feat = self.fAttn(flow, rgb)
        attn = (f_atn + v_atn) / 2
        fused = self.fusion(torch.cat((v_feat, f_feat), 1))
        cas = self.pool(self.classifier(fused))
        attn, v_atn, f_atn = self.pool(attn), self.pool(v_atn), self.pool(f_atn)
        return {"feat": fused.transpose(-1, -2), "cas": cas.transpose(-1, -2), "attn": attn.transpose(-1, -2),
                "v_atn": v_atn.transpose(-1, -2), "f_atn": f_atn.transpose(-1, -2)}


def activitynet_pool_kernel(max_seqlen: int, t: int) -> int:
    """ANT_CO2's smoothing kernel, odd by construction: (max_seqlen // t) // 2 * 2 + 1."""
    return (max_seqlen // t) // 2 * 2 + 1


# ---------------------------------------------------------------------------------------------------------------
# Loss


@dataclass(frozen=True)
class LossWeights:
    """The original's loss options (defaults = its defaults). `k` divides T to give the MIL top-k size."""

    k: float = 7.0
    alpha1: float = 0.8  # attention norm terms
    alpha2: float = 0.8  # guide terms
    alpha3: float = 1.0  # contrastive (co-activity) term
    alpha4: float | None = 1.0  # mutual learning term; None = ANT_CO2, which adds it with weight 1 regardless


def suppress_with_attention(cas: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """cas_supp = attn * (cas - m) + m, m = min over the C+1 classes at each snippet (not over time)."""
    low = cas.min(dim=-1, keepdim=True)[0]
    return attn * (cas - low) + low


def topk_mil_loss(cas: torch.Tensor, labels: torch.Tensor, background: bool, k: float) -> torch.Tensor:
    """Per-video MIL loss: top-k mean over time, k = max(1, int(T // k)); labels normalised by (sum + 1e-4)."""
    extra = torch.ones_like(labels[:, [0]]) if background else torch.zeros_like(labels[:, [0]])
    target = torch.cat((labels, extra), dim=-1)
    topk = max(1, int(cas.shape[-2] // k))
    video_logits = torch.topk(cas, k=topk, dim=-2)[0].mean(dim=-2)
    target = target / (target.sum(dim=1, keepdim=True) + 1e-4)
    return -(target * F.log_softmax(video_logits, dim=-1)).sum(dim=-1)


def co_activity_loss(feat: torch.Tensor, cas: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Contrastive loss over the batch pairs (0,1), (2,3), (4,5); needs B >= 6.

    Divided by the number of shared classes: NaN (0/0) when no pair shares a class, as in the original.
    """
    labels = torch.cat((labels, torch.zeros_like(labels[:, [0]])), dim=-1)
    n = cas.shape[1]
    norm = float(max(n - 1, 1))
    zero = torch.zeros(1, dtype=cas.dtype, device=cas.device)
    total = 0.0
    shared = 0.0
    for i in range(0, 6, 2):
        a1 = F.softmax(cas[i], dim=0)
        a2 = F.softmax(cas[i + 1], dim=0)
        h1 = feat[i].T @ a1  # (D, C+1): attention-weighted action features
        h2 = feat[i + 1].T @ a2
        l1 = feat[i].T @ ((1 - a1) / norm)  # background features
        l2 = feat[i + 1].T @ ((1 - a2) / norm)
        d1 = 1 - (h1 * h2).sum(0) / (h1.norm(2, dim=0) * h2.norm(2, dim=0))
        d2 = 1 - (h1 * l2).sum(0) / (h1.norm(2, dim=0) * l2.norm(2, dim=0))
        d3 = 1 - (h2 * l1).sum(0) / (h2.norm(2, dim=0) * l1.norm(2, dim=0))
        both = labels[i] * labels[i + 1]
        total = total + 0.5 * (torch.max(d1 - d2 + 0.5, zero) * both).sum()
        total = total + 0.5 * (torch.max(d1 - d3 + 0.5, zero) * both).sum()
        shared = shared + both.sum()
    return total / shared


def co2_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor,
             weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The original `criterion`: returns (total, components). labels: (B, C) multi-hot float32."""
    feat, cas, attn = outputs["feat"], outputs["cas"], outputs["attn"]
    v_atn, f_atn = outputs["v_atn"], outputs["f_atn"]
    mutual = 0.5 * F.mse_loss(v_atn, f_atn.detach()) + 0.5 * F.mse_loss(f_atn, v_atn.detach())
    cas_supp = suppress_with_attention(cas, attn)
    mil_orig = topk_mil_loss(cas, labels, background=True, k=weights.k)
    mil_supp = topk_mil_loss(cas_supp, labels, background=False, k=weights.k)
    contrastive = co_activity_loss(feat, cas_supp, labels)
    background_prob = cas.softmax(-1)[..., [-1]]  # guides use the *raw* cas
    parts = {
        "loss_mil_orig": mil_orig, "loss_mil_supp": mil_supp, "contrastive": contrastive, "mutual": mutual,
        "loss_norm": attn.mean(), "v_loss_norm": v_atn.mean(), "f_loss_norm": f_atn.mean(),
        "loss_guide": (1 - attn - background_prob).abs().mean(),
        "v_loss_guide": (1 - v_atn - background_prob).abs().mean(),
        "f_loss_guide": (1 - f_atn - background_prob).abs().mean(),
        "cas_supp": cas_supp,
    }
    mutual_weight = 1.0 if weights.alpha4 is None else weights.alpha4
    total = (mil_orig.mean() + mil_supp.mean() + weights.alpha3 * contrastive + mutual_weight * mutual
             + weights.alpha1 * (parts["loss_norm"] + parts["v_loss_norm"] + parts["f_loss_norm"]) / 3
             + weights.alpha2 * (parts["loss_guide"] + parts["v_loss_guide"] + parts["f_loss_guide"]) / 3)
    return total, parts


# ---------------------------------------------------------------------------------------------------------------
# Video-level scores


def video_scores(cas: torch.Tensor, attn: torch.Tensor) -> np.ndarray:
    """The proposal stage's per-class video score (original `get_cls_score(cas * attn, rat=10)`).

    cas (1, T, C+1), attn (1, T, 1). Top max(1, T // 10) mean over time, softmax over C+1, background dropped.
    Returns float32 (C,).
    """
    weighted = cas * attn
    topk = max(1, int(weighted.shape[-2] // 10))
    logits = torch.topk(weighted, k=topk, dim=-2)[0].mean(dim=-2)
    return torch.softmax(logits, dim=-1)[..., :-1].reshape(-1).detach().cpu().numpy()


def classification_scores(cas: torch.Tensor) -> np.ndarray:
    """test.py's classification score: softmax over C+1 of the mean of the top ceil(T/8) raw cas values.

    cas (1, T, C+1) or (T, C+1). Returns float32 (C+1,), background kept (the cmAP ignores it).
    """
    logits = cas.reshape(-1, cas.shape[-1])
    topk = int(np.ceil(logits.shape[0] / 8))
    return F.softmax(torch.topk(logits, k=topk, dim=0)[0].mean(dim=0), dim=0).detach().cpu().numpy()


@torch.inference_mode()
def run_co2net(model: CO2Net, features: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Eval-mode forward of one video's (T, 2048) or (1, T, 2048) features; outputs on the CPU, float32."""
    x = torch.as_tensor(features, dtype=torch.float32)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    device = next(model.parameters()).device
    model.eval()
    return {k: v.float().cpu() for k, v in model(x.to(device)).items()}
