"""Training: the original's sampler, dataset validation, resumable bit-exact training, ActivityNet, and a learning
check (synthetic videos, video-level labels only, localization mAP on unseen test videos)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from co2cli.checkpoints import load_co2net, read_state_dict
from co2cli.co2net import CO2Net, activitynet_pool_kernel
from co2cli.datasets import PairSampler, class_members, load_dataset, random_perturb
from co2cli.errors import Co2Error
from co2cli.evaluate import ACTIVITYNET_TIOU, THUMOS_TIOU, load_annotations
from co2cli.timebase import quantize_to_snippet as to_snippet
from co2cli.synthetic import SyntheticSpec, write_shuffled_labels, write_synthetic, write_wtalc, generate
from co2cli.train import (HELDOUT_SUBSET, TrainConfig, evaluate_model, heldout_split, prepare_data, resolve,
                          state_path, train)

# The learning check is a reduced-width one: 256 input channels (RGB 0..127 | flow 128..255) instead of 2048,
# hidden 256 instead of 2048, attention 64 instead of 512, max_seqlen 64 instead of 320 and lr 3e-4 instead of
# 5e-5. The full network costs ~0.8 s per step on 2 CPU cores and needs several hundred steps here; this one
# ~0.03 s. Everything else (sampler, loss, Adam, evaluation, held-out selection) is the real trainer.
WIDTHS = dict(feature_dim=256, hidden_dim=256, attention_dim=64)
LEARN_SPEC = SyntheticSpec(n_classes=20, n_train=80, n_test=40, noise=1.0, context=0.25, seed=0,
                           feature_dim=WIDTHS["feature_dim"])
LEARN = dict(max_iter=800, lr=3e-4, max_seqlen=64, eval_every=100, seed=0, **WIDTHS)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "co2cli.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def learn_data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("thumos_synth"), LEARN_SPEC)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A small THUMOS-layout set for the machinery tests (short videos, 6 classes)."""
    spec = SyntheticSpec(n_classes=6, n_train=24, n_test=8, min_snippets=20, max_snippets=120, seed=3)
    return write_synthetic(tmp_path_factory.mktemp("small_synth"), spec)


@pytest.fixture(scope="module")
def anet_data(tmp_path_factory):
    spec = SyntheticSpec(layout="activitynet12", n_classes=8, n_train=24, n_test=10, min_snippets=6,
                         max_snippets=80, seed=5)
    return write_synthetic(tmp_path_factory.mktemp("anet_synth"), spec)


def test_dataset_rows_multi_hot(small_data) -> None:
    data = load_dataset(small_data.features, small_data.annotations)
    ann = data.annotations
    assert data.features[0].dtype == np.float32 and data.features[0].shape[1] == 2048
    for row in range(len(ann.videonames)):
        assert {ann.classlist[c] for c in np.flatnonzero(data.labels[row])} == set(ann.labels_all[row])
    assert set(ann.subsets) == {"validation", "test"}
    # Ground truth in seconds rounds back to the planted snippet bounds (what the original evaluator does).
    for (start, end), feats in zip(ann.segments[0], [data.features[0]] * len(ann.segments[0])):
        assert 0 <= to_snippet(start) < to_snippet(end) <= len(feats)


# ---------------------------------------------------------------------------------------------------------------
# The original's sampler


def reference_random_perturb(length: int, n: int, rs: np.random.RandomState) -> np.ndarray:
    """The original algorithm written as it is there (np.random.choice over a range per stretch)."""
    if n == length:
        return np.arange(n).astype(int)
    samples = np.arange(n) * length / n
    for i in range(n):
        if i < n - 1:
            if int(samples[i]) != int(samples[i + 1]):
                samples[i] = rs.choice(range(int(samples[i]), int(samples[i + 1]) + 1))
            else:
                samples[i] = int(samples[i])
        elif int(samples[i]) < length - 1:
            samples[i] = rs.choice(range(int(samples[i]), length))
        else:
            samples[i] = int(samples[i])
    return samples.astype(int)


