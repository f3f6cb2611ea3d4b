"""`--executor ray` on real Ray clusters on this machine: a two-node cluster (`ray.cluster_utils.Cluster`, two
1-CPU nodes) and a local Ray started by the command itself.

The reference is the local executor on the same clips. Features are compared bit for bit: both executors run
I3D with one torch thread here (the local run under OMP_NUM_THREADS=1, each 1-CPU Ray worker with
torch.set_num_threads(1)); a different thread count changes float32 sums in the last bits (~2e-6).

`co2 extract-flow --executor ray` (workers stream encoded flow back, the driver writes it) is compared byte for
byte with the local executor: TV-L1 through OpenCV is deterministic whatever the chunking or process count.

Ray is optional: without it these tests skip locally, but under CI (CI=true) a missing Ray fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.shared_paths import SAMPLE_VIDEOS, need

WEIGHTLIFTING = "v_GGSY1Qvo990.mp4"
DOG = "v_ZNVhz7ctTq0.mp4"
GOOD = ("a", "b", "c", "d")


def _ray():
    if os.environ.get("CI"):
        import ray  # a missing Ray is a failure in CI, never a skip

        return ray
    return pytest.importorskip("ray")


def co2(*args: object, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "co2cli.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def make_env(home: Path, threads: int | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"CO2CLI_HOME": str(home), "COLUMNS": "160"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def outputs(folder: Path) -> dict[str, tuple[bytes, dict]]:
    """name -> (.npy bytes, recipe) of every output in `folder`."""
    return {p.stem: (p.read_bytes(), json.loads(p.with_suffix(".json").read_text()))
            for p in sorted(folder.glob("*.npy"))}


@pytest.fixture(scope="module")
def home(tmp_path_factory, i3d_rgb_weights: Path) -> Path:
    """A co2cli home with only the real RGB I3D."""
    home = tmp_path_factory.mktemp("home_ray")
    proc = co2("weights", "import", i3d_rgb_weights, "--as", "i3d-rgb", env=make_env(home))
    assert proc.returncode == 0, proc.stderr
    return home


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four 2 s clips (two scenes, each twice under another name) and one corrupt file."""
    from tests.test_video_pipeline import cut_clip

    folder = tmp_path_factory.mktemp("ray_clips")
    cut_clip(need(SAMPLE_VIDEOS / WEIGHTLIFTING), folder / "a.mp4", 2.0)
    cut_clip(need(SAMPLE_VIDEOS / DOG), folder / "b.mp4", 2.0)
    shutil.copy(folder / "a.mp4", folder / "c.mp4")
    shutil.copy(folder / "b.mp4", folder / "d.mp4")
    (folder / "bad.mp4").write_bytes((folder / "a.mp4").read_bytes()[:20000])
    return folder


