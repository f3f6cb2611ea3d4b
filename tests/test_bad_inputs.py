"""The bad-input corpus: every kind of bad input or hostile environment across the commands, each answered with
the right exit code, exactly one `error:` line that names the problem, no traceback, and nothing left behind
(temporary files included). Plus two jobs on one output folder, and a full disk (a small tmpfs)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.shared_paths import CO2_FIXTURES, SAMPLE_VIDEOS, THUMOS_ANNOTATIONS, need

CKPT = CO2_FIXTURES / "reference_ckpt.pkl.gz"


def run(args: list[object], home: Path, stdin: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "CO2CLI_HOME": str(home), "COLUMNS": "200"}
    env.pop("CO2CLI_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "co2cli.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, input=stdin)


def listing(folder: Path) -> list[str]:
    """Every file below `folder` (hidden temporaries included), relative."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@dataclass
class Case:
    kind: str
    make: Callable[[Path], list[object]]  # builds the inputs in a fresh folder, returns the arguments
    fragment: str  # must appear in the one error line
    code: int = 1
    watch: str | None = None  # a folder (relative to the case folder) whose content must not change


def features(folder: Path, name: str = "clip.npy", rows: int = 40) -> Path:
    arr = np.load(need(CO2_FIXTURES / "forward_cases.npz"))["T64_input"][0, :rows].astype(np.float32)
    path = folder / name
    np.save(path, arr)
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def truncated_video(folder: Path) -> Path:
    data = need(SAMPLE_VIDEOS / "v_GGSY1Qvo990.mp4").read_bytes()
    return write(folder / "cut.mp4", data[: len(data) // 3])


def audio_only(folder: Path) -> Path:
    import av

    path = folder / "sound.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 16000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def one_frame(folder: Path) -> Path:
    import av

    path = folder / "still.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def header_promises_more(folder: Path) -> Path:
    path = features(folder, "short.npy")
    data = path.read_bytes()
    return write(path, data[: len(data) - 2048 * 4 * 5])  # 5 rows missing


def pickled_npy(folder: Path) -> Path:
    path = folder / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return path


class Evil:
    def __reduce__(self):  # noqa: ANN204 - would run a shell command if ever unpickled unsafely
        return (os.system, ("touch /tmp/co2cli-pwned",))


def malicious_checkpoint(folder: Path) -> Path:
    return write(folder / "evil.pkl", pickle.dumps({"classifier.4.weight": Evil()}))


def i3d_as_co2(folder: Path) -> Path:
    import torch

    return write(folder / "i3d_not_co2.pt", _torch_bytes({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(64, 3, 7, 7, 7)}))


def _torch_bytes(obj: object) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


MOUNTS: list[Path] = []


def readonly_folder(folder: Path) -> Path:
    """A read-only folder that root cannot write either: a read-only tmpfs (chmod does not stop root)."""
    target = folder / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return target
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(target)], capture_output=True)
    if made.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a read-only tmpfs in CI: {made.stderr.decode().strip()}")
        pytest.skip(f"cannot mount a read-only tmpfs here: {made.stderr.decode().strip()}")
    MOUNTS.append(target)
    return target


def existing_results(folder: Path) -> Path:
    return write(folder / "keep" / "results.json", '{"results": {"earlier": []}}\n')


def predictions(folder: Path, rows: list[str], name: str = "preds.csv") -> Path:
    return write(folder / name, "video-id,t-start,t-end,label,score\n" + "\n".join(rows) + "\n")


