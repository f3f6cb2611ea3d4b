"""Training speed of `co2 train`'s step (sampler + forward + CO2-Net loss + backward + Adam) in iterations/s.

Synthetic THUMOS14-layout features are generated in a temporary folder, then for each --max-seqlen value the
trainer's own `PairSampler` and `train_step` run B=10 batches (3 same-class pairs + 4 random videos, as the
original) with the paper's optimizer (Adam, lr 5e-5, weight decay 1e-3). The first --warmup steps are not timed.

    .venv/bin/python bench/train_speed.py                       # CPU, full-width CO2-Net, T = 64 128 320 500
    .venv/bin/python bench/train_speed.py --max-seqlen 64 --feature-dim 256 --hidden-dim 256 --attention-dim 64
                                                                # the learning check's reduced widths

On a GPU machine (e.g. the `run` tool's H100, which starts in a copy of this repository with no network):

    python bench/train_speed.py --device cuda --steps 50

`--device cuda` synchronises before reading the clock. Memory peaks are printed for CUDA.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from co2cli.co2net import CO2Net, LossWeights  # noqa: E402
from co2cli.datasets import PairSampler, class_members, load_dataset  # noqa: E402
from co2cli.synthetic import SyntheticSpec, write_synthetic  # noqa: E402
from co2cli.train import train_step  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--max-seqlen", type=int, nargs="+", default=[64, 128, 320, 500],
                        help="snippets per training video (the paper's THUMOS14 value is 500)")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per max_seqlen")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--feature-dim", type=int, default=2048, help="input channels (2048 = original)")
    parser.add_argument("--hidden-dim", type=int, default=2048, help="CO2Net hidden width (2048 = original)")
    parser.add_argument("--attention-dim", type=int, default=512, help="attention hidden width (512 = original)")
    parser.add_argument("--videos", type=int, default=40, help="synthetic training videos")
    return parser.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU here")
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic(tmp, SyntheticSpec(n_train=args.videos, n_test=2, seed=0,
                                                          feature_dim=args.feature_dim))
        data = load_dataset(paths.features, paths.annotations, subsets=("validation",), dim=args.feature_dim)
    rows = data.indices("validation")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; B={args.batch_size}; widths {args.feature_dim}/"
          f"{args.hidden_dim}/{args.attention_dim}; {os.cpu_count()} CPUs visible")
    print(f"{'max_seqlen':>10} {'s/iter':>8} {'iter/s':>8} {'sample s':>9}" +
          (f" {'peak GiB':>9}" if device.type == "cuda" else ""))
    for seqlen in args.max_seqlen:
        torch.manual_seed(0)
        model = CO2Net(len(data.classlist), feature_dim=args.feature_dim, hidden_dim=args.hidden_dim,
                       attention_dim=args.attention_dim).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, weight_decay=1e-3)
        sampler = PairSampler(data.features, data.labels, rows, class_members(data.labels, rows), args.batch_size,
                              seqlen, np.random.RandomState(0))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sample_s = 0.0
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                sync(device)
                started, sample_s = time.perf_counter(), 0.0
            t0 = time.perf_counter()
            batch, labels, _ = sampler.sample()
            sample_s += time.perf_counter() - t0
            train_step(model, optimizer, batch, labels, LossWeights(), device)  # float(loss) synchronises
        sync(device)
        per_iter = (time.perf_counter() - started) / args.steps
        line = f"{seqlen:>10} {per_iter:>8.3f} {1 / per_iter:>8.2f} {sample_s / args.steps:>9.4f}"
        if device.type == "cuda":
            line += f" {torch.cuda.max_memory_allocated(device) / 2**30:>9.2f}"
        print(line, flush=True)
        del model, optimizer


if __name__ == "__main__":
    main()