@pytest.mark.parametrize("length", [1, 7, 31, 32, 33, 320, 500, 501, 2000])
@pytest.mark.parametrize("n", [1, 32, 500])
def test_random_perturb_equals_original(length: int, n: int) -> None:
    ours, ref = np.random.RandomState(length * 1000 + n), np.random.RandomState(length * 1000 + n)
    for _ in range(3):
        a, b = random_perturb(length, n, ours), reference_random_perturb(length, n, ref)
        np.testing.assert_array_equal(a, b)
        assert a.shape == (n,) and a.min() >= 0 and a.max() < length
    assert ours.get_state()[2] == ref.get_state()[2]  # same number of draws


def test_pair_sampler_draws_like_load_data(small_data) -> None:
    data = load_dataset(small_data.features, small_data.annotations)
    rows = data.indices("validation")
    members = class_members(data.labels, rows)
    sampler = PairSampler(data.features, data.labels, rows, members, 10, 24, np.random.RandomState(7))
    ref = np.random.RandomState(7)
    for _ in range(5):
        feats, labels, used = sampler.sample()
        # load_data(n_similar=3): classes with replacement, two distinct videos each, then 4 random videos.
        expect = []
        for c in ref.choice(len(members), size=3):
            expect += [members[c][k] for k in ref.choice(len(members[c]), size=2, replace=False)]
        expect += [rows[r] for r in ref.choice(len(rows), size=4)]
        assert used == expect
        for b, row in enumerate(used):
            idx = reference_random_perturb(len(data.features[row]), 24, ref)
            np.testing.assert_array_equal(feats[b], data.features[row][idx])
        for pair in range(3):  # every pair shares a class (the co-activity loss needs it)
            assert (labels[2 * pair] * labels[2 * pair + 1]).sum() >= 1
        assert feats.shape == (10, 24, 2048) and labels.shape == (10, len(data.classlist))
    state = sampler.rng_state()
    after = [sampler.sample()[2] for _ in range(3)]
    sampler.set_rng_state(state)
    assert [sampler.sample()[2] for _ in range(3)] == after


def test_heldout_split_is_seeded_and_keeps_pairs(small_data) -> None:
    data = load_dataset(small_data.features, small_data.annotations)
    rows = data.indices("validation")
    held = heldout_split(data, rows, 0.2, seed=1)
    assert held == heldout_split(data, rows, 0.2, seed=1) != heldout_split(data, rows, 0.2, seed=2)
    assert 1 <= len(held) <= round(0.2 * len(rows)) and set(held) <= set(rows)
    left = [r for r in rows if r not in held]
    assert min(len(m) for m in class_members(data.labels, left)) >= 2
    s = resolve(TrainConfig("thumos14", small_data.features, Path("unused.pkl"), seed=1, heldout_fraction=0.2))
    prepared = prepare_data(s)
    assert prepared.eval_rows == held and not set(held) & set(prepared.train_rows)
    assert all(prepared.eval_annotations.subsets[r] == HELDOUT_SUBSET for r in held)