@pytest.fixture(scope="module")
def local_run(home: Path, clips: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The local executor's outputs for the clips (one torch thread)."""
    out = tmp_path_factory.mktemp("local_out")
    proc = co2("extract-features", clips, "-o", out, "--streams", "rgb", env=make_env(home, threads=1))
    assert proc.returncode == 1, proc.stderr
    assert sorted(outputs(out)) == list(GOOD)
    return out, proc


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine (head + worker, 1 CPU each, small object stores), shut down afterwards."""
    _ray()
    from ray.cluster_utils import Cluster

    store = 150 * 2**20
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "object_store_memory": store, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=store)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def test_two_node_cluster_matches_local_executor(cluster, home: Path, clips: Path, local_run, tmp_path: Path) -> None:
    local_out, local_proc = local_run
    out = tmp_path / "ray_out"
    out.mkdir()
    np.save(out / "a.npy", np.zeros((1, 1024), np.float32))  # a stale output, also kept elsewhere (hard links)
    (out / "a.json").write_text('{"stale": true}')
    (tmp_path / "keep").mkdir()
    for suffix in (".npy", ".json"):
        os.link(out / f"a{suffix}", tmp_path / "keep" / f"a{suffix}")
    old = {p.name: (p.stat().st_ino, p.read_bytes()) for p in (tmp_path / "keep").iterdir()}
    proc = co2("extract-features", clips, "-o", out, "--streams", "rgb", "--executor", "ray", "--overwrite",
               "--ray-address", cluster.address, env=make_env(home))
    assert proc.returncode == 1, proc.stderr
    # --overwrite replaced both files by rename (new inodes; the linked old files are untouched), never rewrote
    # them in place, and kept no stale recipe (outputs equal the local run's below)
    assert {p.name: (p.stat().st_ino, p.read_bytes()) for p in (tmp_path / "keep").iterdir()} == old
    assert all((out / name).stat().st_ino != inode for name, (inode, _) in old.items())
    assert "2 worker(s)" in proc.stderr and "(2 nodes)" in proc.stderr
    assert outputs(out) == outputs(local_out)  # bit-identical features, equal recipes
    assert error_lines(proc) == error_lines(local_proc) and len(error_lines(proc)) == 1
    assert "bad.mp4" in error_lines(proc)[0]
    assert sorted(proc.stdout.splitlines()) == [str(out / f"{name}.npy") for name in GOOD]
    assert local_proc.stdout.splitlines() == [str(local_out / f"{name}.npy") for name in GOOD]
    assert proc.stderr.splitlines()[-1].startswith("extracted 4 inputs") and ", 1 failed" in proc.stderr
    assert not list(out.glob(".*.part*"))


def test_killed_worker_costs_only_a_retry_and_rerun_skips(cluster, home: Path, clips: Path, local_run,
                                                          tmp_path: Path, monkeypatch, capfd) -> None:
    from co2cli import distributed
    from co2cli.batch import BatchEvents
    from co2cli.cli import named_inputs

    monkeypatch.setenv("CO2CLI_HOME", str(home))
    named, _ = named_inputs(sorted(clips.glob("*.mp4")))
    out = tmp_path / "out"
    killed: list[tuple[int, bool]] = []
    options = distributed.ClusterOptions(address=cluster.address)

    with distributed.RayPool(distributed.WorkerSpec(("rgb",)), options) as pool:
        def on_end(item) -> None:  # noqa: ANN001
            if item.status == "done" and not killed:  # after the first result: SIGKILL a worker mid-video
                busy = [pid for pid, current, *_ in pool.poll_status(timeout=5) if current]
                victim = (busy or pool.worker_pids(busy_only=True))[0]
                os.kill(victim, signal.SIGKILL)
                killed.append((victim, bool(busy)))

        items = distributed.extract_batch(named, out, pool, events=BatchEvents(on_end=on_end))
        deaths, resubmitted = pool.deaths, pool.resubmitted
    captured = capfd.readouterr()
    assert captured.out == ""  # Ray's own report of the death goes to stderr: stdout carries results only
    assert "Ray worker" in captured.err and "died" in captured.err
    assert killed == [(killed[0][0], True)]  # one worker, killed while it was extracting a video
    assert deaths == 1 and resubmitted >= 1
    status = {item.name: item.status for item in items}
    assert status == {"a": "done", "b": "done", "c": "done", "d": "done", "bad": "failed"}
    assert outputs(out) == outputs(local_run[0])  # every good output, identical to the uninterrupted run
    [failed] = [item for item in items if item.status == "failed"]
    assert f"error: {failed.message}" == error_lines(local_run[1])[0]

    # A rerun skips what is finished (files untouched) and only retries the bad file; an output another job
    # holds the claim of (here: c, redone by a thread) is left to it and taken as done once it lets go.
    from co2cli.batch import claim
    from co2cli.features import save

    c_npy, c_json = out / "c.npy", out / "c.json"
    c_features, c_recipe = np.load(c_npy), json.loads(c_json.read_text())
    c_npy.unlink(), c_json.unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    holding, release = threading.Event(), threading.Event()

    def other_job() -> None:
        with claim(out, "c"):
            holding.set()
            release.wait(60)
            save(out, "c", c_features, c_recipe)

    thread = threading.Thread(target=other_job)
    thread.start()
    holding.wait(10)

    def on_end_rerun(item) -> None:  # noqa: ANN001 - the bad file is the only one that runs: c is free after it
        if item.status == "failed":
            release.set()

    try:
        with distributed.RayPool(distributed.WorkerSpec(("rgb",)), options) as pool:
            again = distributed.extract_batch(named, out, pool, events=BatchEvents(on_end=on_end_rerun))
    finally:
        release.set()
        thread.join()
    assert {item.name: (item.status, item.message) for item in again if item.status != "failed"} == {
        "a": ("skipped", "already extracted"), "b": ("skipped", "already extracted"),
        "c": ("skipped", "extracted by another job"), "d": ("skipped", "already extracted")}
    assert [item.name for item in again if item.status == "failed"] == ["bad"]
    assert all(p.stat().st_mtime_ns == mtime for p in out.iterdir() if (mtime := mtimes.get(p.name)))
    assert outputs(out) == outputs(local_run[0])


def test_worker_that_cannot_fit_is_one_error(cluster, home: Path, clips: Path, tmp_path: Path) -> None:
    proc = co2("extract-features", clips / "a.mp4", "-o", tmp_path, "--streams", "rgb", "--executor", "ray",
               "--ray-address", cluster.address, "--cpus-per-worker", "2", env=make_env(home))
    assert proc.returncode == 1
    assert error_lines(proc) == [f"error: no node of {cluster.address} has 2 CPUs for a worker (--cpus-per-worker 2)"]


def test_localize_on_a_local_ray_matches_local(home: Path, clips: Path, local_run, tmp_path: Path) -> None:
    """No --ray-address and no $RAY_ADDRESS: the command starts a local Ray for the run. Feature files are
    analysed on the driver, videos on the workers; the feature cache is written as locally."""
    _ray()
    homes = {}
    for name in ("local", "ray"):
        homes[name] = tmp_path / f"home_{name}"
        shutil.copytree(home / "weights", homes[name] / "weights")
    inputs = [clips / "a.mp4", clips / "b.mp4", clips / "bad.mp4", local_run[0] / "c.npy"]
    args = ("localize", *inputs, "--classes", "kinetics", "--format", "json")
    local = co2(*args, env=make_env(homes["local"], threads=1))
    ray_proc = co2(*args, "--executor", "ray", env=make_env(homes["ray"]))
    assert local.returncode == ray_proc.returncode == 1, ray_proc.stderr
    assert "a local Ray started for this run" in ray_proc.stderr
    assert json.loads(ray_proc.stdout) == json.loads(local.stdout)
    assert list(json.loads(ray_proc.stdout)["results"]) == ["a", "b", "c"]
    assert error_lines(ray_proc) == error_lines(local) and len(error_lines(local)) == 1
    cache = {name: {p.relative_to(h): p.read_bytes() for p in sorted((h / "features").rglob("*")) if p.is_file()}
             for name, h in homes.items()}
    assert cache["ray"] == cache["local"] and len(cache["ray"]) == 4  # a and b, .npy + .json


def test_without_ray_one_line_names_the_install_command(tmp_path: Path, clips: Path) -> None:
    """Ray blocked from import (sys.modules['ray'] = None); an empty home shows the check comes before weights."""
    from co2cli.distributed import INSTALL_HINT

    runner = ("import sys; sys.modules['ray'] = None; from co2cli.cli import main; "
              "sys.argv = ['co2', *sys.argv[1:]]; main()")
    env = make_env(tmp_path / "empty_home")
    for args in (("extract-features", clips, "-o", tmp_path / "out", "--executor", "ray"),
                 ("extract-flow", clips, "-o", tmp_path / "out", "--executor", "ray"),
                 ("localize", clips / "a.mp4", "--executor", "ray")):
        proc = subprocess.run([sys.executable, "-c", runner, *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [f"error: {INSTALL_HINT}"] and proc.stdout == ""
        assert "pip install 'co2cli[ray]'" in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = co2("extract-features", clips, "-o", tmp_path / "out", "--workers", "2", env=env)
    assert proc.returncode == 2 and error_lines(proc) == ["error: --workers needs --executor ray"]
    proc = co2("extract-flow", clips, "-o", tmp_path / "out", "--cpus-per-worker", "2", env=env)
    assert proc.returncode == 2 and error_lines(proc) == ["error: --cpus-per-worker needs --executor ray"]


# ---- co2 extract-flow --executor ray ---------------------------------------------------------------------


FLOW_ARGS = ("--region", "crop", "--backend", "opencv")
"""TV-L1 on the 224 crop: the cheapest flow, the same code path."""


def flow_outputs(folder: Path) -> dict[str, bytes]:
    """relative path -> bytes of every file in `folder` (npy + json, or jpg folders)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def flow_clips(tmp_path_factory) -> Path:
    """Two 1.3 s clips (over 32 frames: three chunks when workers use chunk_snippets=1, 16 frames each) and a file that
    stops half way."""
    from tests.test_video_pipeline import cut_clip

    folder = tmp_path_factory.mktemp("ray_flow_clips")
    cut_clip(need(SAMPLE_VIDEOS / WEIGHTLIFTING), folder / "a.mp4", 1.3)
    cut_clip(need(SAMPLE_VIDEOS / DOG), folder / "b.mp4", 1.3)
    data = (folder / "b.mp4").read_bytes()
    (folder / "bad.mp4").write_bytes(data[: len(data) // 2])
    return folder


@pytest.fixture(scope="module")
def local_flow(home: Path, flow_clips: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The local executor's npy flow for the flow clips."""
    out = tmp_path_factory.mktemp("local_flow")
    proc = co2("extract-flow", flow_clips, "-o", out, *FLOW_ARGS, env=make_env(home))
    assert proc.returncode == 1, proc.stderr
    assert sorted(flow_outputs(out)) == ["a.flow.json", "a.flow.npy", "b.flow.json", "b.flow.npy"]
    assert np.load(out / "a.flow.npy").shape[1:] == (224, 224, 2) and np.load(out / "a.flow.npy").shape[0] > 32
    return out, proc


def test_extract_flow_on_two_node_cluster_matches_local(cluster, home: Path, flow_clips: Path, local_flow,
                                                        tmp_path: Path) -> None:
    local_out, local_proc = local_flow
    out = tmp_path / "flow"
    args = ("extract-flow", flow_clips, "-o", out, *FLOW_ARGS, "--executor", "ray", "--ray-address", cluster.address)
    proc = co2(*args, env=make_env(home))
    assert proc.returncode == 1, proc.stderr
    assert "2 worker(s)" in proc.stderr and "(2 nodes)" in proc.stderr
    assert flow_outputs(out) == flow_outputs(local_out)  # bit-identical fields, equal recipes, nothing partial
    assert error_lines(proc) == error_lines(local_proc) and len(error_lines(proc)) == 1
    assert "bad.mp4" in error_lines(proc)[0]
    assert sorted(proc.stdout.splitlines()) == [str(out / "a.flow.npy"), str(out / "b.flow.npy")]
    assert proc.stderr.splitlines()[-1].startswith("extracted flow for 2 inputs") and ", 1 failed" in proc.stderr

    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = co2(*args, env=make_env(home))  # resumes: only the bad file is tried again
    assert again.returncode == 1 and ", 2 already done" in again.stderr.splitlines()[-1]
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_extract_flow_worker_killed_mid_video_voids_its_partial_file(cluster, home: Path, flow_clips: Path,
                                                                     local_flow, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """SIGKILL the worker streaming a video right after its first chunk reached the driver's file: the partial
    file is dropped, the video runs again, and the batch ends with every output equal to the local run."""
    from co2cli import distributed, flowfiles
    from co2cli.cli import named_inputs

    monkeypatch.setenv("CO2CLI_HOME", str(home))
    named, _ = named_inputs(sorted(flow_clips.glob("*.mp4")))
    out = tmp_path / "flow"
    spec = distributed.WorkerSpec(("flow",), "cpu", chunk_snippets=1, flow_backend="opencv", flow_region="crop",
                                  load_models=False)
    killed: list[tuple[str, int, int]] = []
    aborted: list[str] = []
    pool_ref: list = []
    real_add, real_abort = flowfiles.NpyWriter.add, flowfiles.NpyWriter.abort

    def add(self, chunk) -> None:  # noqa: ANN001 - on the driver: the chunk a worker just streamed
        real_add(self, chunk)
        name = self.target.name.removesuffix(".flow.npy")
        if not killed and name != "bad":
            [pid] = [pid for pid, current, *_ in pool_ref[0].poll_status(timeout=5)
                     if current and Path(current).stem == name]
            partials = list(out.glob(f".{name}.flow.npy.*.part*"))
            assert len(partials) == 1 and partials[0].stat().st_size > 16 * 224 * 224 * 2 * 4
            os.kill(pid, signal.SIGKILL)
            killed.append((name, pid, self.fields))

    def abort(self) -> None:  # noqa: ANN001
        aborted.append(self.target.name)
        real_abort(self)

    monkeypatch.setattr(flowfiles.NpyWriter, "add", add)
    monkeypatch.setattr(flowfiles.NpyWriter, "abort", abort)
    with distributed.RayPool(spec, distributed.ClusterOptions(address=cluster.address, quiet=True)) as pool:
        pool_ref.append(pool)
        items = distributed.extract_flow_batch(named, out, pool, "npy")
        deaths = pool.deaths
    assert len(killed) == 1 and killed[0][2] == 16  # killed after the first of three chunks
    assert deaths == 1 and aborted.count(f"{killed[0][0]}.flow.npy") == 1
    assert {item.name: item.status for item in items} == {"a": "done", "b": "done", "bad": "failed"}
    assert flow_outputs(out) == flow_outputs(local_flow[0])  # the redone video included; no partial file left
    [failed] = [item for item in items if item.status == "failed"]
    assert f"error: {failed.message}" == error_lines(local_flow[1])[0]


def test_extract_flow_jpg_on_a_local_ray_matches_local(home: Path, flow_clips: Path, tmp_path: Path) -> None:
    """jpg: workers encode the JPEG files, the driver writes them; the folders equal the local executor's."""
    _ray()
    args = ("extract-flow", flow_clips / "a.mp4", *FLOW_ARGS, "--format", "jpg")
    local = co2(*args, "-o", tmp_path / "local", env=make_env(home))
    ray_proc = co2(*args, "-o", tmp_path / "ray", "--executor", "ray", "--workers", "1", env=make_env(home))
    assert local.returncode == ray_proc.returncode == 0, ray_proc.stderr
    assert "a local Ray started for this run" in ray_proc.stderr and "1 worker(s)" in ray_proc.stderr
    files = flow_outputs(tmp_path / "ray")
    assert files == flow_outputs(tmp_path / "local")
    fields = json.loads(files["a/flow.json"])["fields"]
    assert fields > 32 and len([name for name in files if name.endswith(".jpg")]) == 2 * fields
    assert ray_proc.stdout.splitlines() == [str(tmp_path / "ray" / "a")]
