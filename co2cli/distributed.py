"""`--executor ray`: `co2 extract-features`, `co2 extract-flow` and `co2 localize` on a Ray cluster, with the local
executor's results.

One video is one unit of work. Long-lived Ray actors (one per GPU, else one per `--cpus-per-worker` CPUs) build
the I3D networks once from state dicts the driver ships through the object store (worker nodes need no weight
store), extract a video's features and *return* them. The driver writes every output itself, with the claims and
the atomic writer of the local executor (`batch.claim`, `features.save`), so outputs, recipes, resume after a
kill, per-file isolation, the summary and the exit codes are those of `--executor local`. `co2 localize` ships
only the feature extraction: the driver turns returned features into segments with its already loaded model
(`Localizer.analyze`, a few milliseconds per video) and keeps the feature cache, as a local run does.
`co2 extract-flow` needs no weights: its workers compute and encode a video's flow (float32 for npy, JPEG files for
jpg) and *stream* it back in small chunks (a Ray streaming generator with backpressure: a video's flow is
~400 KB per frame as float32, far too big to return whole), which the driver appends to the output's temporary
file and renames when the video ends (`flowfiles.FlowWriter`); a worker that dies mid-video voids that partial
file and the video starts again.

Faults: a worker process that dies (killed, out of memory, node lost) is restarted by Ray (`max_restarts=-1`);
the video it was working on is resubmitted, up to MAX_ATTEMPTS times, then fails alone. Videos queued behind it
are resubmitted without being charged. A Co2Error inside a worker (a bad video) comes back as that input's
failure message and the worker carries on; any other exception stops the batch as it would locally.

Workers read the inputs at the paths the driver gives (relative ones from the driver's working directory), so
every node needs the same view of the input files (a shared file system); only the driver writes outputs.
Ray is optional (`pip install 'co2cli[ray]'`); this module imports it only when a pool starts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from co2cli.batch import BUSY_MESSAGE, BatchEvents, BatchItem, claim
from co2cli.errors import Co2Error
from co2cli.extract import WEIGHT_NAMES, Extracted, parse_streams
from co2cli.features import is_complete, output_paths, save
from co2cli.fsio import remove_partials

if TYPE_CHECKING:
    import torch

    from co2cli.extract import FeatureExtractor
    from co2cli.pipeline import Analysis, Localizer

INSTALL_HINT = "--executor ray needs Ray, which is not installed: pip install 'co2cli[ray]'"
MAX_ATTEMPTS = 3
"""Times one video may take a worker process down with it before it is reported as failed."""
QUEUE_DEPTH = 2
"""Videos submitted to one worker at a time: the one it works on and the next, so it never waits for the driver."""
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20
"""Object store of a Ray started for one run (weights ~50 MB per stream, a video's features ~1-2 MB)."""
POLL_S = 1.0
"""Seconds between progress polls of the workers (only while a progress bar is shown)."""
FLOW_MESSAGE_FIELDS = 16
"""Flow fields per streamed message (npy: 16 x 401 KB = 6.4 MB; jpg: ~0.3 MB)."""
FLOW_MESSAGES_AHEAD = 4
"""Messages a worker may stream ahead of the driver before it pauses (bounds the object store per worker)."""

__all__ = ["ClusterOptions", "RayPool", "WorkerSpec", "extract_batch", "extract_flow_batch", "localize_batch",
           "pool_for_localizer", "require_ray", "INSTALL_HINT"]


def require_ray() -> None:
    """Co2Error with the install command when Ray cannot be imported (checked before any model loads)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise Co2Error(INSTALL_HINT) from None


@dataclass
class ClusterOptions:
    """Where and how wide to run."""

    address: str | None = None
    """A running cluster (`ray start --head` prints it), 'auto', or None: $RAY_ADDRESS, else a local Ray started
    for the run ('local' forces that)."""
    workers: int | None = None
    """None: one per GPU of the cluster, else (CPUs of the cluster) // cpus_per_worker."""
    cpus_per_worker: int = 1
    """CPUs each worker reserves (also its torch threads): TV-L1 and, without a GPU, I3D run on them."""
    quiet: bool = False
    """No notes on stderr (the one line naming the cluster and the workers)."""


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker's FeatureExtractor is built with (the CLI's extraction options)."""

    streams: tuple[str, ...] = ("rgb", "flow")
    device: str = "auto"
    """As `--device`, resolved on each worker's node: auto takes that node's GPU."""
    batch_size: int = 4
    chunk_snippets: int = 8
    flow_workers: int = 1
    max_side_px: int | None = None
    flow_backend: str = "auto"
    """As `--flow-backend`, resolved on each worker's device (torch on a GPU node, fused on a CPU one)."""
    flow_region: str = "frame"
    precision: str = "fp32"
    """As `--precision`: the I3D arithmetic, fp32 or bf16."""
    load_models: bool = True
    """False for flow-only work (`co2 extract-flow`): no I3D weights are read or shipped."""