# ---------------------------------------------------------------------------------------------------------------
# Validation: one clear line each


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_dataset_errors(small_data, tmp_path) -> None:
    names, videos = generate(SyntheticSpec(n_classes=4, n_train=8, n_test=2, min_snippets=20, max_snippets=40))
    # Count mismatch: features for 9 videos, annotations for 10.
    bad = write_wtalc(tmp_path / "count", "Bad", names, videos)
    feats = np.load(bad.features, allow_pickle=True)
    np.save(bad.features, feats[:-1], allow_pickle=True)
    with pytest.raises(Co2Error, match="holds 9 videos but .* annotates 10") as exc:
        load_dataset(bad.features)
    _one_line(exc)
    # Wrong feature dimension.
    videos[3].features = videos[3].features[:, :1024]
    bad = write_wtalc(tmp_path / "dim", "Bad", names, videos)
    with pytest.raises(Co2Error, match=r"video video_validation_0000004 have shape \(\d+, 1024\), expected") as exc:
        load_dataset(bad.features)
    _one_line(exc)
    videos[3].features = np.zeros((30, 2048), np.float32)
    # Unknown class in the video-level labels.
    good = write_wtalc(tmp_path / "cls", "Good", names, videos)
    labels_all = np.load(good.annotations / "labels_all.npy", allow_pickle=True)
    labels_all[2] = ["NoSuchAction"]
    np.save(good.annotations / "labels_all.npy", labels_all, allow_pickle=True)
    with pytest.raises(Co2Error, match="unknown class 'NoSuchAction'") as exc:
        load_dataset(good.features)
    _one_line(exc)
    # Folder layout with a missing video file.
    folder = tmp_path / "folder"
    folder.mkdir()
    ann = write_wtalc(tmp_path / "ann", "Folder", names, videos).annotations
    for v in videos[1:]:
        np.save(folder / f"{v.name}.npy", v.features)
    with pytest.raises(Co2Error, match=f"no features for video {videos[0].name}") as exc:
        load_dataset(folder, ann)
    _one_line(exc)


