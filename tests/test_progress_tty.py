"""The live progress display as a user sees it: `co2 localize` in a pseudo-terminal (100 x 30), its output fed into
pyte (a VT100 emulator), the screen inspected while it runs and when it ends.

Checked: the per-video bar counts frames against the video's size with frames/s and an ETA (not `0/?`), and a
note printed while the bars are live (a feature-cache hit) leaves no stale bars behind.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.shared_paths import SAMPLE_VIDEOS, need

pyte = pytest.importorskip("pyte") if not os.environ.get("CI") else __import__("pyte")

COLS, ROWS = 100, 30
BAR = re.compile(r"^(inputs|clip\.mp4)\s+━")  # a progress line (the results table's borders start with ┏ ┡ └)


def run_in_tty(*args: object, timeout_s: float = 300) -> tuple[int, list[str], list[list[str]]]:
    """(exit code, final screen lines, a snapshot of the screen after every read) of `co2 ARGS` on a terminal."""
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    env = {**os.environ, "COLUMNS": str(COLS), "LINES": str(ROWS), "TERM": "xterm-256color"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: co2 with the pty as its terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "co2cli.cli", *map(str, args)], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    snapshots = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        stream.feed(data)
        snapshots.append([line.rstrip() for line in screen.display])
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), [line.rstrip() for line in screen.display], snapshots


def test_progress_counts_frames_and_notes_leave_no_stale_bars(tmp_path: Path, i3d_rgb_weights: Path) -> None:
    from tests.test_video_pipeline import cut_clip

    clip = cut_clip(need(SAMPLE_VIDEOS / "v_GGSY1Qvo990.mp4"), tmp_path / "clip.mp4", 6.0)  # 151 frames, 2 chunks
    code, screen, snapshots = run_in_tty("localize", clip, "--classes", "kinetics")
    assert code == 0, "\n".join(screen)
    seen = {line for snap in snapshots for line in snap if line.startswith("clip.mp4")}
    live = [line for line in seen if re.search(r"\b(\d+)/151\b.*\d+\.\d frames/s\s+ETA \d+:\d\d$", line)
            and not re.search(r"\b0/151\b", line)]
    assert live, f"no frames/s and ETA on the per-video bar; it showed: {sorted(seen)}"
    assert not [line for line in screen if BAR.match(line)], "\n".join(screen)

    code, screen, _ = run_in_tty("localize", clip, "--classes", "kinetics")  # a cache hit: a note during the bars
    assert code == 0, "\n".join(screen)
    assert sum("clip: features from the cache" in line for line in screen) == 1, "\n".join(screen)
    assert not [line for line in screen if BAR.match(line)], "stale progress bars:\n" + "\n".join(screen)
