"""Two-stream I3D features of whole videos: video.py frames -> flow.py fields -> i3d.py per stream -> (T, D).

Streamed in chunks of whole snippets, so memory stays bounded whatever the video's length. Weights come from the
installed store (`co2 weights ...`; a missing one is a Co2Error naming the command that installs it), or are
given with their provenance (`state_dicts=`, `provenance=`: a Ray worker's node has no store). `feature_identity`
is the one definition of which recipes make features comparable; `FeatureJob` is `co2 extract-features` as a
`runner` job (compute anywhere, write on the driver).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from co2cli.batch import BatchItem
from co2cli.errors import Co2Error
from co2cli.features import STREAM_DIM, AnyOf
from co2cli.runner import Compute, Computed, Message, WholeResultWriter
from co2cli.timebase import FPS, SNIPPET_FRAMES

if TYPE_CHECKING:
    import torch

    from co2cli.i3d import InceptionI3d

STREAMS = ("rgb", "flow")
WEIGHT_NAMES = {"rgb": "i3d-rgb", "flow": "i3d-flow"}
IN_CHANNELS = {"rgb": 3, "flow": 2}
RECIPE_VERSION = 2
"""Bump when a change makes older cached features incomparable (2: flow region and backend recorded; the
default region became the whole frame)."""
PREFETCH_CHUNKS = 2
"""Chunks decoded (and their flow computed) ahead of I3D: bounds memory to a few chunks."""

Progress = Callable[[int, "int | None"], None]
"""progress(frames_done, frames_total_estimate), called after each chunk."""


def parse_streams(text: str | Sequence[str]) -> tuple[str, ...]:
    """'rgb,flow' -> ('rgb', 'flow'), always in RGB-then-flow order (the 2048-d layout)."""
    items = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [s for s in items if s not in STREAMS]
    if unknown or not items:
        raise Co2Error(f"unknown stream(s) {', '.join(unknown) or '(none)'}: use rgb, flow or rgb,flow")
    return tuple(s for s in STREAMS if s in items)


@dataclass
class Extracted:
    """One video's features: (T, 1024 * len(streams)) float32 = RGB | flow, with its recipe."""

    features: np.ndarray
    recipe: dict


def snippet_features(model: InceptionI3d, frames: np.ndarray, batch_size: int = 4,
                     precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """I3D features (T, 1024) and Kinetics logits (T, 400) of T = n // 16 whole snippets.

    frames: (n, H, W, C) float32 in [-1, 1] (RGB from `video.rgb_to_float`, or flow fields), n a multiple of 16.
    precision: fp32 or bf16 (see `i3d.PRECISIONS`).
    """
    from co2cli import i3d

    n = len(frames) // SNIPPET_FRAMES
    snippets = frames[: n * SNIPPET_FRAMES].reshape(n, SNIPPET_FRAMES, *frames.shape[1:])
    return i3d.run_snippets(model, snippets, batch_size, precision=precision)


def prefetch(items: Iterable, depth: int = PREFETCH_CHUNKS) -> Iterator:
    """Iterate `items` in a background thread, at most `depth` items ahead, so decoding and flow of chunk k+1 run
    while the caller runs I3D on chunk k. Order, values and exceptions are those of plain iteration."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((False, exc))
            return
        put((True, done))

    thread = threading.Thread(target=produce, name="co2cli-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class WeightRecord:
    """Where one weight file came from, as a feature recipe records it."""

    label: str
    """Its path in the store that provided it (messages only)."""
    sha256: str | None
    family: str


def installed_weights(streams: Sequence[str]) -> dict[str, WeightRecord]:
    """The local store's records of the I3D weights of `streams` (a Co2Error naming the install command for a
    missing one)."""
    from co2cli import weights

    records = {}
    for stream in streams:
        name = WEIGHT_NAMES[stream]
        path = weights.resolve(name)
        record = weights.installed()[name]
        records[name] = WeightRecord(str(path), record.get("sha256"), weights.family(record))
    return records


def installed_sha256(streams: Sequence[str]) -> dict[str, str | None]:
    """Weight name -> SHA-256 of the installed I3D weights of `streams`."""
    return {name: record.sha256 for name, record in installed_weights(parse_streams(streams)).items()}


def feature_identity(streams: Sequence[str], weights_sha256: Mapping[str, str | None], flow_region: str,
                     flow_backend: str | None = None, precision: str = "fp32") -> dict:
    """The recipe keys that make two feature files comparable (a written file with other values is redone).
    `weights_sha256`: weight name -> SHA-256 of the I3D weights used. `flow_backend` None accepts any backend
    (Ray workers resolve `auto` on their own devices); a named one also accepts the backends bit-identical to it
    (`flow.equivalent_backends`). `precision`: the I3D precision (`precision_identity`)."""
    from co2cli.flow import equivalent_backends

    streams = parse_streams(streams)
    flow: dict | None = None
    if "flow" in streams:
        flow = {"region": flow_region}
        if flow_backend is not None:
            flow["backend"] = AnyOf(equivalent_backends(flow_backend))
    return {"streams": list(streams), "recipe_version": RECIPE_VERSION, "flow": flow,
            "weights_sha256": dict(weights_sha256), "precision": precision_identity(precision)}


def precision_identity(precision: str) -> str | AnyOf:
    """The identity value of an I3D precision: fp32 also matches files written before precision was recorded
    (they were all fp32); bf16 matches only bf16, so a cache never serves one precision's features for another."""
    return AnyOf(("fp32", None)) if precision == "fp32" else precision


