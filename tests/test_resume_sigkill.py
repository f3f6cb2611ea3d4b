"""Resume after a real SIGKILL, for feature extraction and for training.

Each test starts the work in a subprocess, polls (not sleeps) until its first output exists, checks that the
process is still running with work left, kills it with SIGKILL, reruns the same command and compares with an
uninterrupted run: bit-identical features / equal weights, and finished work kept (not recomputed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.shared_paths import SAMPLE_VIDEOS, need

POLL_S = 0.01
DEADLINE_S = 600


def kill_when(path: Path, proc: subprocess.Popen) -> None:
    """Wait until `path` exists (the process must still be running then), then SIGKILL the process."""
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert proc.poll() is None, f"the process ended (rc {proc.returncode}) before writing {path.name}"
        assert time.monotonic() < deadline, f"{path.name} did not appear within {DEADLINE_S} s"
        time.sleep(POLL_S)
    assert proc.poll() is None, "the process finished before it could be killed: not enough work left"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


# ---- co2 extract-features -------------------------------------------------------------------------------------

STEMS = ["v0", "v1", "v2", "v3", "v4"]
FRAMES = 16  # one snippet each


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Five different one-snippet clips (16 frames at 25 fps, lossless) cut from the weightlifting video."""
    folder = tmp_path_factory.mktemp("clips")
    frames = []
    with av.open(str(need(SAMPLE_VIDEOS / "v_GGSY1Qvo990.mp4"))) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == FRAMES * len(STEMS):
                break
    paths = []
    for i, stem in enumerate(STEMS):
        path = folder / f"{stem}.mkv"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("ffv1", rate=25)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "bgr0"
            for k, rgb in enumerate(frames[FRAMES * i:FRAMES * (i + 1)]):
                image = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                image.pts, image.time_base = k, Fraction(1, 25)
                for packet in stream.encode(image):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def extract(clips: list[Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "co2cli.cli", "extract-features", *map(str, clips), "-o", str(out), "--streams",
            "rgb"]


def test_extraction_killed_and_rerun_equals_uninterrupted(i3d_rgb_weights: Path, clips: list[Path],
                                                          tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "160"}
    reference = tmp_path / "reference"
    straight = subprocess.run(extract(clips, reference), capture_output=True, text=True, env=env, timeout=900)
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "out"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(extract(clips, out), stdout=log, stderr=subprocess.STDOUT, env=env)
        kill_when(out / "v0.json", proc)  # the JSON is written last: v0 is finished
    finished = sorted(p.stem for p in out.glob("*.json"))
    assert finished[0] == "v0" and len(finished) < len(STEMS)  # killed mid-batch
    for path in out.iterdir():  # only complete pairs carry final names; temporaries start with '.'
        assert path.name.startswith(".") or {path.stem + ".npy", path.stem + ".json"} <= {p.name for p in
                                                                                         out.iterdir()}
    mtimes = {stem: (out / f"{stem}.npy").stat().st_mtime_ns for stem in finished}

    rerun = subprocess.run(extract(clips, out), capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("skipped") == len(finished)
    assert {stem: (out / f"{stem}.npy").stat().st_mtime_ns for stem in finished} == mtimes  # not recomputed
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}{ext}" for s in STEMS for ext in (".json", ".npy"))
    for stem in STEMS:
        got, want = np.load(out / f"{stem}.npy"), np.load(reference / f"{stem}.npy")
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (1, 1024)
        assert np.array_equal(got, want), stem  # bit-identical
        assert json.loads((out / f"{stem}.json").read_text()) == json.loads((reference / f"{stem}.json").read_text())
    assert len({np.load(reference / f"{s}.npy").tobytes() for s in STEMS}) == len(STEMS)  # different videos


# ---- training ---------------------------------------------------------------------------------------------------

# Reduced widths (as tests/test_train.py's learning check): 256-d features. The full network writes a 460 MB
# training state per save, ~15 s each on our CI disks, and `co2 train` has no width options, so this drives
# co2cli.train.train (what `co2 train` calls) in a subprocess; a SIGKILL there is the same as in the CLI.
TRAIN_DRIVER = r'''
import json, sys
from pathlib import Path
from co2cli.train import TrainConfig, train

config = json.loads(sys.argv[1])
for key in ("features", "annotations", "output"):
    config[key] = Path(config[key])
steps = []
result = train(TrainConfig(**config), on_iteration=lambda step, loss: steps.append(step))
print(json.dumps({"resumed_from": result.resumed_from, "iterations": result.iterations, "steps": steps}))
'''
MAX_ITER = 120


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from co2cli.synthetic import SyntheticSpec, write_synthetic

    spec = SyntheticSpec(n_classes=6, n_train=24, n_test=8, min_snippets=20, max_snippets=120, seed=3,
                         feature_dim=256)
    return write_synthetic(tmp_path_factory.mktemp("small_synth_256"), spec)


def train_command(data, output: Path) -> list[str]:
    config = {"dataset": "thumos14", "features": str(data.features), "annotations": str(data.annotations),
              "output": str(output), "max_iter": MAX_ITER, "max_seqlen": 16, "eval_every": 40, "save_every": 4,
              "seed": 11, "lr": 1e-3, "device": "cpu", "progress": False, "feature_dim": 256, "hidden_dim": 256,
              "attention_dim": 64}
    return [sys.executable, "-c", TRAIN_DRIVER, json.dumps(config)]


def state_file(output: Path) -> Path:
    return output.with_name(output.name.split(".")[0] + ".train_state.pt")


def test_training_killed_and_rerun_equals_uninterrupted(train_data, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # bit-exact resume needs the same thread count in every run
    ref_out = tmp_path / "reference" / "m.pkl"
    straight = subprocess.run(train_command(train_data, ref_out), capture_output=True, text=True, env=env,
                              timeout=900)
    assert straight.returncode == 0, straight.stderr
    assert json.loads(straight.stdout)["steps"] == list(range(1, MAX_ITER + 1))

    out = tmp_path / "run" / "m.pkl"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(train_command(train_data, out), stdout=log, stderr=subprocess.STDOUT, env=env)
        kill_when(state_file(out), proc)  # written atomically every 4 steps
    done = torch.load(state_file(out), weights_only=True, map_location="cpu")["iteration"]
    assert 0 < done < MAX_ITER and done % 4 == 0

    rerun = subprocess.run(train_command(train_data, out), capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["resumed_from"] == done and report["iterations"] == MAX_ITER
    assert report["steps"] == list(range(done + 1, MAX_ITER + 1))  # steps 1..done were not redone
    assert f"resuming: m.train_state.pt is at iteration {done} of {MAX_ITER}" in rerun.stderr

    a = torch.load(state_file(ref_out), weights_only=True, map_location="cpu")
    b = torch.load(state_file(out), weights_only=True, map_location="cpu")
    assert a["iteration"] == b["iteration"] == MAX_ITER
    assert list(a["model"]) == list(b["model"]) and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i][n], sb[i][n]) for i in sa for n in sa[i])
    assert a["sampler_rng"] == b["sampler_rng"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    best_a = torch.load(ref_out, weights_only=True, map_location="cpu")
    best_b = torch.load(out, weights_only=True, map_location="cpu")
    assert list(best_a) == list(best_b) and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    summary = [json.loads((p.parent / "m.train.json").read_text()) for p in (ref_out, out)]
    assert summary[0]["history"] == summary[1]["history"] and len(summary[0]["history"]) == 3
    # Not vacuous: the weights moved from the initialisation to the trained values.
    first_state = a["model"]["classifier.4.weight"]
    torch.manual_seed(11)
    from co2cli.co2net import CO2Net

    init = CO2Net(6, feature_dim=256, hidden_dim=256, attention_dim=64).state_dict()["classifier.4.weight"]
    assert not torch.equal(first_state, init)
