"""The learning check at any width: train on synthetic 'validation' videos with video-level labels only, then
report localization mAP on the unseen 'test' videos, for the real labels and (with --shuffled) shuffled ones.

    .venv/bin/python bench/learning_check.py                   # the test suite's reduced widths (~1 min on 2 cores)
    .venv/bin/python bench/learning_check.py --full-width --max-iter 600 --lr 1e-4   # the original network

Prints mAP@0.1..0.9 and the 0.1:0.7 average of the checkpoint selected on held-out training videos.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from co2cli.co2net import CO2Net, read_state_dict  # noqa: E402
from co2cli.datasets import load_dataset  # noqa: E402
from co2cli.evaluate import THUMOS_TIOU  # noqa: E402
from co2cli.synthetic import SyntheticSpec, write_shuffled_labels, write_synthetic  # noqa: E402
from co2cli.train import TrainConfig, evaluate_model, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-width", action="store_true", help="2048/2048/512 (the original) instead of 256/256/64")
    parser.add_argument("--max-iter", type=int, default=800)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-seqlen", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shuffled", action="store_true", help="also train on shuffled video labels")
    args = parser.parse_args()
    widths = {} if args.full_width else dict(feature_dim=256, hidden_dim=256, attention_dim=64)
    dim = widths.get("feature_dim", 2048)
    spec = SyntheticSpec(n_classes=20, n_train=80, n_test=40, noise=1.0, context=0.25, seed=0, feature_dim=dim)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic(Path(tmp) / "data", spec)
        runs = [("real labels", paths.annotations)]
        if args.shuffled:
            runs.append(("shuffled labels", write_shuffled_labels(paths.annotations, Path(tmp) / "shuffled",
                                                                  "validation", seed=1)))
        test = load_dataset(paths.features, paths.annotations, subsets=("test",), dim=dim)
        videos = [(test.videonames[r], test.features[r]) for r in test.indices("test")]
        for name, annotations in runs:
            out = Path(tmp) / name.replace(" ", "_") / "m.pkl"
            started = time.perf_counter()
            result = train(TrainConfig("thumos14", paths.features, out, annotations=annotations, device="cpu",
                                       max_iter=args.max_iter, lr=args.lr, max_seqlen=args.max_seqlen,
                                       eval_every=args.eval_every, seed=args.seed, progress=False, **widths))
            model = CO2Net(len(test.classlist), **widths)
            model.load_state_dict(read_state_dict(out))
            test_map = evaluate_model(model.eval(), videos, test.annotations, "test", THUMOS_TIOU, True).map
            print(f"{name}: widths {widths or 'original'}, {result.iterations} iterations in "
                  f"{time.perf_counter() - started:.0f} s, selected iteration {result.best_iteration}; test mAP "
                  f"{np.round(test_map, 3).tolist()}, average 0.1:0.7 = {np.mean(test_map[:7]):.3f}", flush=True)


if __name__ == "__main__":
    main()