def worker_flow_backend(flow_backend: str) -> str | None:
    """The flow backend outputs made on Ray workers must record, given `--flow-backend`: the one asked for, or
    None (either) for `auto`, which each worker resolves on its own device. The one rule for every Ray job: an
    explicit backend always counts in the identity."""
    return None if flow_backend == "auto" else flow_backend


class FeatureExtractor:
    """Features of whole videos with the installed I3D weights (or given state dicts) for `streams`.

    Flow: `flow_backend` auto|opencv|fused|torch (auto = torch on CUDA, fused on CPU), `flow_region` frame (the
    Kinetics recipe: TV-L1 on the whole 256-short-side frame, then the centre crop) or crop (TV-L1 on the 224
    crop), `flow_workers` processes, one pair each (default: every CPU the process may use).

    I3D: `precision` fp32 (the reference) or bf16 (autocast; recorded in the recipe, never mixed with fp32 in a
    cache); `i3d_threads` torch CPU threads while extracting (default: torch's threads, less the flow workers
    when flow runs on the CPU, at least 1, so cores are not oversubscribed). float32 features
    depend on the thread count in their last bits (oneDNN's sum order), well within the fixture's tolerance.
    """

    def __init__(self, streams: Sequence[str] = STREAMS, device: str | torch.device = "auto", batch_size: int = 4,
                 chunk_snippets: int = 8, flow_workers: int | None = None, max_side_px: int | None = None,
                 state_dicts: Mapping[str, Mapping[str, torch.Tensor]] | None = None, flow_backend: str = "auto",
                 flow_region: str = "frame", overlap: bool = True, load_models: bool = True,
                 provenance: Mapping[str, WeightRecord] | None = None, precision: str = "fp32",
                 i3d_threads: int | None = None) -> None:
        """`state_dicts` (stream -> I3D state dict) replace reading the weight files; `provenance` (weight name ->
        WeightRecord) replaces looking them up in the local store (a Ray worker's node may have none)."""
        from co2cli import checkpoints, flow
        from co2cli.devices import pick_device
        from co2cli.i3d import PRECISIONS

        self.streams = parse_streams(streams)
        self.device = pick_device(str(device))
        self.batch_size = max(1, int(batch_size))
        self.chunk_frames = SNIPPET_FRAMES * max(1, int(chunk_snippets))
        self.flow_workers = max(1, int(flow_workers)) if flow_workers else flow.default_workers()
        if flow_region not in flow.REGIONS:
            raise Co2Error(f"unknown flow region {flow_region!r}: use frame or crop")
        if flow_backend not in flow.BACKENDS:
            raise Co2Error(f"unknown flow backend {flow_backend!r}: use {', '.join(flow.BACKENDS)}")
        self.flow_region = flow_region
        self.flow_backend = flow.resolve_backend(flow_backend, self.device.type)
        if precision not in PRECISIONS:
            raise Co2Error(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
        self.precision = precision
        self.overlap = overlap
        self.i3d_threads = max(1, int(i3d_threads)) if i3d_threads else self._default_i3d_threads()
        self.max_side_px = max_side_px
        self.models: dict[str, InceptionI3d] = {}
        self.weights_sha256: dict[str, str | None] = {}
        self.weights_family: dict[str, str] = {}
        streams_with_models = self.streams if load_models else ()  # flow-only jobs (`co2 extract-flow`): no I3D
        records = dict(provenance or {}) or installed_weights(streams_with_models)
        for stream in streams_with_models:
            name = WEIGHT_NAMES[stream]
            record = records[name]
            source = (state_dicts or {}).get(stream) or Path(record.label)
            self.models[stream] = checkpoints.load_i3d(source, IN_CHANNELS[stream], self.device, label=record.label)
            self.weights_sha256[name] = record.sha256
            self.weights_family[name] = record.family

    def _default_i3d_threads(self) -> int:
        """torch's CPU threads (every usable CPU, or what OMP_NUM_THREADS / a Ray worker's reservation set), less
        the flow workers beside I3D on the CPU (at least 1). Not tied to `overlap`: oneDNN's float32 sums depend
        on the thread count, and overlapped features must equal sequential ones bit for bit."""
        import torch

        cpus = torch.get_num_threads()
        flow_on_cpu = "flow" in self.streams and self.flow_backend != "torch"
        return max(1, cpus - self.flow_workers) if flow_on_cpu else cpus

    def identity(self) -> dict:
        """The recipe keys that make features comparable: a written file with other values is redone."""
        return feature_identity(self.streams, self.weights_sha256, self.flow_region, self.flow_backend,
                                self.precision)

    def recipe(self) -> dict:
        """What every feature file made by this extractor shares (the per-video facts are added later)."""
        from co2cli import flow, video
        from co2cli.version import __version__

        return {
            "co2cli_version": __version__, "recipe_version": RECIPE_VERSION,
            "streams": list(self.streams), "feature_dim": STREAM_DIM * len(self.streams),
            "layout": " | ".join(f"{s} {i * STREAM_DIM}..{(i + 1) * STREAM_DIM - 1}"
                                 for i, s in enumerate(self.streams)),
            "fps": FPS, "snippet_frames": SNIPPET_FRAMES, "stride_frames": SNIPPET_FRAMES,
            "feature": "I3D Mixed_5c averaged over time, height and width (1024 per stream)",
            "resize": video.RECIPE["resize"], "crop": video.RECIPE["crop"], "video": video.RECIPE,
            "flow": flow.recipe(self.flow_backend, self.flow_region) if "flow" in self.streams else None,
            "precision": self.precision,
            "weights_sha256": self.weights_sha256,
            "weights": {name: {"sha256": sha, "family": self.weights_family.get(name, "")}
                        for name, sha in self.weights_sha256.items()},
        }

    def extract(self, path: str | Path, progress: Progress | None = None) -> Extracted:
        """Features of one video; `progress(frames_done, frames_total_estimate)` is called after each chunk."""
        from co2cli import video
        from co2cli.i3d import torch_threads

        reader = video.VideoReader(path, max_side_px=self.max_side_px)
        estimate = reader.info.frames_25fps_estimate
        if progress:
            progress(0, estimate)  # the size is known before the first chunk is decoded
        with_flow = "flow" in self.streams
        chunks = reader.chunks(self.chunk_frames, whole_frame_gray=with_flow and self.flow_region == "frame")
        pairs = self.flow_fields(chunks) if with_flow else ((chunk, None) for chunk in chunks)
        if self.overlap:
            pairs = prefetch(pairs)
        with torch_threads(self.i3d_threads):
            parts, first_time = self._stream_features(pairs, lambda done: progress and progress(done, estimate))
        if not parts[self.streams[0]]:
            raise Co2Error(f"{path}: no frames could be decoded")
        features = np.concatenate([np.concatenate(parts[s]) for s in self.streams], axis=1).astype(np.float32)
        info = reader.info
        recipe = self.recipe() | {
            "source": Path(path).name,
            "source_fps": info.source_fps, "source_frames_decoded": reader.frames_decoded,
            "duration_s": info.duration_s, "rotation_deg": reader.rotation_applied_deg,
            "frame_count": reader.frames_total, "frames_used": reader.frames_yielded,
            "remainder_frames_dropped": reader.frames_total - reader.frames_yielded,
            "snippets": int(features.shape[0]),
            "start_s": first_time or 0.0,
        }
        return Extracted(features, recipe)

    def _stream_features(self, pairs: Iterable[tuple], frames_done: Callable[[int], object],
                         ) -> tuple[dict[str, list[np.ndarray]], float | None]:
        """I3D features of each (frames, flow fields) chunk per stream, and the first frame's time (s)."""
        from co2cli import video

        parts: dict[str, list[np.ndarray]] = {s: [] for s in self.streams}
        first_time: float | None = None
        done = 0
        for frames, fields in pairs:
            if first_time is None and len(frames):
                first_time = float(frames.grid_times_s[0])
            inputs = {"rgb": lambda: video.rgb_to_float(frames.rgb), "flow": lambda: fields}  # noqa: B023
            for stream in self.streams:
                parts[stream].append(snippet_features(self.models[stream], inputs[stream](), self.batch_size,
                                                      self.precision)[0])
            done += len(frames)
            frames_done(done)
        return parts, first_time

    def flow_fields(self, chunks: Iterable) -> Iterator[tuple]:
        """(chunk, (n, 224, 224, 2) flow in [-1, 1]) for each `video.Frames` chunk, in this extractor's region."""
        from co2cli import flow

        device = str(self.device)
        if self.flow_region == "crop":
            yield from flow.iter_with_flow(chunks, workers=self.flow_workers, backend=self.flow_backend,
                                           device=device)
            return
        from co2cli.video import CROP

        for frames, fields in flow.iter_with_flow(chunks, lambda f: f.gray_frame, self.flow_workers,
                                                  self.flow_backend, device):
            top, left = frames.crop_box
            yield frames, np.ascontiguousarray(fields[:, top:top + CROP, left:left + CROP])


# ---------------------------------------------------------------------------------------------------------------
# `co2 extract-features` as a batch job (runner.run_batch): compute anywhere, write on the driver


def compute_features(extractor: FeatureExtractor, path: str, progress: Progress | None) -> Iterator[Message]:
    """One video's features as one Computed message (features are small enough to travel whole)."""
    got = extractor.extract(path, progress)
    yield Computed(got.recipe, int(got.recipe.get("frame_count") or 0), float(got.recipe.get("duration_s") or 0.0),
                   got.features)


@dataclass
class _FeatureWriter(WholeResultWriter):
    out_dir: Path
    path: Path
    name: str

    def finish(self, result: Computed) -> BatchItem:
        from co2cli.features import save

        assert result.features is not None
        save(self.out_dir, self.name, result.features, result.recipe)
        return BatchItem(self.path, self.name, "done", int(result.features.shape[0]), frames=result.frames,
                         duration_s=result.duration_s)


@dataclass
class FeatureJob:
    """`co2 extract-features`: `<name>.npy` (T, D) + `<name>.json` recipe per video in `out_dir`; an output whose
    recipe matches `identity` (see feature_identity) is finished."""

    out_dir: Path
    identity: dict
    compute: Compute = compute_features

    def is_done(self, name: str) -> bool:
        from co2cli.features import is_complete

        return is_complete(self.out_dir, name, self.identity)

    def outputs(self, name: str) -> Sequence[Path]:
        from co2cli.features import output_paths

        return output_paths(self.out_dir, name)

    def answer(self, path: Path, name: str) -> BatchItem | None:
        return None

    def writer(self, path: Path, name: str) -> _FeatureWriter:
        return _FeatureWriter(self.out_dir, path, name)

    @classmethod
    def installed(cls, out_dir: Path, streams: Sequence[str], flow_region: str,
                  flow_backend: str = "auto", precision: str = "fp32") -> FeatureJob:
        """A job for features made on Ray workers with `--flow-backend flow_backend` and `precision`, whose identity
        is that of the installed weights (no network is loaded on the driver; see worker_flow_backend)."""
        return cls(out_dir, feature_identity(streams, installed_sha256(streams), flow_region,
                                             worker_flow_backend(flow_backend), precision))
