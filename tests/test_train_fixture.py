"""`co2 train` against the original CO2-Net's first three optimizer steps (../shared/fixtures/co2net,
`train_steps_case_a.*`, README "three training steps"), at the README's tolerances.

Data: `synth_wtalc.py OUT 21` from the fixture folder (sha256 checked against the JSON). Two runs, both on the CPU
with 1 torch thread (the fixture's environment), started together:

* the CLI, `co2 train` with exactly the JSON's `co2cli_command` (plus `--device cpu`, so a GPU machine runs the
  CPU recipe too): its checkpoint and `<stem>.train_state.pt` (model + Adam) give the weights after step 3 and
  Adam's moments;
* `co2cli.train.train` with the same options and an `on_step` callback, which records every batch (dataset rows,
  length, feature sum) and the loss with its parts; it also reports the seeded initialisation
  (`torch.manual_seed(seed)` then `CO2Net(20)`, what the trainer does first).

The two runs must end bit-identical, so the batches and losses recorded by the second are those of the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.shared_paths import CO2_FIXTURES, need

# train_steps_case_a.npz column order -> co2_loss part names
PARTS = {"total": "total", "mil_orig": "loss_mil_orig", "mil_supp": "loss_mil_supp", "contrastive": "contrastive",
         "mutual": "mutual", "norm": "loss_norm", "v_norm": "v_loss_norm", "f_norm": "f_loss_norm",
         "guide": "loss_guide", "v_guide": "v_loss_guide", "f_guide": "f_loss_guide"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

DRIVER = r'''
import json, sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from co2cli.co2net import CO2Net
from co2cli.train import TrainConfig, train

config = json.loads(sys.argv[1])
positions = np.load(sys.argv[2])["positions"]
torch.manual_seed(config["seed"])
init = {}
for i, (key, t) in enumerate(CO2Net(20).state_dict().items()):
    flat = t.detach().double().numpy().ravel()
    pos = positions[i][positions[i] >= 0]
    init[key] = {"sum": float(flat.sum()), "sumsq": float((flat ** 2).sum()), "entries": flat[pos].tolist()}
steps = []

def on_step(step, rows, batch, parts):
    steps.append({"step": step, "rows": [int(r) for r in rows], "T": int(batch.shape[1]),
                  "batch_sum": float(batch.astype(np.float64).sum()), "parts": parts})

config["features"], config["annotations"], config["output"] = (Path(config[k]) for k in
                                                                ("features", "annotations", "output"))
train(TrainConfig(**config), on_step=on_step)
Path(sys.argv[3]).write_text(json.dumps({"threads": torch.get_num_threads(), "init": init, "steps": steps}))
'''


@pytest.fixture(scope="module")
def case() -> dict:
    data = np.load(need(CO2_FIXTURES / "train_steps_case_a.npz"))
    return {"npz": {k: data[k] for k in data.files},
            "json": json.loads((CO2_FIXTURES / "train_steps_case_a.json").read_text())}


@pytest.fixture(scope="module")
def runs(case, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("train_case_a")
    data = root / "data"
    subprocess.run([sys.executable, str(need(CO2_FIXTURES / "synth_wtalc.py")), str(data), "21"], check=True,
                   timeout=300)
    features = data / "Synth-I3D-JOINTFeatures.npy"
    meta = case["json"]["data"]
    assert hashlib.sha256(features.read_bytes()).hexdigest() == meta["features_file_sha256"]
    content = hashlib.sha256()
    for video in np.load(features, allow_pickle=True):  # our own generator output; the hash above vouches for it
        content.update(np.ascontiguousarray(video, dtype=np.float32).tobytes())
    assert content.hexdigest() == meta["features_content_sha256"]

    env = {**os.environ, **ONE_THREAD}
    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert threads.stdout.strip() == "1"  # what the CLI run gets from the environment
    cli_ckpt = root / "cli" / "best_CO2.pkl"
    words = shlex.split(case["json"]["co2cli_command"].replace("OUT", str(data)).replace("CKPT", str(cli_ckpt)))
    assert words[:2] == ["co2", "train"]
    cli_log = root / "cli.log"
    with open(cli_log, "w") as log:  # a file, not a pipe: nobody reads it while the API run goes on
        cli = subprocess.Popen([sys.executable, "-m", "co2cli.cli", *words[1:], "--device", "cpu"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    api_ckpt = root / "api" / "best_CO2.pkl"
    config = {"dataset": "thumos14", "features": str(features), "annotations": str(data / "Synth-Annotations"),
              "output": str(api_ckpt), "max_iter": 3, "eval_every": 3, "seed": case["json"]["seed"],
              "max_seqlen": 64, "lr": 5e-5, "k": 7.0, "weight_decay": 1e-3, "select_on_test": True,
              "device": "cpu", "progress": False}
    record = root / "api_record.json"
    api = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(config),
                          str(CO2_FIXTURES / "train_steps_case_a.npz"), str(record)],
                         env=env, capture_output=True, text=True, timeout=900)
    cli.wait(timeout=900)
    assert api.returncode == 0, api.stderr
    assert cli.returncode == 0, cli_log.read_text()
    return {"cli_ckpt": cli_ckpt, "api_ckpt": api_ckpt,
            "record": json.loads(record.read_text()), "data": data}


def load_state(ckpt: Path) -> dict:
    return torch.load(ckpt.with_name(ckpt.name.split(".")[0] + ".train_state.pt"), weights_only=True,
                      map_location="cpu")


@pytest.fixture(scope="module")
def cli_state(runs) -> dict:
    return load_state(runs["cli_ckpt"])


def sampled(t: torch.Tensor, positions: np.ndarray) -> np.ndarray:
    return t.detach().double().numpy().ravel()[positions[positions >= 0]]


def test_batches_and_losses_step_by_step(case, runs) -> None:
    fx = case["npz"]
    steps = runs["record"]["steps"]
    assert runs["record"]["threads"] == 1
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert [s["rows"] for s in steps] == fx["sampled_rows"].tolist()  # exact
    assert [s["T"] for s in steps] == fx["batch_T"].tolist()
    np.testing.assert_allclose([s["batch_sum"] for s in steps], fx["batch_feature_sum"], rtol=1e-12, atol=0)
    got = np.array([[s["parts"][PARTS[name]] for name in fx["loss_components"]] for s in steps])
    worst = float(np.max(np.abs(got - fx["losses"]) / np.abs(fx["losses"])))
    print(f"\nloss parts, 3 steps: max relative difference {worst:.2e}")
    np.testing.assert_allclose(got, fx["losses"], rtol=1e-5, atol=0)
    # The CLI's summary: mean training loss over the 3 steps before its evaluation.
    summary = json.loads((runs["cli_ckpt"].parent / "best_CO2.train.json").read_text())
    assert [h["iteration"] for h in summary["history"]] == [3]
    assert summary["history"][0]["loss"] == pytest.approx(case["json"]["mean_loss_3_steps"], rel=1e-5)


def test_seeded_initialisation_is_exact(case, runs) -> None:
    fx = case["npz"]
    init = runs["record"]["init"]
    assert list(init) == fx["keys"].tolist()
    for i, key in enumerate(fx["keys"]):
        n = int((fx["positions"][i] >= 0).sum())
        np.testing.assert_array_equal(np.float32(init[key]["entries"]), fx["init_entries"][i][:n], err_msg=key)
        assert init[key]["sum"] == pytest.approx(fx["init_sum"][i], rel=1e-12, abs=1e-12), key
        assert init[key]["sumsq"] == pytest.approx(fx["init_sumsq"][i], rel=1e-12, abs=1e-12), key


def test_weights_after_three_steps(case, runs, cli_state) -> None:
    fx = case["npz"]
    keys = fx["keys"].tolist()
    model = cli_state["model"]
    assert cli_state["iteration"] == 3 and list(model) == keys
    checkpoint = torch.load(runs["cli_ckpt"], weights_only=True, map_location="cpu")
    assert list(checkpoint) == keys and all(torch.equal(checkpoint[k], model[k]) for k in keys)
    beyond, worst_entry, worst_sum, worst_sumsq = 0, 0.0, 0.0, 0.0
    for i, key in enumerate(keys):
        t = model[key].double()
        assert t.numel() == fx["numel"][i]
        d_sum = abs(float(t.sum()) - fx["final_sum"][i])
        d_sumsq = abs(float((t ** 2).sum()) - fx["final_sumsq"][i])
        assert d_sum <= 2e-4 and d_sumsq <= 1e-5, (key, d_sum, d_sumsq)
        n = int((fx["positions"][i] >= 0).sum())
        diff = np.abs(sampled(model[key], fx["positions"][i]) - fx["final_entries"][i][:n])
        beyond += int((diff > 1e-6).sum())
        worst_entry, worst_sum, worst_sumsq = max(worst_entry, diff.max()), max(worst_sum, d_sum), max(worst_sumsq,
                                                                                                      d_sumsq)
        if key.startswith("feat_encoder."):  # never in forward: no gradient, no decay, still the initialisation
            np.testing.assert_array_equal(sampled(model[key], fx["positions"][i]).astype(np.float32),
                                          fx["init_entries"][i][:n])
            assert float(t.sum()) == pytest.approx(fx["init_sum"][i], rel=1e-12, abs=1e-12)
    print(f"\nafter 3 steps: max |d entry| {worst_entry:.2e} ({beyond} of 1623 > 1e-6), max |d sum| {worst_sum:.2e}, "
          f"max |d sumsq| {worst_sumsq:.2e}")
    assert beyond <= 2


def test_adam_moments(case, cli_state) -> None:
    fx = case["npz"]
    keys = fx["keys"].tolist()
    optimizer = cli_state["optimizer"]
    [group] = optimizer["param_groups"]
    assert group["params"] == list(range(28))  # CO2Net has no buffers: parameter i is state-dict key i
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (5e-5, 1e-3, (0.9, 0.999), 1e-8)
    assert not group.get("decoupled_weight_decay", False)  # Adam with L2 decay, not AdamW
    worst = {"exp_avg": 0.0, "exp_avg_sq": 0.0, "exp_avg sum": 0.0, "exp_avg_sq sum": 0.0}
    for i, key in enumerate(keys):
        state = optimizer["state"].get(i)
        assert (state is not None) == bool(fx["adam_has_state"][i]), key
        if state is None:
            continue
        assert float(state["step"]) == 3.0
        assert state["exp_avg"].shape == cli_state["model"][key].shape
        n = int((fx["positions"][i] >= 0).sum())
        for name, entries_atol, sum_atol in (("exp_avg", 5e-7, 1e-3), ("exp_avg_sq", 5e-9, 3e-7)):
            d_entries = float(np.abs(sampled(state[name], fx["positions"][i])
                                     - fx[f"adam_{name}_entries"][i][:n]).max())
            d_sum = abs(float(state[name].double().sum()) - fx[f"adam_{name}_sum"][i])
            assert d_entries <= entries_atol and d_sum <= sum_atol, (key, name, d_entries, d_sum)
            worst[name] = max(worst[name], d_entries)
            worst[f"{name} sum"] = max(worst[f"{name} sum"], d_sum)
    assert [k for i, k in enumerate(keys) if i not in optimizer["state"]] == ["feat_encoder.0.weight",
                                                                               "feat_encoder.0.bias"]
    print("\nAdam: " + ", ".join(f"max |d {k}| {v:.2e}" for k, v in worst.items()))


def test_cli_and_api_runs_are_the_same_run(runs, cli_state) -> None:
    """The batches and losses checked above come from the API run; the CLI run ends bit-identical to it."""
    api_state = load_state(runs["api_ckpt"])
    assert all(torch.equal(api_state["model"][k], cli_state["model"][k]) for k in cli_state["model"])
    a, b = api_state["optimizer"]["state"], cli_state["optimizer"]["state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[i][n], b[i][n]) for i in a for n in ("exp_avg", "exp_avg_sq"))
    assert api_state["sampler_rng"] == cli_state["sampler_rng"]
