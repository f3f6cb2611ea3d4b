"""`--executor ray`: the `runner.Pool` that runs a batch's computes on Ray workers, with the local executor's
results.

One video is one unit of work. Long-lived Ray actors (one per GPU, else one per `--cpus-per-worker` CPUs) build a
FeatureExtractor once from the I3D state dicts and weight records the driver ships through the object store (worker
nodes need no weight store), run the job's compute on each video they are given (`runner.Job.compute`: features,
or encoded flow) and *stream* its messages back in small pieces (a Ray streaming generator with backpressure: a
video's flow is ~400 KB per frame as float32, far too big to return whole). Everything else is the runner's on the
driver: claims, skips, writing every output, the summary and the exit codes, as with `--executor local`.

Faults: a worker process that dies (killed, out of memory, node lost) is restarted by Ray (`max_restarts=-1`);
what the driver received of its video is void (`Sink.void`), and the video is resubmitted, up to MAX_ATTEMPTS
times, then fails alone. Videos queued behind it are resubmitted without being charged. A Co2Error inside a worker
(a bad video) comes back as that input's failure message and the worker carries on; any other exception stops the
batch as it would locally.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from co2cli.batch import BatchEvents, BatchItem
from co2cli.errors import Co2Error
from co2cli.extract import WEIGHT_NAMES, WeightRecord, installed_weights, parse_streams, worker_flow_backend
from co2cli.runner import Chunk, Compute, ComputeFailed, Sink, Task, run_batch, run_compute

if TYPE_CHECKING:
    import torch

    from co2cli.extract import FeatureExtractor

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

__all__ = ["ClusterOptions", "RayPool", "WorkerSpec", "extract_batch", "extract_flow_batch", "require_ray",
           "INSTALL_HINT"]


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
    """The I3D state dicts per stream, with the store records a FeatureExtractor writes into each recipe."""

    state_dicts: dict[str, dict[str, torch.Tensor]]
    records: dict[str, WeightRecord]
    """Weight name -> where the driver read it and its SHA-256 (the recipe's weights_sha256)."""


def read_weights(streams: Sequence[str], given: Mapping[str, Mapping] | None = None) -> ShippedWeights:
    """The installed I3D weights for `streams` from the driver's store (or `given` state dicts, as loaded)."""
    from co2cli import checkpoints

    records = installed_weights(parse_streams(streams))
    state_dicts = {}
    for stream in parse_streams(streams):
        source = (given or {}).get(stream)
        record = records[WEIGHT_NAMES[stream]]
        state_dicts[stream] = dict(source) if source is not None else checkpoints.read_state_dict(Path(record.label))
    return ShippedWeights(state_dicts, records)


def build_extractor(spec: WorkerSpec, shipped: ShippedWeights | None) -> FeatureExtractor:
    """A FeatureExtractor from shipped weights (None: flow only, no networks), on a node that may have no weight
    store of its own."""
    from co2cli.extract import FeatureExtractor

    return FeatureExtractor(streams=spec.streams, device=spec.device, batch_size=spec.batch_size,
                            chunk_snippets=spec.chunk_snippets, flow_workers=spec.flow_workers,
                            max_side_px=spec.max_side_px, flow_backend=spec.flow_backend,
                            flow_region=spec.flow_region, load_models=shipped is not None,
                            state_dicts=shipped.state_dicts if shipped else None,
                            provenance=shipped.records if shipped else None,
                            precision=spec.precision)


# ---------------------------------------------------------------------------------------------------------------
# The worker (a Ray actor; plain class here so this module imports without Ray)


@dataclass
class WorkerInfo:
    """What a worker answers once its networks are built (checked by the driver before it gets videos)."""

    pid: int
    host: str
    node: str
    device: str
    version: str
    error: str | None


@dataclass
class _WorkerError:
    """The worker could not build its networks: the batch stops (every video would fail the same way)."""

    message: str


class _Worker:
    """Runs a job's compute on one video per call with networks built once, streaming its messages.

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

    def setup(self, shipped_ref: list) -> WorkerInfo:
        """Build the networks (once); what the driver checks before sending videos."""
        import ray

        from co2cli.version import __version__

        self._ensure(shipped_ref)
        device = getattr(self.extractor, "device", None)
        return WorkerInfo(self.pid, socket.gethostname(), ray.get_runtime_context().get_node_id(), str(device),
                          __version__, self.error)

    def status(self) -> tuple[int, str | None, int, int | None]:
        """(pid, video in progress, its frames done, its frames estimate); answered while compute() runs."""
        return self.pid, self.current, self.frames[0], self.frames[1]

    def _progress(self, done: int, estimate: int | None) -> None:
        self.frames = (done, estimate)

    def compute(self, path: str, absolute: str, compute: Compute, shipped_ref: list) -> Iterator[object]:
        """A streaming generator: the compute's messages, chunks cut to FLOW_MESSAGE_FIELDS fields."""
        self._ensure(shipped_ref)
        if self.extractor is None:
            yield _WorkerError(self.error or "unknown error")
            return
        self.current, self.frames = path, (0, None)
        try:
            for message in run_compute(compute, self.extractor, path if self.cwd_ok else absolute, self._progress):
                if isinstance(message, Chunk):
                    for start in range(0, len(message.data), FLOW_MESSAGE_FIELDS):
                        yield Chunk(message.data[start:start + FLOW_MESSAGE_FIELDS])
                else:
                    yield message
        finally:
            self.current = None


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
    info: WorkerInfo | None = None
    inflight: deque = field(default_factory=deque)
    """Refs of the videos submitted to it, oldest (the one it works on) first."""

    def where(self) -> str:
        return self.info.host if self.info else "?"


@dataclass
class _Job:
    task: Task
    attempts: int = 0


class RayPool:
    """Ray workers for one batch. Connects (or starts a local Ray) and starts workers on first use, so a batch
    with nothing left to do never touches Ray. Use as a context manager: workers are killed and a Ray started
    here is shut down on exit."""

    shows_progress = True
    """Inputs done over the cluster, with frames per second, on stderr when it is a terminal (unless quiet)."""

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
            self.note(f"note: {self.address} has room for {fits} worker(s) of {cpw} CPU(s); starting {fits}, "
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
        self.note(f"ray: {count} worker(s) ({cpus} CPU{'s' if cpus > 1 else ''}"
                   f"{', 1 GPU' if actor_options['num_gpus'] else ''} each) on {self.address} ({len(where)} "
                   f"node{'s' if len(where) != 1 else ''})")

    def note(self, line: str) -> None:
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
        return [s.info.pid for s in self.slots
                if s.info_ref is None and s.info is not None and (s.inflight or not busy_only)]

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

    def run(self, tasks: Iterable[Task], compute: Compute, sink: Sink, pending: int) -> None:
        """`runner.Pool.run` on the workers: every task `tasks` yields (pulled lazily, one per free worker place)
        runs `compute` on a worker and its messages reach `sink` on the driver, in completion order. Workers start
        on the first task. A RayTaskError (a bug, not a Co2Error) is re-raised as its cause."""
        run = _RayRun(self, tasks, compute, sink)
        if run.peek():
            self.start(pending)
            with ClusterProgress(pending, "videos", not self.options.quiet) as progress:
                run.loop(progress)

    def submit(self, slot: _Slot, job: _Job, compute: Compute) -> Any:
        return slot.actor.compute.options(
            num_returns="streaming", _generator_backpressure_num_objects=FLOW_MESSAGES_AHEAD,
        ).remote(job.task.path, job.task.absolute, compute, [self._weights_ref])

    def restart_setup(self, slot: _Slot) -> None:
        slot.info_ref = slot.actor.setup.remote([self._weights_ref])

    def started(self, slot: _Slot, ref: Any) -> None:
        """A worker answered setup() after starting or restarting: check it, or drop it if it is gone for good."""
        import ray
        from ray.exceptions import ActorDiedError

        from co2cli.version import __version__

        try:
            info = ray.get(ref)
        except ActorDiedError:
            self.slots.remove(slot)  # cannot be restarted (its node is gone and no other fits it)
            return
        except _crash_errors():
            time.sleep(0.2)
            self.restart_setup(slot)  # still restarting
            return
        if info.error:
            raise Co2Error(f"a Ray worker on {info.host} could not start: {info.error}")
        if info.version != __version__:
            raise Co2Error(f"the Ray worker on {info.host} runs co2cli {info.version}, this driver "
                           f"{__version__}: install the same co2cli on every node")
        slot.info, slot.info_ref = info, None


def _crash_errors() -> tuple[type[BaseException], ...]:
    """The Ray errors that mean a worker process (or its node) died under a call."""
    from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, WorkerCrashedError

    return (RayActorError, ObjectLostError, WorkerCrashedError, NodeDiedError)


class _RayRun:
    """One RayPool.run: keeps every worker's queue QUEUE_DEPTH deep, routes the streamed messages to the sink,
    and resubmits the videos of a worker that died."""

    def __init__(self, pool: RayPool, tasks: Iterable[Task], compute: Compute, sink: Sink) -> None:
        self.pool, self.compute, self.sink = pool, compute, sink
        self.source = iter(tasks)
        self.exhausted = False
        self.retry: deque[_Job] = deque()
        self.inflight: dict[Any, tuple[_Slot, _Job]] = {}

    def next_job(self) -> _Job | None:
        if self.retry:
            return self.retry.popleft()
        if not self.exhausted:
            for task in self.source:
                return _Job(task)
            self.exhausted = True
        return None

    def peek(self) -> bool:
        """Whether there is any task (pulled now, so a batch with nothing to do never starts Ray)."""
        first = self.next_job()
        if first is not None:
            self.retry.append(first)
        return first is not None

    def fill(self) -> None:
        ready = [s for s in self.pool.slots if s.info_ref is None]
        for depth in range(1, QUEUE_DEPTH + 1):
            for slot in sorted(ready, key=lambda s: len(s.inflight)):
                if len(slot.inflight) < depth:
                    job = self.next_job()
                    if job is None:
                        return
                    ref = self.pool.submit(slot, job, self.compute)
                    slot.inflight.append(ref)
                    self.inflight[ref] = (slot, job)

    def loop(self, progress: ClusterProgress) -> None:
        import ray

        last_poll = 0.0
        while True:
            self.fill()
            waiting = list(self.inflight) + [s.info_ref for s in self.pool.slots if s.info_ref is not None]
            if not waiting:
                if self.retry or not self.exhausted:
                    raise Co2Error(f"no Ray worker is left on {self.pool.address} to run the remaining videos")
                return
            done, _ = ray.wait(waiting, num_returns=1, timeout=POLL_S if progress.enabled else None)
            if progress.enabled and time.monotonic() - last_poll >= POLL_S:
                progress.poll(self.pool.poll_status())
                last_poll = time.monotonic()
            for ref in done:
                self.receive(ref, progress)

    def receive(self, ref: Any, progress: ClusterProgress) -> None:
        """Handle one ready ref: a worker's setup() answer, or the next message of a video."""
        import ray
        from ray.exceptions import RayTaskError

        starting = next((s for s in self.pool.slots if s.info_ref is not None and s.info_ref == ref), None)
        if starting is not None:
            self.pool.started(starting, ref)
            return
        if ref not in self.inflight:
            return  # a video of a worker that died, already requeued
        slot, job = self.inflight[ref]
        try:
            message = ray.get(next(ref))
        except StopIteration:  # pragma: no cover - the worker's generator always ends with a result
            message = ComputeFailed(f"{job.task.path}: the Ray worker ended without a result")
        except _crash_errors() as exc:
            self.worker_died(slot, exc)
            return
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, BaseException) else exc) from None
        if isinstance(message, Chunk):
            self.sink.chunk(job.task.key, message.data)
            return
        del self.inflight[ref]
        slot.inflight.remove(ref)
        if isinstance(message, _WorkerError):
            raise Co2Error(f"a Ray worker on {slot.where()} could not start: {message.message}")
        progress.item(isinstance(message, ComputeFailed), getattr(message, "frames", 0))
        self.sink.result(job.task.key, message)

    def worker_died(self, slot: _Slot, reason: BaseException) -> None:
        """The worker of `slot` died: charge its oldest video, requeue the rest, wait for its restart."""
        self.pool.deaths += 1
        self.pool.note(f"note: the Ray worker {slot.info.pid if slot.info else '?'} on {slot.where()} died "
                       f"({type(reason).__name__}); Ray restarts it and its video(s) are resubmitted")
        refs = list(slot.inflight)
        slot.inflight.clear()
        for position, ref in enumerate(refs):
            _, job = self.inflight.pop(ref)
            self.sink.void(job.task.key)
            if position == 0:
                job.attempts += 1
                if job.attempts >= MAX_ATTEMPTS:
                    first_line = (str(reason).splitlines() or [type(reason).__name__])[0]
                    self.sink.result(job.task.key, ComputeFailed(
                        f"{job.task.path}: the Ray worker extracting it died {job.attempts} times (last: "
                        f"{type(reason).__name__}: {first_line[:200]}); the video may need more memory than a "
                        "worker has"))
                    continue
            self.pool.resubmitted += 1
            if position == 0:
                self.retry.appendleft(job)
            else:
                self.retry.append(job)
        self.pool.restart_setup(slot)


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
# Batches on a pool (the runner does the work; these name the jobs)