CASES = [
    # ---- co2 localize
    Case("missing input", lambda d: ["localize", d / "nope.npy", "-c", need(CKPT)], "not found"),
    Case("no inputs at all", lambda d: ["localize"], "no inputs", code=2),
    Case("folder without inputs", lambda d: ["localize", (d / "empty").mkdir() or d / "empty"],
         "the folder holds no videos"),
    Case("empty .npy", lambda d: ["localize", write(d / "e.npy", b""), "-c", need(CKPT)], "empty"),
    Case("text named .npy", lambda d: ["localize", write(d / "t.npy", "hello\n"), "-c", need(CKPT)],
         "not a .npy file"),
    Case("wrong feature shape", lambda d: ["localize", _npy(d / "w.npy", np.zeros((9, 1000), np.float32)), "-c",
                                           need(CKPT)], "expected (T, 2048)"),
    Case("NaN features", lambda d: ["localize", _npy(d / "n.npy", np.full((9, 2048), np.nan, np.float32)), "-c",
                                    need(CKPT)], "NaN"),
    Case("object array .npy", lambda d: ["localize", pickled_npy(d), "-c", need(CKPT)], "object arrays are refused"),
    Case("header promises more rows", lambda d: ["localize", header_promises_more(d), "-c", need(CKPT)],
         "truncated"),
    Case("zero snippets", lambda d: ["localize", _npy(d / "z.npy", np.zeros((0, 2048), np.float32)), "-c",
                                     need(CKPT)], "no snippets"),
    Case("checkpoint missing", lambda d: ["localize", features(d), "-c", d / "none.pkl"], "not found"),
    Case("checkpoint junk", lambda d: ["localize", features(d), "-c", write(d / "junk.pkl", "junk bytes " * 90)],
         "not a readable PyTorch"),
    Case("checkpoint truncated gzip", lambda d: ["localize", features(d), "-c",
                                                 write(d / "cut.pkl.gz", need(CKPT).read_bytes()[:5000])],
         "damaged gzip"),
    Case("malicious checkpoint", lambda d: ["localize", features(d), "-c", malicious_checkpoint(d)],
         "refused by the safe loader"),
    Case("checkpoint of another network", lambda d: ["localize", features(d), "-c", i3d_as_co2(d)],
         "not a CO2-Net checkpoint"),
    Case("output folder read-only", lambda d: ["localize", features(d), "-c", need(CKPT), "-o",
                                               readonly_folder(d) / "r.json"], "cannot write there"),
    Case("output is an existing folder", lambda d: ["localize", features(d), "-c", need(CKPT), "-o",
                                                    (d / "dir").mkdir() or d / "dir"], "is a folder"),
    Case("all inputs fail: earlier results kept", lambda d: [
        "localize", write(d / "bad.npy", "x"), "-c", need(CKPT), "-o", existing_results(d)], "not a .npy file",
         watch="keep"),
    Case("format contradicts extension", lambda d: ["localize", features(d), "-c", need(CKPT), "--format", "csv",
                                                    "-o", d / "x.json"], "contradicts", code=2),
    Case("unknown output extension", lambda d: ["localize", features(d), "-c", need(CKPT), "-o", d / "x.xyz"],
         "cannot tell the format", code=2),
    Case("input list file missing", lambda d: ["localize", "--from-file", d / "list.txt"], "input list not found",
         code=2),
    Case("same result name twice", lambda d: ["localize", features(d, "a.npy"), _dup(d), "-c", need(CKPT)],
         "already used"),
    # ---- videos (zero-shot localizer or extraction)
    Case("empty video file", lambda d: ["extract-features", write(d / "e.mp4", b""), "-o", d / "out", "--streams",
                                        "rgb"], "empty file", watch="out"),
    Case("text file named .mp4", lambda d: ["extract-features", write(d / "t.mp4", "not a video\n" * 40), "-o",
                                            d / "out", "--streams", "rgb"], "not a video", watch="out"),
    Case("truncated video", lambda d: ["extract-features", truncated_video(d), "-o", d / "out", "--streams", "rgb"],
         "corrupt or truncated", watch="out"),
    Case("audio only", lambda d: ["extract-features", audio_only(d), "-o", d / "out", "--streams", "rgb"],
         "no video stream", watch="out"),
    Case("one frame", lambda d: ["extract-features", one_frame(d), "-o", d / "out", "--streams", "rgb"],
         "too short", watch="out"),
    Case("features output is a file", lambda d: ["extract-features", one_frame(d), "-o", write(d / "o", "x"),
                                                 "--streams", "rgb"], "not a folder"),
    Case("features output read-only", lambda d: ["extract-features", one_frame(d), "-o", readonly_folder(d),
                                                 "--streams", "rgb"], "cannot write there"),
    Case("features: empty folder", lambda d: ["extract-features", (d / "v").mkdir() or d / "v", "-o", d / "out"],
         "the folder holds no videos"),
    Case("flow weights missing", lambda d: ["extract-features", one_frame(d), "-o", d / "out"], "i3d-flow"),
    Case("unknown device", lambda d: ["extract-features", one_frame(d), "-o", d / "out", "--device", "gpu"],
         "gpu", code=2),
    Case("unknown stream", lambda d: ["extract-features", one_frame(d), "-o", d / "out", "--streams", "depth"],
         "unknown stream"),
    Case("flow: unknown format", lambda d: ["extract-flow", one_frame(d), "-o", d / "out", "--format", "bmp"],
         "npy or jpg", code=2),
    Case("flow: truncated video", lambda d: ["extract-flow", truncated_video(d), "-o", d / "out"],
         "corrupt or truncated", watch="out"),
    # ---- co2 evaluate
    Case("evaluate: non-UTF-8 file", lambda d: ["evaluate", write(d / "p.csv", b"\xff\xfe\x00bad"), "-a",
                                                need(THUMOS_ANNOTATIONS)], "not UTF-8"),
    Case("evaluate: negative segment", lambda d: ["evaluate", predictions(d, ["video_test_0000004,-3,5,0,0.9"]), "-a",
                                                  need(THUMOS_ANNOTATIONS)], "starts before 0"),
    Case("evaluate: reversed segment", lambda d: ["evaluate", predictions(d, ["video_test_0000004,9,5,0,0.9"]), "-a",
                                                  need(THUMOS_ANNOTATIONS)], "ends before it starts"),
    Case("evaluate: header only", lambda d: ["evaluate", predictions(d, []), "-a", need(THUMOS_ANNOTATIONS)],
         "no predictions"),
    Case("evaluate: JSON without results", lambda d: ["evaluate", write(d / "p.json", '{"x": 1}'), "-a",
                                                      need(THUMOS_ANNOTATIONS)], "no 'results'"),
    Case("evaluate: annotation folder missing", lambda d: ["evaluate", predictions(d, ["v,1,2,0,0.5"]), "-a",
                                                           d / "none"], "annotation folder not found"),
    Case("evaluate: unknown protocol", lambda d: ["evaluate", predictions(d, ["v,1,2,0,0.5"]), "-a",
                                                  need(THUMOS_ANNOTATIONS), "--protocol", "paper"], "paper", code=2),
    # ---- co2 weights / train
    Case("import: unknown name", lambda d: ["weights", "import", need(CKPT), "--as", "nope"], "nope", code=2),
    Case("import: malicious file", lambda d: ["weights", "import", malicious_checkpoint(d), "--as", "co2-thumos"],
         "refused by the safe loader"),
    Case("train: features missing", lambda d: ["train", "--dataset", "thumos14", "--features", d / "none.npy",
                                               "--output", d / "ck.pkl"], "not found"),
]