# ---------------------------------------------------------------------------------------------------------------
# Weights: read once on the driver, shipped to every worker


@dataclass
class ShippedWeights:
    """The I3D state dicts per stream, with the store facts a FeatureExtractor records in each recipe."""

    state_dicts: dict[str, dict[str, torch.Tensor]]
    paths: dict[str, str]
    """Weight name -> the driver's file (used in messages only)."""
    records: dict[str, dict]
    """Weight name -> its installed.json record (the recipe's weights_sha256 comes from it)."""


def read_weights(streams: Sequence[str], given: Mapping[str, Mapping] | None = None) -> ShippedWeights:
    """The installed I3D weights for `streams` from the driver's store (or `given` state dicts, as loaded)."""
    from co2cli import checkpoints, weights

    installed = weights.installed()
    state_dicts, paths, records = {}, {}, {}
    for stream in parse_streams(streams):
        name = WEIGHT_NAMES[stream]
        path = weights.resolve(name)
        source = (given or {}).get(stream)
        state_dicts[stream] = dict(source) if source is not None else checkpoints.read_state_dict(path)
        paths[name], records[name] = str(path), dict(installed[name])
    return ShippedWeights(state_dicts, paths, records)


def build_extractor(spec: WorkerSpec, shipped: ShippedWeights | None) -> FeatureExtractor:
    """A FeatureExtractor from shipped weights (None: flow only, no networks), on a node that may have no weight
    store of its own.

    FeatureExtractor looks its weights up in the local store (for the label and the recorded sha256) even when
    given state dicts, so the lookup is answered from the driver's records while it is built. (A
    `weights_sha256=` argument on FeatureExtractor would make this unnecessary.)
    """
    from co2cli import weights
    from co2cli.extract import FeatureExtractor

    if shipped is None:
        return FeatureExtractor(streams=spec.streams, device=spec.device, chunk_snippets=spec.chunk_snippets,
                                flow_workers=spec.flow_workers, max_side_px=spec.max_side_px,
                                flow_backend=spec.flow_backend, flow_region=spec.flow_region, load_models=False)

    saved = weights.resolve, weights.installed
    weights.resolve = lambda name: Path(shipped.paths[name])  # type: ignore[assignment]
    weights.installed = lambda: shipped.records  # type: ignore[assignment]
    try:
        return FeatureExtractor(streams=spec.streams, device=spec.device, batch_size=spec.batch_size,
                                chunk_snippets=spec.chunk_snippets, flow_workers=spec.flow_workers,
                                max_side_px=spec.max_side_px, state_dicts=shipped.state_dicts,
                                flow_backend=spec.flow_backend, flow_region=spec.flow_region,
                                precision=spec.precision)
    finally:
        weights.resolve, weights.installed = saved


# ---------------------------------------------------------------------------------------------------------------
# The worker (a Ray actor; plain class here so this module imports without Ray)


class _Worker:
    """Extracts one video per call with networks built once. Returns a dict: ok, features, recipe | message.

    The weights come as a nested object ref with every call (not as a constructor argument, which Ray would have
    to keep for restarts): a restarted worker rebuilds its networks on its next call.
    """

    def __init__(self, spec: WorkerSpec, cwd: str, threads: int) -> None:
        self.spec = spec
        self.pid = os.getpid()
        self.error: str | None = None
        self.extractor: FeatureExtractor | None = None
        self.current: str | None = None
        self.frames: tuple[int, int | None] = (0, None)
        self.cwd_ok = os.path.isdir(cwd)
        if self.cwd_ok:
            os.chdir(cwd)  # relative inputs resolve as on the driver (and messages name them the same way)
        import cv2
        import torch

        torch.set_num_threads(max(1, threads))  # what the worker reserved, not the node's cores
        cv2.setNumThreads(max(1, threads))  # TV-L1 in this process (flow_workers=1); results do not depend on it

    def _ensure(self, shipped_ref: list) -> None:
        if self.extractor is not None or self.error is not None:
            return
        try:
            import ray

            [shipped] = ray.get(shipped_ref)
            self.extractor = build_extractor(self.spec, shipped)
        except Co2Error as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, never a restart loop
            self.error = f"{type(exc).__name__}: {exc}"

    def setup(self, shipped_ref: list) -> dict:
        """Build the networks (once); what the driver checks before sending videos."""
        import ray

        from co2cli import __version__

        self._ensure(shipped_ref)
        device = getattr(self.extractor, "device", None)
        return {"pid": self.pid, "host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(),
                "device": str(device), "version": __version__, "error": self.error}

    def status(self) -> tuple[int, str | None, int, int | None]:
        """(pid, video in progress, its frames done, its frames estimate); answered while extract() runs."""
        return self.pid, self.current, self.frames[0], self.frames[1]

    def _progress(self, done: int, estimate: int | None) -> None:
        self.frames = (done, estimate)

    def extract(self, path: str, absolute: str, shipped_ref: list) -> dict:
        self._ensure(shipped_ref)
        if self.extractor is None:
            return {"ok": False, "worker_error": self.error, "pid": self.pid}
        self.current, self.frames = path, (0, None)
        try:
            got = self.extractor.extract(path if self.cwd_ok else absolute, self._progress)
        except Co2Error as exc:
            return {"ok": False, "message": str(exc), "pid": self.pid}
        finally:
            self.current = None
        return {"ok": True, "features": got.features, "recipe": got.recipe, "pid": self.pid}

    def flow(self, path: str, absolute: str, fmt: str, shipped_ref: list) -> Iterator[dict]:
        """A streaming generator: {"chunk": encoded fields} messages, then one result dict (ok, recipe, frames,
        duration_s | message), as `flowfiles.FlowJob.run` would write them."""
        from co2cli.flowfiles import FlowJob

        self._ensure(shipped_ref)
        if self.extractor is None:
            yield {"ok": False, "worker_error": self.error, "pid": self.pid}
            return
        self.current, self.frames = path, (0, None)
        try:
            source = FlowJob(self.extractor, fmt).source(path if self.cwd_ok else absolute)
            done = 0
            for chunk in source.chunks:
                for start in range(0, len(chunk), FLOW_MESSAGE_FIELDS):
                    yield {"chunk": chunk[start:start + FLOW_MESSAGE_FIELDS]}
                done += len(chunk)
                self.frames = (done, source.frames_estimate)
            result = {"ok": True, "recipe": source.recipe(), "frames": source.reader.frames_total,
                      "duration_s": float(source.reader.info.duration_s or 0.0)}
        except Co2Error as exc:
            result = {"ok": False, "message": str(exc)}
        finally:
            self.current = None
        yield result | {"pid": self.pid}