class _RunsCode:
    """Unpickling this calls os.system: what a tampered feature or annotation file could carry."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.sentinel}",))


def test_tampered_pickles_are_refused_not_run(tmp_path) -> None:
    """W-TALC files are pickles: ours are read by a numpy-only unpickler, so a payload never runs."""
    names, videos = generate(SyntheticSpec(n_classes=4, n_train=8, n_test=2, min_snippets=20, max_snippets=40))
    paths = write_wtalc(tmp_path / "evil", "Evil", names, videos)
    sentinel = tmp_path / "pwned"
    good = np.load(paths.features, allow_pickle=True)
    evil = np.empty(len(good), dtype=object)
    evil[:] = list(good)
    evil[0] = _RunsCode(sentinel)
    np.save(paths.features, evil, allow_pickle=True)
    with pytest.raises(Co2Error, match="refused by the safe unpickler: global posix.system is not allowed") as exc:
        load_dataset(paths.features)
    _one_line(exc)
    np.save(paths.features, good, allow_pickle=True)
    assert len(load_dataset(paths.features).videonames) == 10  # the untampered file loads
    segments = np.load(paths.annotations / "segments.npy", allow_pickle=True)
    segments[1] = _RunsCode(sentinel)
    np.save(paths.annotations / "segments.npy", segments, allow_pickle=True)
    result = run_cli("evaluate", str(paths.features), "--annotations", str(paths.annotations))
    assert result.returncode == 1 and "segments.npy was refused by the safe unpickler" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not sentinel.exists()


def test_folder_layout_equals_joint_file(tmp_path) -> None:
    names, videos = generate(SyntheticSpec(n_classes=4, n_train=8, n_test=2, min_snippets=20, max_snippets=40))
    joint = write_wtalc(tmp_path / "joint", "X", names, videos)
    folder = tmp_path / "feats"
    folder.mkdir()
    for v in videos:
        np.save(folder / f"{v.name}.npy", v.features)
        (folder / f"{v.name}.json").write_text(json.dumps({"fps": 25, "stride_frames": 16}))
    a, b = load_dataset(joint.features), load_dataset(folder, joint.annotations)
    assert all(np.array_equal(x, y) for x, y in zip(a.features, b.features))
    (folder / f"{videos[0].name}.json").write_text(json.dumps({"fps": 30, "stride_frames": 16}))
    with pytest.raises(Co2Error, match="s per snippet; training"):
        load_dataset(folder, joint.annotations)


def test_cli_errors_are_one_line(small_data, tmp_path) -> None:
    result = run_cli("train", "--dataset", "thumos14", "--features", str(tmp_path / "nope.npy"),
                     "--output", str(tmp_path / "m.pkl"))
    assert result.returncode == 1 and result.stderr.strip() == f"error: features not found: {tmp_path / 'nope.npy'}"
    result = run_cli("train", "--dataset", "thumos14", "--features", str(small_data.features),
                     "--output", str(tmp_path / "m.pkl"), "--batch-size", "4")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "error: --batch-size must be at least 6 (3 pairs sharing a class), got 4"]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints, resuming


def test_cli_train_writes_official_checkpoint_and_resumes(small_data, tmp_path) -> None:
    """Full-width CO2-Net, 4 steps (evaluated after steps 3 and 4, the original's schedule plus the last): the checkpoint loads with load_co2net; rerunning finds the run finished."""
    out = tmp_path / "ckpt" / "best_CO2.pkl"
    args = ["train", "--dataset", "thumos14", "--features", str(small_data.features), "--output", str(out),
            "--max-iter", "4", "--max-seqlen", "8", "--eval-every", "2", "--device", "cpu"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "iteration 3:" in first.stderr and "iteration 4:" in first.stderr and "held-out" in first.stdout
    model = load_co2net(out)
    assert model.n_class == 6 and model.temporal_pool_kernel is None
    assert (out.parent / "best_CO2.classes.txt").read_text().splitlines() == load_annotations(
        small_data.annotations).classlist
    summary = json.loads((out.parent / "best_CO2.train.json").read_text())
    assert summary["iterations"] == 4 and summary["recipe"]["lr"] == 5e-5 and summary["recipe"]["k"] == 7
    assert state_path(out).is_file()
    again = run_cli(*args)
    assert again.returncode == 0 and "already finished" in again.stderr
    changed = run_cli(*args[:-2], "--lr", "1e-4", "--device", "cpu")
    assert changed.returncode == 1 and "lr = 5e-05, not 0.0001" in changed.stderr


# Resuming after a real SIGKILL (subprocess, bit-exact against an uninterrupted run): tests/test_resume_sigkill.py


# ---------------------------------------------------------------------------------------------------------------
# ActivityNet1.2


def test_ant_model_loads_original_keys(tmp_path) -> None:
    kernel = activitynet_pool_kernel(60, 5)
    assert kernel == 13
    sd = CO2Net(100, temporal_pool_kernel=kernel).state_dict()
    reference = CO2Net(20).state_dict()
    assert list(sd) == list(reference)  # the pooling has no parameters: ANT_CO2 keys equal CO2's
    assert sd["classifier.4.weight"].shape == (101, 2048, 1)
    path = tmp_path / "best_ANT_CO2.pkl"
    torch.save(sd, path)
    model = load_co2net(path, temporal_pool_kernel=kernel)
    assert model.n_class == 100 and isinstance(model.pool, torch.nn.AvgPool1d) and model.pool.kernel_size == (13,)


def test_ant_training_and_evaluation(anet_data, tmp_path) -> None:
    out = tmp_path / "ant.pkl"
    result = train(TrainConfig("activitynet12", anet_data.features, out, max_iter=2, max_seqlen=20, eval_every=1,
                               select_on_test=True, progress=False, device="cpu", seed=1))
    assert result.thresholds == ACTIVITYNET_TIOU and len(result.best_map) == 10
    assert result.selected_on.startswith("'validation' subset")
    kernel = activitynet_pool_kernel(20, 5)
    assert json.loads((tmp_path / "ant.train.json").read_text())["temporal_pool_kernel"] == kernel == 5
    model = load_co2net(out, temporal_pool_kernel=kernel)
    s = resolve(TrainConfig("activitynet12", anet_data.features, out, max_seqlen=20, select_on_test=True))
    data = prepare_data(s)
    lengths = [len(f) for f in data.dataset.features if f is not None]
    assert min(lengths) <= 10  # the spec makes short videos ...
    assert all(len(data.dataset.features[r]) > 10 for r in data.train_rows + data.eval_rows)  # ... which are left out
    ds = data.dataset
    videos = [(ds.videonames[r], ds.features[r]) for r in data.eval_rows]
    again = evaluate_model(model, videos, ds.annotations, "validation", ACTIVITYNET_TIOU, False)
    np.testing.assert_allclose(again.map, result.best_map)
    # co2 localize picks up the kernel and the class names `co2 train` wrote beside the checkpoint.
    import co2cli

    localizer = co2cli.load_model(classes="activitynet", checkpoint=str(out), device="cpu")
    assert localizer.model.pool.kernel_size == (kernel,) and localizer.class_names == ds.classlist


def test_cli_evaluate_activitynet(anet_data, tmp_path) -> None:
    ann = load_annotations(anet_data.annotations)
    rows = ["video-id,t-start,t-end,label,score"]
    for video, subset, segs, labs in zip(ann.videonames, ann.subsets, ann.segments, ann.labels):
        if subset == "validation":
            rows += [f"{video},{to_snippet(s)},{to_snippet(e)},{ann.classlist.index(lab)},0.9"
                     for (s, e), lab in zip(segs, labs)]
    perfect = tmp_path / "perfect.csv"
    perfect.write_text("\n".join(rows) + "\n")
    result = run_cli("evaluate", str(perfect), "--annotations", str(anet_data.annotations), "--dataset",
                     "activitynet12", "--format", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out["map"]) == [f"{t:g}" for t in ACTIVITYNET_TIOU] and set(out["map"].values()) == {1.0}
    shifted = tmp_path / "shifted.csv"  # every segment moved by 30 % of its length: tIoU ~0.54
    lines = [rows[0]]
    for row in rows[1:]:
        video, s, e, label, score = row.split(",")
        shift = 0.3 * (int(e) - int(s))
        lines.append(f"{video},{int(s) + shift},{int(e) + shift},{label},{score}")
    shifted.write_text("\n".join(lines) + "\n")
    out = json.loads(run_cli("evaluate", str(shifted), "--annotations", str(anet_data.annotations), "--dataset",
                             "activitynet12", "--format", "json").stdout)
    assert out["map"]["0.5"] == 1.0 and out["map"]["0.6"] == 0.0 and out["average"]["0.5:0.95"] == 0.1


# ---------------------------------------------------------------------------------------------------------------
# Learning check


def _test_map(paths, out: Path, annotations: Path | None = None) -> np.ndarray:
    """mAP on the unseen 'test' subset (THUMOS protocol, ambiguous filter on) of the selected checkpoint."""
    ds = load_dataset(paths.features, annotations or paths.annotations, subsets=("test",), dim=WIDTHS["feature_dim"])
    model = CO2Net(len(ds.classlist), **WIDTHS)
    model.load_state_dict(read_state_dict(out))
    videos = [(ds.videonames[r], ds.features[r]) for r in ds.indices("test")]
    return evaluate_model(model.eval(), videos, ds.annotations, "test", THUMOS_TIOU, True).map


@pytest.fixture(scope="module")
def learned(learn_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("learned") / "m.pkl"
    started = time.perf_counter()
    result = train(TrainConfig("thumos14", learn_data.features, out, progress=False, device="cpu", **LEARN))
    return result, _test_map(learn_data, out), time.perf_counter() - started


def test_learns_to_localize_from_video_labels(learned) -> None:
    result, test_map, seconds = learned
    average = float(np.mean(test_map[:7]))
    print(f"\nlearning check: test mAP@0.1:0.7 = {average:.3f} ({np.round(test_map, 3).tolist()}), best held-out "
          f"iteration {result.best_iteration}, {seconds:.0f} s")
    assert average >= 0.5


def test_shuffled_labels_stay_near_chance(learn_data, learned, tmp_path) -> None:
    shuffled = write_shuffled_labels(learn_data.annotations, tmp_path / "shuffled", "validation", seed=1)
    out = tmp_path / "m.pkl"
    train(TrainConfig("thumos14", learn_data.features, out, annotations=shuffled, progress=False, device="cpu",
                      **LEARN))
    average = float(np.mean(_test_map(learn_data, out)[:7]))
    print(f"\nshuffled labels: test mAP@0.1:0.7 = {average:.3f} (real labels: {np.mean(learned[1][:7]):.3f})")
    assert average < 0.15 and average < 0.3 * float(np.mean(learned[1][:7]))
