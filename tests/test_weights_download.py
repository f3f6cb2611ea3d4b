"""`co2 weights install i3d-flow` / `--from URL|PATH` against a local HTTP server (127.0.0.1, no network).

The served file is a piergiaj-layout flow I3D state dict built from the architecture; its pin (git blob id) is
computed here with git's own definition (sha1 of `blob <size>\\0` + bytes) and handed to co2 through the manifest
override file, as a mirror would. Each failure must be one stderr line, a non-zero exit and an empty store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from co2cli import i3d
from tests.shared_paths import CO2_FIXTURES, need

FLOW_PATH = "/models/flow_imagenet.pt"


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Serves `files[path]` in the server's `mode`: ok (Range aware), norange, truncated, gone (dies mid-file)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        data = self.server.files.get(self.path)  # type: ignore[attr-defined]
        mode = self.server.mode  # type: ignore[attr-defined]
        self.server.ranges.append(self.headers.get("Range"))  # type: ignore[attr-defined]
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and mode == "ok":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        sent = body[: len(body) // 2] if mode in ("truncated", "gone") else body
        self.send_header("Content-Length", str(len(sent) if mode == "truncated" else len(body)))
        self.end_headers()
        if mode == "slow":  # 20 pieces, 0.1 s apart: the progress bar has time to draw
            step = -(-len(sent) // 20)
            for i in range(0, len(sent), step):
                self.wfile.write(sent[i:i + step])
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.wfile.write(sent)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def flow_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("flow") / "flow_imagenet.pt"
    torch.save(i3d.InceptionI3d(400, in_channels=2).state_dict(), path)
    return path.read_bytes()


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.mode, srv.ranges = {}, "ok", []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def co2(home: Path, pins: dict, *args: object) -> subprocess.CompletedProcess:
    override = home.parent / "override.json"
    override.write_text(json.dumps(pins))
    env = {**os.environ, "CO2CLI_HOME": str(home), "CO2CLI_WEIGHTS_MANIFEST_OVERRIDE": str(override)}
    return subprocess.run([sys.executable, "-m", "co2cli.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def pin(server: ThreadingHTTPServer, data: bytes) -> dict:
    base = f"http://127.0.0.1:{server.server_port}"
    return {"i3d-flow": {"url_base": base, "git_blob_id": blob_id(data)}}


def store(home: Path) -> list[str]:
    folder = home / "weights"
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock") if folder.is_dir() else []


def one_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def test_pinned_install_records_sha256_and_validates(server, flow_bytes: bytes, tmp_path: Path) -> None:
    server.files[FLOW_PATH] = flow_bytes
    home = tmp_path / "home"
    proc = co2(home, pin(server, flow_bytes), "weights", "install", "i3d-flow")
    assert proc.returncode == 0, proc.stderr
    assert (home / "weights" / "i3d-flow.pt").read_bytes() == flow_bytes
    record = json.loads((home / "weights" / "installed.json").read_text())["weights"]["i3d-flow"]
    assert record["sha256"] == hashlib.sha256(flow_bytes).hexdigest()
    assert record["git_blob_id"] == blob_id(flow_bytes)
    assert record["source"].endswith(FLOW_PATH) and record["source"].startswith("http://127.0.0.1:")
    assert co2(home, pin(server, flow_bytes), "weights", "verify").returncode == 0
    again = co2(home, pin(server, flow_bytes), "weights", "install", "i3d-flow")
    assert again.returncode == 0 and "already installed" in again.stderr and len(server.ranges) == 1


@pytest.mark.parametrize("mode", ["wrong-id", "truncated", "404", "gone", "not-a-model"])
def test_failed_downloads_install_nothing(mode: str, server, flow_bytes: bytes, tmp_path: Path) -> None:
    data = flow_bytes[:200_000]  # failures refuse before loading anything: a prefix is enough to serve
    pins = pin(server, data)
    if mode == "wrong-id":
        pins["i3d-flow"]["git_blob_id"] = blob_id(data + b"x")
    if mode != "404":
        server.files[FLOW_PATH] = data
    server.mode = mode if mode in ("truncated", "gone") else "ok"
    home = tmp_path / "home"
    proc = co2(home, pins, "weights", "install", "i3d-flow")
    expected = {"wrong-id": ("git blob id", pins["i3d-flow"]["git_blob_id"], "nothing installed"),
                "truncated": ("git blob id", "100000 bytes", "nothing installed"),
                "404": ("HTTP 404",), "gone": ("interrupted after 100000 of 200000 bytes", "again to resume"),
                "not-a-model": ("flow_imagenet.pt",)}[mode]
    one_error(proc, *expected)
    assert store(home) == []
    partials = list((home / "downloads").glob("*.part")) if (home / "downloads").is_dir() else []
    assert [p.stat().st_size for p in partials] == ([100_000] if mode == "gone" else [])


def test_interrupted_download_resumes_with_a_range_request(server, flow_bytes: bytes, tmp_path: Path) -> None:
    server.files[FLOW_PATH] = flow_bytes
    home = tmp_path / "home"
    server.mode = "gone"
    one_error(co2(home, pin(server, flow_bytes), "weights", "install", "i3d-flow"), "again to resume")
    half = len(flow_bytes) // 2
    server.mode = "ok"
    proc = co2(home, pin(server, flow_bytes), "weights", "install", "i3d-flow")
    assert proc.returncode == 0, proc.stderr
    assert server.ranges == [None, f"bytes={half}-"]
    assert (home / "weights" / "i3d-flow.pt").read_bytes() == flow_bytes
    assert not list((home / "downloads").glob("*.part"))


def test_server_ignoring_range_restarts_cleanly(server, flow_bytes: bytes, tmp_path: Path) -> None:
    data = flow_bytes[:300_000]
    server.files[FLOW_PATH] = data
    home = tmp_path / "home"
    part = home / "downloads" / "i3d-flow--flow_imagenet.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # a stale partial: if appended to, the blob id could not match
    server.mode = "norange"
    one_error(co2(home, pin(server, data), "weights", "install", "i3d-flow"), "flow_imagenet.pt")  # not a model
    assert server.ranges == ["bytes=1000-"] and store(home) == [] and not part.exists()


def test_from_url_trusts_on_first_use(server, flow_bytes: bytes, tmp_path: Path) -> None:
    server.files["/ckpt/best_CO2.pkl.gz"] = b"not a checkpoint"
    home = tmp_path / "home"
    url = f"http://127.0.0.1:{server.server_port}/ckpt/best_CO2.pkl.gz"
    one_error(co2(home, {}, "weights", "install", "co2-thumos", "--from", url), "best_CO2.pkl.gz")
    assert store(home) == []
    ckpt = need(CO2_FIXTURES / "reference_ckpt.pkl.gz")
    server.files["/ckpt/best_CO2.pkl.gz"] = ckpt.read_bytes()
    proc = co2(home, {}, "weights", "install", "co2-thumos", "--from", url)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert proc.returncode == 0, proc.stderr
    assert "trusting this file on first use" in proc.stderr and sha in proc.stderr
    record = json.loads((home / "weights" / "installed.json").read_text())["weights"]["co2-thumos"]
    assert record["sha256"] == sha and record["source"] == url and record["file"] == "co2-thumos.pkl.gz"


def test_download_shows_a_progress_bar_on_a_terminal(server, flow_bytes: bytes, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal (a pty read through a VT100 emulator) the download draws size, speed and ETA on stderr."""
    pytest.importorskip("pyte")
    from tests.test_progress_tty import run_in_tty

    data = flow_bytes[:2_000_000]
    server.files[FLOW_PATH] = data
    server.mode = "slow"
    override = tmp_path / "override.json"
    override.write_text(json.dumps(pin(server, data)))
    monkeypatch.setenv("CO2CLI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CO2CLI_WEIGHTS_MANIFEST_OVERRIDE", str(override))
    code, screen, snapshots = run_in_tty("weights", "install", "i3d-flow")
    assert code == 1 and "flow_imagenet.pt" in "\n".join(screen)  # a prefix: refused by validation, as it should
    bars = {line for snap in snapshots for line in snap if line.startswith("i3d-flow")}
    assert any(re.search(r"\d+(\.\d+)?/2\.0 MB .*(k|M)B/s", line) for line in bars), bars