# ---------------------------------------------------------------------------------------------------------------
# The pool


def _ray_messages_to_stderr(quiet: bool) -> Callable[[], None]:
    """Send the messages Ray's driver prints about cluster events (a worker died, ...) to stderr, or nowhere
    with `quiet`: stdout carries results only. Returns the undo. (Ray prints them to stdout from a thread, via
    `ray._private.worker.print_to_stdstream`; if a Ray version lacks it, nothing changes.)"""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return lambda: None
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:
        return lambda: None

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        if not quiet:
            original({**data, "is_err": True}, ignore_prefix)

    ray_worker.print_to_stdstream = to_stderr

    def undo() -> None:
        if ray_worker.print_to_stdstream is to_stderr:
            ray_worker.print_to_stdstream = original

    return undo



@dataclass
class _Slot:
    actor: Any
    info_ref: Any = None
    """Pending setup() while the worker starts or restarts; None once it is ready."""
    info: dict = field(default_factory=dict)
    inflight: deque = field(default_factory=deque)
    """Refs of the videos submitted to it, oldest (the one it works on) first."""


@dataclass
class _Job:
    key: int
    path: str
    absolute: str
    attempts: int = 0


Result = dict
OnResult = Callable[[int, Result], None]


@dataclass
class FlowStreaming:
    """How `RayPool.run` runs flow-only work: the format workers encode to, and where streamed chunks go."""

    fmt: str
    on_chunk: Callable[[int, Any], None]
    on_void: Callable[[int], None]


