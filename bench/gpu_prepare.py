"""Prepare the inputs of `bench/gpu_check.sh` HERE (a CPU machine with PyAV, OpenCV's optflow and the weights):
the lent GPU machine has no registry, no PyAV and no `cv2.optflow`, so everything it compares against travels.

    .venv/bin/python bench/gpu_prepare.py [--out .gpucheck]

Writes (about 40 MiB, under the 64 MiB a device call may carry):
* `tvl1.npz`: consecutive grayscale frames of both sample clips at both flow regions and OpenCV's TV-L1 fields
  on them (`cv2.optflow.DualTVL1OpticalFlow_create().calc`, pixels);
* `i3d-rgb-f16.pt`: the Kinetics RGB I3D with float16-rounded weights (half the size; both machines use these
  same rounded values, so CUDA vs CPU compares the arithmetic, not the rounding) and `i3d.npz`: two real 16-frame
  snippets and the CPU features / logits of that model on them;
* `co2net.npz` + `reference_ckpt.pkl.gz`: the CO2-Net reference checkpoint (../shared), forward inputs and the
  original implementation's outputs (forward_cases), and one training batch;
* `manifest.json`: SHA-256 of each file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from co2cli import checkpoints, i3d, video, weights

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLIPS = ("v_GGSY1Qvo990.mp4", "v_ZNVhz7ctTq0.mp4")
PAIRS = 6  # per clip and region


def _gray(path: Path, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(crop grays, whole-frame grays) of 25 fps frames start .. start + count - 1."""
    reader = video.VideoReader(path)
    frames = video.concat(reader.chunks(128, drop_remainder=False, whole_frame_gray=True))
    return frames.gray[start:start + count].copy(), frames.gray_frame[start:start + count].copy()


def prepare_tvl1(out: Path) -> None:
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    arrays = {}
    for k, clip in enumerate(CLIPS):
        crop, whole = _gray(SHARED / "data" / "videos" / clip, 40 + 20 * k, PAIRS + 1)
        for region, gray in (("crop", crop), ("frame", whole)):
            arrays[f"{k}_{region}_gray"] = gray
            arrays[f"{k}_{region}_cv2"] = np.stack([tvl1.calc(gray[i], gray[i + 1], None) for i in range(PAIRS)])
    np.savez_compressed(out / "tvl1.npz", **arrays)


def prepare_i3d(out: Path) -> None:
    state = checkpoints.read_state_dict(weights.resolve("i3d-rgb"))
    rounded = {k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()}
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in rounded.items()}, out / "i3d-rgb-f16.pt")
    model = checkpoints.load_i3d(rounded, 3, "cpu", channels_last=False)
    frames = video.read_video(SHARED / "data" / "videos" / CLIPS[0])
    clip = video.rgb_to_float(frames.rgb[96:128]).reshape(2, 16, 224, 224, 3)
    feats, logits = i3d.run_snippets(model, clip, batch_size=2)
    np.savez_compressed(out / "i3d.npz", snippets_uint8=frames.rgb[96:128], features=feats, logits=logits)


def prepare_co2net(out: Path) -> None:
    shutil.copy(SHARED / "fixtures" / "co2net" / "reference_ckpt.pkl.gz", out / "reference_ckpt.pkl.gz")
    cases = np.load(SHARED / "fixtures" / "co2net" / "forward_cases.npz")
    keep = {k: cases[k] for k in cases.files if k.startswith(("T64_", "T320_"))}
    rng = np.random.RandomState(5)
    keep["train_features"] = np.abs(rng.randn(10, 64, 2048)).astype(np.float32) * 0.5
    labels = np.zeros((10, 20), np.float32)
    for row, cls in enumerate([3, 3, 7, 7, 11, 11, 1, 5, 9, 13]):
        labels[row, cls] = 1
    keep["train_labels"] = labels
    np.savez_compressed(out / "co2net.npz", **keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".gpucheck")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    prepare_tvl1(args.out)
    prepare_i3d(args.out)
    prepare_co2net(args.out)
    manifest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(args.out.iterdir())
                if p.name != "manifest.json"}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({total / 2**20:.1f} MiB): {', '.join(manifest)}")


if __name__ == "__main__":
    main()