def test_from_path_of_a_pinned_name_is_checked_against_the_pin(flow_bytes: bytes, tmp_path: Path) -> None:
    """A local copy of flow_imagenet.pt must have the pinned blob id too (an offline mirror, not any file)."""
    local = tmp_path / "flow_imagenet.pt"
    local.write_bytes(flow_bytes)
    home = tmp_path / "home"
    pins = {"i3d-flow": {"git_blob_id": blob_id(flow_bytes + b"x")}}
    one_error(co2(home, pins, "weights", "install", "i3d-flow", "--from", local), "git blob id", "nothing installed")
    assert store(home) == [] and local.read_bytes() == flow_bytes  # the user's file is left alone
    proc = co2(home, {"i3d-flow": {"git_blob_id": blob_id(flow_bytes)}}, "weights", "install", "i3d-flow",
               "--from", local)
    assert proc.returncode == 0 and "trusting" not in proc.stderr, proc.stderr
    assert (home / "weights" / "i3d-flow.pt").read_bytes() == flow_bytes


def test_url_base_can_point_at_a_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    from co2cli import weights

    monkeypatch.setenv("CO2CLI_WEIGHTS_URL_BASE", "http://127.0.0.1:9/mirror/")
    assert weights.pinned_url("i3d-rgb-imagenet") == "http://127.0.0.1:9/mirror/models/rgb_imagenet.pt"