def _npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def _dup(folder: Path) -> Path:
    """A second input whose result name collides with a.npy's: same stem, same folder, another extension."""
    return shutil.copy(features(folder, "a.npy"), folder / "a.NPY")


@pytest.fixture(scope="module")
def rgb_only_home(tmp_path_factory, i3d_rgb_weights: Path) -> Path:
    home = tmp_path_factory.mktemp("home")
    proc = run(["weights", "import", i3d_rgb_weights, "--as", "i3d-rgb"], home)
    assert proc.returncode == 0, proc.stderr
    return home


def test_corpus_has_at_least_30_kinds() -> None:
    assert len({c.kind for c in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, rgb_only_home: Path) -> None:
    work = tmp_path / "case"
    work.mkdir()
    args = case.make(work)
    watched = work / case.watch if case.watch else None
    before = {p: p.read_bytes() for p in watched.rglob("*") if p.is_file()} if watched and watched.exists() else {}
    made = set(listing(work))
    home = tmp_path / "home"
    shutil.copytree(rgb_only_home, home)
    try:
        proc = run(args, home)
        assert proc.returncode == case.code, (proc.returncode, proc.stdout, proc.stderr)
    finally:
        while MOUNTS:
            subprocess.run(["umount", str(MOUNTS.pop())], check=False)
        for path in work.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    if case.code == 1:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, proc.stderr
        assert case.fragment in errors[0], proc.stderr
    else:
        assert case.fragment in proc.stderr, proc.stderr
    left = set(listing(work)) - made
    assert not [p for p in left if Path(p).name.startswith(".")], f"temporary files left: {left}"
    if watched is not None:
        after = {p: p.read_bytes() for p in watched.rglob("*") if p.is_file()} if watched.exists() else {}
        assert after == before, f"{case.watch} changed: {set(after) ^ set(before)}"
    assert not Path("/tmp/co2cli-pwned").exists()


def test_recipe_records_rotation_applied(tmp_path: Path, rgb_only_home: Path) -> None:
    """A clip with a 90-degree display matrix is turned upright, and its recipe says so."""
    import av

    path = tmp_path / "turned.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(90)  # a display matrix, as phones write it
        for i in range(20):
            image = np.full((64, 96, 3), 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    proc = run(["extract-features", path, "-o", tmp_path / "out", "--streams", "rgb", "-q"], rgb_only_home)
    assert proc.returncode == 0, proc.stderr
    recipe = json.loads((tmp_path / "out" / "turned.json").read_text())
    from co2cli import video

    with av.open(str(path)) as container:  # FFmpeg's own reading of the display matrix, not ours
        expected = round(next(container.decode(video=0)).rotation) % 360
    assert expected == 90 and recipe["rotation_deg"] == expected


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a small tmpfs in CI: {made.stderr.decode().strip()}")
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        big = features(tmp_path, "long.npy", rows=64)
        rows = np.load(big)
        np.save(big, np.concatenate([rows] * 8))  # 512 snippets: the JSON of its proposals exceeds one 4 KiB page
        target = mount / "results.json"
        proc = run(["localize", big, "-c", need(CKPT), "-o", target, "--view", "raw"], tmp_path / "home")
        assert proc.returncode == 1, proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "disk is full" in errors[0] and str(target) in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
        assert listing(mount) == []  # no partial file, no temporary
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_two_jobs_on_one_folder_share_the_work(tmp_path: Path, rgb_only_home: Path) -> None:
    """Two extract-features jobs started together on one output folder: every output once, valid, identical to
    a single job's, and no video computed by both (each output written by one job: its mtime is set once)."""
    from tests.test_video_pipeline import cut_clip

    clips = tmp_path / "clips"
    clips.mkdir()
    source = cut_clip(need(SAMPLE_VIDEOS / "v_GGSY1Qvo990.mp4"), clips / "c0.mp4", 0.7)
    for i in range(1, 4):
        shutil.copy(source, clips / f"c{i}.mp4")
    out = tmp_path / "shared_out"
    env = {**os.environ, "CO2CLI_HOME": str(rgb_only_home)}
    cmd = [sys.executable, "-m", "co2cli.cli", "extract-features", str(clips), "-o", str(out), "--streams", "rgb"]
    jobs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [job.communicate(timeout=900) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], results
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"c{i}.{ext}" for i in range(4) for ext in ("json", "npy")])  # no claim/temp left
    single = tmp_path / "single"
    assert subprocess.run(cmd[:-4] + [str(clips), "-o", str(single), "--streams", "rgb"], env=env,
                          capture_output=True).returncode == 0
    for i in range(4):
        np.testing.assert_array_equal(np.load(out / f"c{i}.npy"), np.load(single / f"c{i}.npy"))
    done_lines = [ln for _, err in results for ln in err.splitlines() if "│ done " in ln]
    assert len(done_lines) == 4, results  # each video extracted by exactly one of the two jobs