def extract_batch(inputs: Sequence[tuple[Path, str]], out_dir: Path, pool: RayPool, overwrite: bool = False,
                  events: BatchEvents = BatchEvents()) -> list[BatchItem]:
    """`co2 extract-features --executor ray`: the local batch's items and outputs, computed on `pool`."""
    from co2cli.extract import FeatureJob

    job = FeatureJob.installed(out_dir, pool.spec.streams, pool.spec.flow_region, pool.spec.flow_backend,
                               pool.spec.precision)
    return run_batch(inputs, job, pool, overwrite, events)


def extract_flow_batch(inputs: Sequence[tuple[Path, str]], out_dir: Path, pool: RayPool, fmt: str = "npy",
                       overwrite: bool = False, events: BatchEvents = BatchEvents()) -> list[BatchItem]:
    """`co2 extract-flow --executor ray` (a spec with load_models=False and the flow stream): the local batch's
    files, byte for byte. With backend auto, a finished output made by either backend counts as done: each worker
    picks its own (torch on a GPU node, fused on a CPU one) and records it in the output's recipe."""
    from co2cli.flowfiles import FlowJob

    backend = worker_flow_backend(pool.spec.flow_backend)
    return run_batch(inputs, FlowJob(out_dir, fmt, pool.spec.flow_region, backend), pool, overwrite, events)
