"""The GPU check, run ON the lent GPU machine by `bench/gpu_check.sh` (inputs from `bench/gpu_prepare.py`).

Covers every stage that runs on the GPU, each against a reference computed elsewhere, with its speed:
* TV-L1 (co2cli.tvl1 on CUDA) vs OpenCV's CPU fields: mean / p99 end-point error per pair, crop and whole frame;
  pairs per second and seconds per minute of 25 fps video at several batch sizes (and torch.compile if it helps);
* I3D on CUDA (full float32, TF32 off inside `i3d.exact_float32`) vs the CPU features / logits of the same weights;
  snippets per second;
* CO2-Net forward on CUDA vs the original implementation's outputs (forward_cases, T=64 and 320);
* one CO2-Net training step on CUDA vs the same step on this machine's CPU (loss, weights after the step);
* the whole two-stream cost per minute of video, from the measured stage rates.

Writes `$OUT/gpu_check.json` (or --out) and prints a summary. Needs torch (CUDA) and numpy only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from co2cli import checkpoints, i3d  # noqa: E402
from co2cli.co2net import LossWeights, co2_loss  # noqa: E402
from co2cli.tvl1 import tvl1_flow  # noqa: E402

FIELDS_PER_MINUTE = 1500
BATCHES = tuple(int(b) for b in os.environ.get("GPU_CHECK_BATCHES", "8,32,64").split(","))
"""TV-L1 batch sizes timed (GPU_CHECK_BATCHES=2 for a quick dry run on a CPU)."""
SNIPPETS_PER_MINUTE = 1500 / 16


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeat: int = 1) -> tuple[float, object]:  # noqa: ANN001
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    sync()
    return (time.perf_counter() - start) / repeat, out


def check_tvl1(data: Path, device: str) -> dict:
    npz = np.load(data / "tvl1.npz")
    report: dict = {"parity": [], "speed": []}
    for key in sorted(k for k in npz.files if k.endswith("_gray")):
        gray = npz[key]
        ref = npz[key.replace("_gray", "_cv2")]
        prev = torch.from_numpy(gray[:-1]).to(device)
        nxt = torch.from_numpy(gray[1:]).to(device)
        flow = tvl1_flow(prev, nxt).cpu().numpy()
        epe = np.linalg.norm(flow - ref, axis=-1)
        report["parity"].append({"case": key[:-5], "size": list(gray.shape[1:]),
                                 "epe_mean_max": float(epe.mean(axis=(1, 2)).max()),
                                 "epe_p99_max": float(np.percentile(epe, 99, axis=(1, 2)).max()),
                                 "ok": bool(epe.mean(axis=(1, 2)).max() <= 0.05
                                            and np.percentile(epe, 99, axis=(1, 2)).max() <= 0.5)})
    for region in ("crop", "frame"):
        gray = npz[f"0_{region}_gray"]
        for batch in BATCHES:
            reps = -(-batch // (len(gray) - 1))
            prev = torch.from_numpy(np.concatenate([gray[:-1]] * reps)[:batch]).to(device)
            nxt = torch.from_numpy(np.concatenate([gray[1:]] * reps)[:batch]).to(device)
            tvl1_flow(prev[:2], nxt[:2])  # warm-up
            seconds, _ = timed(lambda: tvl1_flow(prev, nxt))
            rate = batch / seconds
            report["speed"].append({"region": region, "batch": batch, "pairs_per_s": rate,
                                    "s_per_minute": FIELDS_PER_MINUTE / rate})
    return report


def check_i3d(data: Path, device: str) -> dict:
    state = torch.load(data / "i3d-rgb-f16.pt", map_location="cpu", weights_only=True)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    ref = np.load(data / "i3d.npz")
    model = checkpoints.load_i3d(state, 3, device)
    clip = (ref["snippets_uint8"].astype(np.float32) / np.float32(127.5) - np.float32(1)).reshape(2, 16, 224, 224, 3)
    feats, logits = i3d.run_snippets(model, clip, batch_size=2)
    report = {"features_max_abs_diff": float(np.abs(feats - ref["features"]).max()),
              "logits_max_abs_diff": float(np.abs(logits - ref["logits"]).max()),
              "top1_equal": bool((logits.argmax(1) == ref["logits"].argmax(1)).all())}
    report["ok"] = report["features_max_abs_diff"] <= 1e-3 and report["top1_equal"]
    big = np.repeat(clip, 16, axis=0)  # 32 snippets
    for batch in (8, 32):
        i3d.run_snippets(model, big[:batch], batch_size=batch)  # warm-up (cuDNN autotune)
        seconds, _ = timed(lambda: i3d.run_snippets(model, big, batch_size=batch))
        rate = len(big) / seconds
        report[f"snippets_per_s_batch{batch}"] = rate
        report[f"s_per_minute_one_stream_batch{batch}"] = SNIPPETS_PER_MINUTE / rate
    bf16, _ = i3d.run_snippets(model, clip, batch_size=2, precision="bf16")  # --precision bf16 (autocast)
    cosine = (bf16 * feats).sum(1) / (np.linalg.norm(bf16, axis=1) * np.linalg.norm(feats, axis=1))
    report["bf16_cosine_vs_fp32_min"] = float(cosine.min())
    seconds, _ = timed(lambda: i3d.run_snippets(model, big, batch_size=32, precision="bf16"))
    report["bf16_snippets_per_s_batch32"] = len(big) / seconds
    return report


def check_co2net(data: Path, device: str) -> dict:
    from co2cli.co2net import run_co2net

    cases = np.load(data / "co2net.npz")
    model = checkpoints.load_co2net(data / "reference_ckpt.pkl.gz", device)
    report: dict = {}
    for t in (64, 320):
        with i3d.exact_float32():
            out = run_co2net(model, cases[f"T{t}_input"].astype(np.float32))
        report[f"T{t}_cas_max_abs_diff"] = float(np.abs(out["cas"].numpy() - cases[f"T{t}_cas"]).max())
        report[f"T{t}_attn_max_abs_diff"] = float(np.abs(out["attn"].numpy() - cases[f"T{t}_attn"]).max())
    report["ok"] = max(report.values()) <= 1e-4
    x = cases["T320_input"].astype(np.float32)
    seconds, _ = timed(lambda: run_co2net(model, x), repeat=5)
    report["forward_T320_ms"] = 1000 * seconds
    report.update(_train_step(cases, device))
    return report


def _train_step(cases: np.lib.npyio.NpzFile, device: str) -> dict:
    """One Adam step from the same init and inputs in eval mode (no dropout draws: CUDA and CPU generators
    differ), on CUDA and on the CPU: loss and weights must agree to float32 accuracy."""
    from co2cli.co2net import CO2Net

    results = {}
    for dev in ("cpu", device):
        torch.manual_seed(0)
        model = CO2Net(20).to(dev).eval()
        opt = torch.optim.Adam(model.parameters(), lr=5e-5, weight_decay=1e-3)
        x = torch.from_numpy(cases["train_features"]).to(dev)
        y = torch.from_numpy(cases["train_labels"]).to(dev)

        def step() -> float:
            with i3d.exact_float32():
                loss, _ = co2_loss(model(x), y, LossWeights())
                opt.zero_grad()
                loss.backward()
                opt.step()
            return float(loss.detach())

        seconds, loss = timed(step)
        results[dev] = (loss, {k: v.detach().cpu() for k, v in model.state_dict().items()}, seconds)
    (loss_cpu, w_cpu, _), (loss_gpu, w_gpu, gpu_s) = results["cpu"], results[device]
    diff = max(float((w_cpu[k] - w_gpu[k]).abs().max()) for k in w_cpu)
    return {"train_loss_cpu": loss_cpu, "train_loss_gpu": loss_gpu, "train_weights_max_abs_diff": diff,
            "train_step_ms_gpu": 1000 * gpu_s, "train_ok": abs(loss_cpu - loss_gpu) <= 1e-4 * abs(loss_cpu)
            and diff <= 1e-6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT / ".gpucheck")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    report = {"device": args.device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    for name, fn in (("tvl1", check_tvl1), ("i3d", check_i3d), ("co2net", check_co2net)):
        start = time.perf_counter()
        try:
            report[name] = fn(args.data, args.device)
        except Exception as exc:  # noqa: BLE001 - one stage failing must not lose the others' figures
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        report[name]["wall_s"] = time.perf_counter() - start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")  # after each stage: partial figures survive
        print(name, json.dumps(report[name])[:600], flush=True)
    flow_s = min((r["s_per_minute"] for r in report.get("tvl1", {}).get("speed", [])
                  if r["region"] == "frame"), default=None)
    i3d_s = report.get("i3d", {}).get("s_per_minute_one_stream_batch32")
    if flow_s and i3d_s:
        report["two_stream_s_per_minute"] = flow_s + 2 * i3d_s
        report["two_stream_x_real_time"] = 60 / report["two_stream_s_per_minute"]
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}))


if __name__ == "__main__":
    main()