class RayPool:
    """Ray workers for one batch. Connects (or starts a local Ray) and starts workers on first use, so a batch
    with nothing left to do never touches Ray. Use as a context manager: workers are killed and a Ray started
    here is shut down on exit."""

    def __init__(self, spec: WorkerSpec, options: ClusterOptions | None = None,
                 state_dicts: Mapping[str, Mapping] | None = None) -> None:
        self.spec = WorkerSpec(**{**spec.__dict__, "streams": parse_streams(spec.streams)})
        self.options = options or ClusterOptions()
        self._given = state_dicts
        self.slots: list[_Slot] = []
        self.started_ray = False
        self.connected = False
        self.deaths = 0
        """Worker processes that died during the batch."""
        self.resubmitted = 0
        """Videos resubmitted after a worker died."""
        self.address = ""
        self._weights_ref: Any = None
        self._restore_stdstream: Callable[[], None] = lambda: None

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connecting and starting ------------------------------------------------------------------------------

    def connect(self) -> None:
        require_ray()
        import ray

        if self.connected:
            return
        if not ray.is_initialized():
            address = self.options.address or os.environ.get("RAY_ADDRESS") or "local"
            quiet_logs = {"log_to_driver": False, "logging_level": logging.ERROR}
            try:
                if address == "local":
                    ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                             **quiet_logs)
                else:
                    ray.init(address=address, **quiet_logs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise Co2Error(f"cannot connect to the Ray cluster at {address}: {first} (start one with `ray start "
                               "--head`, then pass its address with --ray-address or $RAY_ADDRESS)") from None
            self.started_ray = True
            self._restore_stdstream = _ray_messages_to_stderr(self.options.quiet)
            self.address = "a local Ray started for this run" if address == "local" else address
        else:
            self.address = "the connected Ray cluster"
        self.connected = True

    def _plan(self, jobs_hint: int) -> tuple[int, dict]:
        """(number of workers, actor options) from the cluster's nodes and the options."""
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpw = max(1, int(self.options.cpus_per_worker))
        gpu_nodes = [n for n in nodes if n["Resources"].get("GPU", 0) >= 1]
        use_gpu = self.spec.device != "cpu" and bool(gpu_nodes)
        if self.spec.device == "cuda" and not use_gpu:
            raise Co2Error(f"--device cuda, but {self.address} has no GPU; use --device auto or cpu")
        if use_gpu:
            fits = sum(min(int(n["Resources"]["GPU"]), int(n["Resources"].get("CPU", 0) // cpw)) for n in gpu_nodes)
        else:
            fits = sum(int(n["Resources"].get("CPU", 0) // cpw) for n in nodes)
        if fits == 0:
            need = f"{cpw} CPU{'s' if cpw > 1 else ''}" + (" and a GPU" if use_gpu else "")
            raise Co2Error(f"no node of {self.address} has {need} for a worker (--cpus-per-worker {cpw})")
        wanted = self.options.workers or fits
        if wanted > fits:
            self._note(f"note: {self.address} has room for {fits} worker(s) of {cpw} CPU(s); starting {fits}, "
                       f"not {wanted}")
        count = max(1, min(wanted, fits, jobs_hint))
        actor_options = {"num_cpus": cpw, "num_gpus": 1 if use_gpu else 0, "max_restarts": -1,
                         "max_task_retries": 0, "scheduling_strategy": "SPREAD"}
        return count, actor_options

    def start(self, jobs_hint: int) -> None:
        """Connect and start the workers (at most `jobs_hint`); a no-op once started."""
        if self.slots:
            return
        self.connect()
        import ray

        count, actor_options = self._plan(jobs_hint)
        shipped = read_weights(self.spec.streams, self._given) if self.spec.load_models else None
        self._weights_ref = ray.put(shipped)
        worker_class = ray.remote(concurrency_groups={"control": 1})(_Worker)
        for _ in range(count):
            actor = worker_class.options(**actor_options).remote(self.spec, os.getcwd(), actor_options["num_cpus"])
            self.slots.append(_Slot(actor, actor.setup.remote([self._weights_ref])))
        where = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        cpus = actor_options["num_cpus"]
        self._note(f"ray: {count} worker(s) ({cpus} CPU{'s' if cpus > 1 else ''}"
                   f"{', 1 GPU' if actor_options['num_gpus'] else ''} each) on {self.address} ({len(where)} "
                   f"node{'s' if len(where) != 1 else ''})")

    def _note(self, line: str) -> None:
        if not self.options.quiet:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Kill the workers; shut down a Ray this pool started (a connection made here is closed)."""
        if not self.connected:
            return
        import ray

        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.slots = []
        self._weights_ref = None
        if self.started_ray:
            ray.shutdown()
            self._restore_stdstream()
        self.connected = self.started_ray = False

    # -- introspection (progress, tests) -------------------------------------------------------------------

    def worker_pids(self, busy_only: bool = False) -> list[int]:
        """Process ids of the ready workers (with `busy_only`: those with a video in flight)."""
        return [s.info["pid"] for s in self.slots
                if s.info_ref is None and s.info and (s.inflight or not busy_only)]

    def poll_status(self, timeout: float = 0.5) -> list[tuple[int, str | None, int, int | None]]:
        """What each ready worker is doing now: (pid, video, frames done, frames estimate)."""
        import ray

        refs = [s.actor.status.options(concurrency_group="control").remote() for s in self.slots
                if s.info_ref is None]
        if not refs:
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append(ray.get(ref))
            except Exception:  # noqa: BLE001 - a worker that just died: it reports again after its restart
                pass
        return out

    # -- running ----------------------------------------------------------------------------------------------

    def run(self, jobs: Iterator[tuple[int, str, str]], on_result: OnResult, jobs_hint: int,
            on_poll: Callable[[list], None] | None = None, flow: FlowStreaming | None = None) -> None:
        """Run every (key, path, absolute path) that `jobs` yields (pulled lazily, one per free worker place)
        and call `on_result(key, result)` on the driver as each finishes, in completion order. Workers start on
        the first job. A RayTaskError (a bug, not a Co2Error) is re-raised as its cause.

        Without `flow`, workers extract features (one result per video). With it, they stream each video's flow:
        `flow.on_chunk(key, chunk)` for every message before its result, and `flow.on_void(key)` when a worker
        died under the video (what was received of it is void; it is resubmitted or fails)."""
        import ray
        from ray.exceptions import GetTimeoutError, NodeDiedError, ObjectLostError, RayActorError, RayTaskError
        from ray.exceptions import WorkerCrashedError

        crash_errors = (RayActorError, ObjectLostError, WorkerCrashedError, NodeDiedError)
        retry: deque[_Job] = deque()
        inflight: dict[Any, tuple[_Slot, _Job]] = {}
        source = iter(jobs)
        exhausted = False

        def next_job() -> _Job | None:
            nonlocal exhausted
            if retry:
                return retry.popleft()
            if exhausted:
                return None
            for key, path, absolute in source:
                return _Job(key, path, absolute)
            exhausted = True
            return None

        first = next_job()
        if first is None:
            return
        retry.append(first)
        self.start(jobs_hint)

        def fill() -> None:
            ready = [s for s in self.slots if s.info_ref is None]
            for depth in range(1, QUEUE_DEPTH + 1):
                for slot in sorted(ready, key=lambda s: len(s.inflight)):
                    if len(slot.inflight) < depth:
                        job = next_job()
                        if job is None:
                            return
                        ref = submit(slot, job)
                        slot.inflight.append(ref)
                        inflight[ref] = (slot, job)

        def submit(slot: _Slot, job: _Job) -> Any:
            if flow is None:
                return slot.actor.extract.remote(job.path, job.absolute, [self._weights_ref])
            return slot.actor.flow.options(
                num_returns="streaming", _generator_backpressure_num_objects=FLOW_MESSAGES_AHEAD,
            ).remote(job.path, job.absolute, flow.fmt, [self._weights_ref])

        def receive(ref: Any, job: _Job) -> Result:
            """The next message of a video: its result, or a streamed chunk (flow)."""
            if flow is None:
                return ray.get(ref)
            try:
                return ray.get(next(ref))
            except StopIteration:  # pragma: no cover - the worker's generator always ends with a result
                return {"ok": False, "message": f"{job.path}: the Ray worker ended without a result"}

        def worker_died(slot: _Slot, reason: BaseException) -> None:
            """The worker of `slot` died: charge its oldest video, requeue the rest, wait for its restart."""
            self.deaths += 1
            self._note(f"note: the Ray worker {slot.info.get('pid', '?')} on {slot.info.get('host', '?')} died "
                       f"({type(reason).__name__}); Ray restarts it and its video(s) are resubmitted")
            refs = list(slot.inflight)
            slot.inflight.clear()
            for position, ref in enumerate(refs):
                _, job = inflight.pop(ref)
                if flow is not None:
                    flow.on_void(job.key)
                if position == 0:
                    job.attempts += 1
                    if job.attempts >= MAX_ATTEMPTS:
                        first_line = (str(reason).splitlines() or [type(reason).__name__])[0]
                        on_result(job.key, {"ok": False, "message": (
                            f"{job.path}: the Ray worker extracting it died {job.attempts} times (last: "
                            f"{type(reason).__name__}: {first_line[:200]}); the video may need more memory than a "
                            "worker has")})
                        continue
                self.resubmitted += 1
                if position == 0:
                    retry.appendleft(job)
                else:
                    retry.append(job)
            slot.info_ref = slot.actor.setup.remote([self._weights_ref])

        last_poll = 0.0
        while True:
            fill()
            waiting = list(inflight) + [s.info_ref for s in self.slots if s.info_ref is not None]
            if not waiting:
                if retry or not exhausted:
                    raise Co2Error(f"no Ray worker is left on {self.address} to run the remaining videos")
                return
            timeout = POLL_S if on_poll else None
            done, _ = ray.wait(waiting, num_returns=1, timeout=timeout)
            if on_poll and time.monotonic() - last_poll >= POLL_S:
                on_poll(self.poll_status())
                last_poll = time.monotonic()
            for ref in done:
                slot_of_info = next((s for s in self.slots if s.info_ref is not None and s.info_ref == ref), None)
                if slot_of_info is not None:
                    self._started(slot_of_info, ref, crash_errors)
                    continue
                if ref not in inflight:
                    continue  # a video of a worker that died, already requeued
                slot, job = inflight[ref]
                try:
                    result = receive(ref, job)
                except crash_errors as exc:
                    worker_died(slot, exc)
                    continue
                except RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else exc) from None
                except GetTimeoutError:  # pragma: no cover - ray.wait said it was ready
                    continue
                if flow is not None and "chunk" in result:
                    flow.on_chunk(job.key, result["chunk"])
                    continue
                del inflight[ref]
                slot.inflight.remove(ref)
                if result.get("worker_error"):
                    raise Co2Error(f"a Ray worker on {slot.info.get('host', '?')} could not start: "
                                   f"{result['worker_error']}")
                on_result(job.key, result)

    def _started(self, slot: _Slot, ref: Any, crash_errors: tuple) -> None:
        """A worker answered setup() after starting or restarting: check it, or drop it if it is gone for good."""
        import ray
        from ray.exceptions import ActorDiedError

        from co2cli import __version__

        try:
            info = ray.get(ref)
        except ActorDiedError:
            self.slots.remove(slot)  # cannot be restarted (its node is gone and no other fits it)
            return
        except crash_errors:
            time.sleep(0.2)
            slot.info_ref = slot.actor.setup.remote([self._weights_ref])  # still restarting
            return
        if info["error"]:
            raise Co2Error(f"a Ray worker on {info['host']} could not start: {info['error']}")
        if info["version"] != __version__:
            raise Co2Error(f"the Ray worker on {info['host']} runs co2cli {info['version']}, this driver "
                           f"{__version__}: install the same co2cli on every node")
        slot.info, slot.info_ref = info, None


# ---------------------------------------------------------------------------------------------------------------
# Progress on the driver (stderr, on a terminal only)


class ClusterProgress:
    """inputs done / failed / total, frames per second over the cluster and the ETA, on a TTY only."""

    def __init__(self, total: int, unit: str, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.enabled = enabled and sys.stderr.isatty()
        self.progress = Progress(TextColumn(unit), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[failed]}"), TextColumn("{task.fields[rate]}"),
                                 TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True, disable=not self.enabled)
        self.task = self.progress.add_task(unit, total=total, failed="", rate="")
        self.finished = 0
        self.failed = 0
        self.frames_done = 0
        self.started = time.perf_counter()

    def __enter__(self) -> ClusterProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def item(self, failed: bool, frames: int = 0) -> None:
        self.finished += 1
        self.failed += int(failed)
        self.frames_done += frames
        self._show(0, 0.0)

    def poll(self, statuses: list) -> None:
        live_frames = sum(done for _, current, done, _ in statuses if current)
        live_fraction = sum(min(done / est, 0.99) for _, current, done, est in statuses if current and est)
        self._show(live_frames, live_fraction)

    def _show(self, live_frames: int, live_fraction: float) -> None:
        rate = (self.frames_done + live_frames) / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, completed=self.finished + live_fraction,
                             failed=f"{self.failed} failed" if self.failed else "",
                             rate=f"{rate:7.1f} frames/s" if self.frames_done + live_frames else "")


# ---------------------------------------------------------------------------------------------------------------
# extract-features


def _job_paths(path: Path) -> tuple[str, str]:
    """(the path as given, its absolute form without resolving links: a worker whose node lacks the driver's
    working directory uses that)."""
    return str(path), os.path.abspath(path)


def extract_batch(inputs: Sequence[tuple[Path, str]], out_dir: Path, pool: RayPool, overwrite: bool = False,
                  events: BatchEvents = BatchEvents(), show_progress: bool = False) -> list[BatchItem]:
    """`batch.run_batch` of a FeatureExtractor on `pool`'s workers: same items, outputs and claims; the driver
    writes every output (see `_claimed_batch`)."""
    identity = _identity(pool.spec.streams, pool.spec.flow_region, pool.spec.precision)

    def finish(index: int, result: Result) -> BatchItem:
        path, name = inputs[index]
        if not result["ok"]:
            return BatchItem(path, name, "failed", message=result["message"])
        features, recipe = result["features"], result["recipe"]
        try:
            save(out_dir, name, features, recipe)
        except Co2Error as exc:  # disk full, ...: this input fails, as locally
            return BatchItem(path, name, "failed", message=str(exc))
        return BatchItem(path, name, "done", int(features.shape[0]), frames=int(recipe.get("frame_count") or 0),
                         duration_s=float(recipe.get("duration_s") or 0.0))

    return _claimed_batch(inputs, out_dir, pool, lambda name: is_complete(out_dir, name, identity),
                          lambda name: output_paths(out_dir, name), finish, overwrite, events, show_progress)


def extract_flow_batch(inputs: Sequence[tuple[Path, str]], out_dir: Path, pool: RayPool, fmt: str = "npy",
                       overwrite: bool = False, events: BatchEvents = BatchEvents(),
                       show_progress: bool = False) -> list[BatchItem]:
    """`batch.run_batch` of a `flowfiles.FlowJob` on `pool`'s workers (a spec with load_models=False and the
    flow stream): the same files, byte for byte, written by the driver as the chunks stream in.

    With backend auto, a finished output made by either backend counts as done: each worker picks its own
    (torch on a GPU node, fused on a CPU one) and records it in the output's recipe.
    """
    from co2cli import flowfiles

    if fmt not in flowfiles.FORMATS:
        raise Co2Error(f"unknown flow format {fmt!r}: use npy or jpg")
    region = pool.spec.flow_region
    backend = None if pool.spec.flow_backend == "auto" else pool.spec.flow_backend
    writers: dict[int, flowfiles.FlowWriter] = {}
    write_errors: dict[int, str] = {}
    """Inputs whose output could not be written (disk full, ...): their later chunks are dropped."""

    def writer(index: int) -> flowfiles.FlowWriter:
        if index not in writers:
            writers[index] = flowfiles.open_writer(out_dir, inputs[index][1], fmt)
        return writers[index]

    def on_chunk(index: int, chunk: Any) -> None:
        if index in write_errors:
            return
        try:
            writer(index).add(chunk)
        except Co2Error as exc:  # the writer removed its partial output
            writers.pop(index, None)
            write_errors[index] = str(exc)

    def on_void(index: int) -> None:
        if index in writers:
            writers.pop(index).abort()
        write_errors.pop(index, None)

    def finish(index: int, result: Result) -> BatchItem:
        path, name = inputs[index]
        if index in write_errors or not result["ok"]:
            on_void(index)
            return BatchItem(path, name, "failed", message=write_errors.get(index) or result["message"])
        try:
            done = writer(index)  # a video of no fields still gets its (empty) output, as locally
            done.finish(result["recipe"])
        except Co2Error as exc:
            return BatchItem(path, name, "failed", message=str(exc))
        finally:
            writers.pop(index, None)
        return BatchItem(path, name, "done", done.fields, frames=int(result["frames"]),
                         duration_s=float(result["duration_s"]))

    try:
        return _claimed_batch(inputs, out_dir, pool,
                              lambda name: flowfiles.is_done(out_dir, name, fmt, region, backend),
                              lambda name: flowfiles.outputs(out_dir, name, fmt), finish, overwrite, events,
                              show_progress, FlowStreaming(fmt, on_chunk, on_void))
    finally:
        for partial in writers.values():  # the batch stopped (an interrupt, a bug): no half output stays
            partial.abort()


def _claimed_batch(inputs: Sequence[tuple[Path, str]], out_dir: Path, pool: RayPool, is_done: Callable[[str], bool],
                   outputs: Callable[[str], Sequence[Path]], finish: Callable[[int, Result], BatchItem],
                   overwrite: bool, events: BatchEvents, show_progress: bool,
                   flow: FlowStreaming | None = None) -> list[BatchItem]:
    """The local batch runner's rules on a pool: `finish(index, result)` writes an input's output on the driver
    and says how it ended.

    An input's claim is taken just before it is submitted and held until its output is written, so concurrent
    jobs (local or Ray) on one folder never compute a video twice; outputs another job holds are revisited at
    the end, as locally. `events.on_start` is called at submission and `events.on_end` as each input ends (in
    completion order); the items come back in input order. Per-chunk progress stays on the workers.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    items: list[BatchItem | None] = [None] * len(inputs)
    busy: list[int] = []
    held: dict[int, tuple[ExitStack, float]] = {}
    progress = ClusterProgress(len(inputs), "videos", show_progress)

    def end(index: int, item: BatchItem) -> None:
        items[index] = item
        progress.item(item.status == "failed", item.frames)
        if events.on_end:
            events.on_end(item)

    def jobs(indices: Sequence[int], wait: bool) -> Iterator[tuple[int, str, str]]:
        for index in indices:
            path, name = inputs[index]
            started = time.perf_counter()
            stack = ExitStack()
            if not stack.enter_context(claim(out_dir, name, wait)):
                stack.close()
                busy.append(index)
                items[index] = BatchItem(path, name, "busy", message=BUSY_MESSAGE)
                continue
            if (wait or not overwrite) and is_done(name):
                stack.close()
                item = BatchItem(path, name, "skipped",
                                 message="extracted by another job" if wait else "already extracted")
                item.seconds = time.perf_counter() - started
                end(index, item)
                continue
            for final in outputs(name):  # leftovers of a killed run on this output
                remove_partials(final.parent, final.name)
            held[index] = (stack, started)
            if events.on_start:
                events.on_start(path, name)
            yield (index, *_job_paths(path))

    def on_result(index: int, result: Result) -> None:
        stack, started = held.pop(index)
        with stack:
            item = finish(index, result)
        item.seconds = time.perf_counter() - started
        end(index, item)

    pending = sum(1 for _, name in inputs if overwrite or not is_done(name))
    poll = progress.poll if progress.enabled else None
    try:
        with progress:
            pool.run(jobs(range(len(inputs)), False), on_result, pending, poll, flow)
            if busy:
                later, busy[:] = list(busy), []
                pool.run(jobs(later, True), on_result, len(later), poll, flow)
    finally:
        for stack, _ in held.values():
            stack.close()
    return [item for item in items if item is not None]


# ---------------------------------------------------------------------------------------------------------------
# localize


def _identity(streams: Sequence[str], flow_region: str, precision: str = "fp32") -> dict:
    """The recipe keys a finished output must match (as `FeatureExtractor.identity`, without the backend: workers
    resolve `auto` on their own devices)."""
    from co2cli import weights
    from co2cli.extract import RECIPE_VERSION, precision_identity

    installed = weights.installed()
    return {"streams": list(streams), "recipe_version": RECIPE_VERSION,
            "flow": {"region": flow_region} if "flow" in streams else None,
            "weights_sha256": {WEIGHT_NAMES[s]: installed[WEIGHT_NAMES[s]].get("sha256") for s in streams},
            "precision": precision_identity(precision)}


class _Deferred(Exception):
    """Raised (and caught here) when a video's features must come from a worker."""


class _RemoteFeatures:
    """Stands in for a Localizer's FeatureExtractor on the driver: hands it the features a worker returned,
    defers a video while the batch is probing, and extracts locally otherwise (after the batch)."""

    def __init__(self, localizer: Localizer) -> None:
        from co2cli import weights

        self.localizer = localizer
        self.streams = tuple(localizer.streams)
        installed = weights.installed()
        self.weights_sha256 = {WEIGHT_NAMES[s]: installed[WEIGHT_NAMES[s]].get("sha256") for s in self.streams}
        self.results: dict[str, Extracted] = {}
        self.deferring = False
        self._local: FeatureExtractor | None = None

    def identity(self) -> dict:
        return _identity(self.streams, str(self.localizer.flow_options["flow_region"]), self.localizer.precision)

    def extract(self, path: str | Path, progress: object = None) -> Extracted:
        if str(path) in self.results:
            return self.results.pop(str(path))
        if self.deferring:
            raise _Deferred(str(path))
        if self._local is None:
            from co2cli.extract import FeatureExtractor

            loc = self.localizer
            self._local = FeatureExtractor(self.streams, loc.device, loc.batch_size, max_side_px=loc.max_side_px,
                                           state_dicts=loc._state_dicts(), precision=loc.precision,
                                           **loc.flow_options)
        return self._local.extract(path, progress)  # type: ignore[arg-type]


def pool_for_localizer(localizer: Localizer, device: str = "auto", options: ClusterOptions | None = None) -> RayPool:
    """A pool whose workers extract the features `localizer` needs (its streams, batch size and size limit);
    weights it already holds in memory are shipped as they are."""
    flow = localizer.flow_options
    spec = WorkerSpec(streams=tuple(localizer.streams), device=device, batch_size=localizer.batch_size,
                      max_side_px=localizer.max_side_px, flow_backend=str(flow["flow_backend"]),
                      flow_region=str(flow["flow_region"]), precision=localizer.precision)
    return RayPool(spec, options, state_dicts=localizer._state_dicts() or None)


def localize_batch(localizer: Localizer, inputs: Sequence[tuple[Path, str]], pool: RayPool,
                   min_score: float | None = None, on_analysis: Callable[[Analysis], None] | None = None,
                   show_progress: bool = False) -> tuple[list[Analysis], list[tuple[Path, str]]]:
    """`localizer.analyze` of every (input, name), the features of videos extracted by `pool`'s workers.

    Feature files and videos found in the feature cache are analysed on the driver at once; the other videos go
    to the workers, and the driver analyses what they return (writing the cache as a local run does). Returns
    (analyses, [(input, Co2Error message)]), both in input order, as the local loop of `co2 localize` collects
    them.
    """
    from co2cli.pipeline import FEATURE_SUFFIXES

    analyses: dict[int, Analysis] = {}
    failed: dict[int, str] = {}
    remote: _RemoteFeatures | None = None
    if any(p.suffix.lower() not in FEATURE_SUFFIXES for p, _ in inputs):
        remote = _RemoteFeatures(localizer)
        localizer._extractor = remote  # type: ignore[assignment] - the localizer's lazily made extractor
    progress = ClusterProgress(len(inputs), "inputs", show_progress)

    def finish(index: int, analysis: Analysis | None, message: str | None) -> None:
        if analysis is not None:
            analyses[index] = analysis
            if on_analysis:
                on_analysis(analysis)
        else:
            failed[index] = message or ""
        progress.item(analysis is None, int((analysis.recipe or {}).get("frame_count") or 0)
                      if analysis is not None and not analysis.from_cache else 0)

    def analyze(index: int) -> bool:
        """Analyse input `index` on the driver; False when its features must come from a worker."""
        path, name = inputs[index]
        try:
            analysis = localizer.analyze(path, min_score, name)
        except _Deferred:
            return False
        except Co2Error as exc:
            finish(index, None, str(exc))
        else:
            finish(index, analysis, None)
        return True

    def jobs() -> Iterator[tuple[int, str, str]]:
        for index, (path, _) in enumerate(inputs):
            if remote is not None:
                remote.deferring = True
            try:
                handled = analyze(index)
            finally:
                if remote is not None:
                    remote.deferring = False
            if not handled:
                yield (index, *_job_paths(path))

    def on_result(index: int, result: Result) -> None:
        path, _ = inputs[index]
        if not result["ok"]:
            finish(index, None, result["message"])
            return
        assert remote is not None
        remote.results[str(path)] = Extracted(np.array(result["features"]), result["recipe"])
        try:
            analyze(index)
        finally:
            remote.results.pop(str(path), None)

    videos = sum(1 for p, _ in inputs if p.suffix.lower() not in FEATURE_SUFFIXES)
    with progress:
        pool.run(jobs(), on_result, videos, progress.poll if progress.enabled else None)
    order = range(len(inputs))
    return ([analyses[i] for i in order if i in analyses],
            [(inputs[i][0], failed[i]) for i in order if i in failed])
