"""Train CO2-Net from video-level labels with the original recipe (main.py, train.py, test.py), resumably.

Recipe (the original's, kept unless noted):

* Batches of 10: 3 classes x 2 videos sharing that class, then 4 random training videos, each resampled to
  `max_seqlen` snippets by `random_perturb` (`datasets.PairSampler`). Adam(lr, weight_decay), CO2-Net loss with
  top-k ratio `k` (`co2net.co2_loss`); ActivityNet1.2 uses the ANT variant: avg-pool kernel
  (max_seqlen // t) // 2 * 2 + 1 on cas and attentions, mutual loss weight 1 whatever alpha4, and videos of
  <= 10 snippets are left out (training and evaluation), all-zero videos are never drawn as a pair.
* Evaluation after the step with 0-based index i when i % eval_every == 0 and i > 0 (the original's schedule),
  plus once after the last step (added so the final weights always compete). Full-length features, eval mode,
  proposals by `localize.multiple_threshold_proposals`, mAP by `evaluate.detection_map`: THUMOS14 at tIoU
  0.1..0.9 with the ambiguous-segment filter, ActivityNet1.2 at 0.5..0.95 on 'validation', without it.
* Checkpoint selection: THUMOS14 keeps the weights with the highest sum of mAP@0.1..0.7, ActivityNet1.2 the
  highest mean mAP (strictly greater than the best so far). The original selects on the *test* set
  (`select_on_test=True`); by default we select on a seeded held-out part of the training videos instead, so the
  test set stays unseen. The first evaluation always writes a checkpoint (the original writes none while mAP = 0).

Outputs beside `output` (stem = name up to the first dot): the checkpoint itself (`torch.save(state_dict)`, the
official format), `<stem>.classes.txt`, `<stem>.train.json` (recipe and best scores) and
`<stem>.train_state.pt`: model, Adam state, torch and sampler RNG states, iteration and best score, written
atomically at every evaluation (and every `save_every` steps). Running the same configuration again resumes
from it; a resumed run ends with exactly the weights of an uninterrupted one (same device and thread count).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from co2cli.checkpoints import beside_checkpoint, read_training_state
from co2cli.co2net import CO2Net, LossWeights, activitynet_pool_kernel, co2_loss, run_co2net
from co2cli.datasets import FeatureDataset, PairSampler, class_members, load_dataset
from co2cli.devices import pick_device
from co2cli.errors import Co2Error
from co2cli.evaluate import PROTOCOLS, THUMOS_TIOU, Annotations, DetectionResult, EvalProtocol, detection_map
from co2cli.features import FEATURE_DIM
from co2cli.fsio import atomic_file, write_text_atomic
from co2cli.localize import Detection, multiple_threshold_proposals

STATE_FORMAT = "co2cli-train-state"
STATE_VERSION = 1
HELDOUT_SUBSET = "co2cli-heldout"  # subset name given to held-out training videos for the evaluator


@dataclass(frozen=True)
class Recipe:
    """A dataset's training recipe (the paper's hyper-parameters, run.sh / README) and its evaluation protocol."""

    evaluation: EvalProtocol
    ant: bool  # ANT_CO2: temporal pooling, alpha4 ignored
    max_iter: int
    lr: float
    k: float
    max_seqlen: int
    weight_decay: float

    @property
    def name(self) -> str:
        return self.evaluation.name

    @property
    def train_subset(self) -> str:
        return self.evaluation.train_subset

    @property
    def eval_subset(self) -> str:
        return self.evaluation.eval_subset

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self.evaluation.thresholds

    @property
    def filter_ambiguous(self) -> bool:
        return self.evaluation.filter_ambiguous

    @property
    def min_snippets(self) -> int:
        """Shorter videos are left out of training and evaluation."""
        return self.evaluation.min_snippets

    def selection_score(self, mean_ap: Sequence[float]) -> float:
        """THUMOS14: sum of mAP@0.1..0.7 (main.py); ActivityNet1.2: mean over all thresholds."""
        return float(np.mean(mean_ap)) if self.ant else float(np.sum(mean_ap[:7]))

    def headline(self, mean_ap: Sequence[float]) -> tuple[str, float]:
        """(name, value) of the average usually reported: mAP@0.1:0.7 or mAP@0.5:0.95, as fractions."""
        return ("0.5:0.95", float(np.mean(mean_ap))) if self.ant else ("0.1:0.7", float(np.mean(mean_ap[:7])))


RECIPES = {
    # README "Train Your Own Model" (--max-seqlen 320 --max-iter 20000; run.sh has 500 and 5000).
    "thumos14": Recipe(PROTOCOLS["thumos14"], False, max_iter=20000, lr=5e-5, k=7.0, max_seqlen=320,
                       weight_decay=1e-3),
    # run.sh: --k 5 --lr 3e-5 --max-seqlen 60 --max-iter 22000; weight_decay is options.py's default 5e-4.
    "activitynet12": Recipe(PROTOCOLS["activitynet12"], True, max_iter=22000, lr=3e-5, k=5.0, max_seqlen=60,
                            weight_decay=5e-4),
}


@dataclass
class TrainConfig:
    """`co2 train` options. None means the dataset's paper value (see RECIPES)."""

    dataset: str
    features: Path
    output: Path
    annotations: Path | None = None
    max_iter: int | None = None
    lr: float | None = None
    batch_size: int = 10
    max_seqlen: int | None = None
    k: float | None = None
    seed: int = 3552
    weight_decay: float | None = None
    eval_every: int = 200
    save_every: int = 0  # 0: save the training state at evaluations only
    device: str = "auto"
    select_on_test: bool = False
    heldout_fraction: float = 0.15
    t: int = 5  # ActivityNet pooling kernel divisor
    fresh: bool = False  # ignore (and overwrite) an existing training state
    progress: bool = True
    # Reduced CO2-Net widths for CPU learning checks only (None = the original's 2048 / 2048 / 512). Checkpoints
    # trained with them have other shapes: load them with CO2Net(..., **widths), not load_co2net.
    feature_dim: int | None = None  # input channels the features must have (RGB first half)
    hidden_dim: int | None = None
    attention_dim: int | None = None


@dataclass(frozen=True)
class Settings:
    """A TrainConfig with every default resolved and checked."""

    protocol: Recipe
    features: Path
    annotations: Path | None
    output: Path
    max_iter: int
    lr: float
    batch_size: int
    max_seqlen: int
    k: float
    seed: int
    weight_decay: float
    eval_every: int
    save_every: int
    device: torch.device
    select_on_test: bool
    heldout_fraction: float
    t: int
    fresh: bool
    progress: bool
    widths: dict  # CO2Net width overrides ({} = the original network)

    @property
    def feature_dim(self) -> int:
        return self.widths.get("feature_dim", FEATURE_DIM)

    @property
    def temporal_pool_kernel(self) -> int | None:
        return activitynet_pool_kernel(self.max_seqlen, self.t) if self.protocol.ant else None

    def trajectory(self) -> dict:
        """Everything that changes the weights a run produces (a resumed run must match it)."""
        return {"dataset": self.protocol.name, "lr": self.lr, "batch_size": self.batch_size,
                "max_seqlen": self.max_seqlen, "k": self.k, "seed": self.seed, "weight_decay": self.weight_decay,
                "select_on_test": self.select_on_test, "heldout_fraction": self.heldout_fraction,
                "temporal_pool_kernel": self.temporal_pool_kernel, "widths": dict(self.widths)}


def resolve(config: TrainConfig) -> Settings:
    """Fill in the dataset's defaults and check ranges; problems are one Co2Error line."""
    protocol = RECIPES.get(config.dataset)
    if protocol is None:
        raise Co2Error(f"unknown dataset {config.dataset!r}: use {' or '.join(RECIPES)}")

    def pick(value, default):
        return default if value is None else value

    s = Settings(protocol, Path(config.features), Path(config.annotations) if config.annotations else None,
                 Path(config.output), int(pick(config.max_iter, protocol.max_iter)), float(pick(config.lr, protocol.lr)),
                 int(config.batch_size), int(pick(config.max_seqlen, protocol.max_seqlen)),
                 float(pick(config.k, protocol.k)), int(config.seed),
                 float(pick(config.weight_decay, protocol.weight_decay)), int(config.eval_every),
                 int(config.save_every), pick_device(config.device), bool(config.select_on_test),
                 float(config.heldout_fraction), int(config.t), bool(config.fresh), bool(config.progress),
                 {k: int(v) for k, v in (("feature_dim", config.feature_dim), ("hidden_dim", config.hidden_dim),
                                         ("attention_dim", config.attention_dim)) if v is not None})
    checks = [(s.max_iter >= 1, f"--max-iter must be at least 1, got {s.max_iter}"),
              (s.lr > 0 and math.isfinite(s.lr), f"--lr must be a positive number, got {s.lr}"),
              (s.batch_size >= 6, f"--batch-size must be at least 6 (3 pairs sharing a class), got {s.batch_size}"),
              (s.max_seqlen >= 1, f"--max-seqlen must be at least 1 snippet, got {s.max_seqlen}"),
              (s.k > 0, f"--k must be positive, got {s.k}"),
              (s.weight_decay >= 0, f"--weight-decay must be >= 0, got {s.weight_decay}"),
              (s.eval_every >= 1, f"--eval-every must be at least 1, got {s.eval_every}"),
              (s.save_every >= 0, f"--save-every must be >= 0, got {s.save_every}"),
              (0 < s.heldout_fraction < 1, f"--heldout-fraction must be in (0, 1), got {s.heldout_fraction}"),
              (s.t >= 1, f"--t must be at least 1, got {s.t}")]
    for ok, message in checks:
        if not ok:
            raise Co2Error(message)
    if s.output.exists() and s.output.is_dir():
        raise Co2Error(f"--output {s.output} is a folder; give a checkpoint file name such as best_CO2.pkl")
    return s


# ---------------------------------------------------------------------------------------------------------------
# Files beside the checkpoint


def state_path(output: Path) -> Path:
    """`<stem>.train_state.pt` beside the checkpoint."""
    return beside_checkpoint(output, ".train_state.pt")


def classes_path(output: Path) -> Path:
    return beside_checkpoint(output, ".classes.txt")


def summary_path(output: Path) -> Path:
    return beside_checkpoint(output, ".train.json")


def save_torch_atomic(obj: object, target: Path) -> None:
    """torch.save streamed into `fsio.atomic_file`: a kill never leaves half a file."""
    with atomic_file(target) as fh:
        torch.save(obj, fh)


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as CPU float32 tensors in module order (the official checkpoint's content)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class TrainData:
    dataset: FeatureDataset
    train_rows: list[int]  # rows the random part of a batch is drawn from
    pair_members: list[list[int]]  # per class, rows the similar pairs are drawn from
    eval_rows: list[int]  # videos run at each evaluation
    eval_annotations: Annotations  # with held-out rows renamed to HELDOUT_SUBSET when selecting on them
    eval_subset: str

    def fingerprint(self) -> str:
        """Identifies the training videos and their lengths (a resumed run must see the same data)."""
        names = self.dataset.videonames
        text = "\n".join(f"{names[r]}:{len(self.dataset.features[r])}" for r in self.train_rows)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def heldout_split(dataset: FeatureDataset, rows: Sequence[int], fraction: float, seed: int,
                  min_per_class: int = 2) -> list[int]:
    """A seeded held-out part (about `fraction`) of the training rows, for checkpoint selection.

    Only videos with ground-truth segments are held out, and never one whose removal would leave one of its
    classes with fewer than `min_per_class` training videos (the pair sampler needs two).
    """
    labels = dataset.labels
    counts = labels[list(rows)].sum(0)
    wanted = max(1, round(fraction * len(rows)))
    held: list[int] = []
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(rows))
    for pos in order:
        if len(held) == wanted:
            break
        row = rows[pos]
        classes = np.flatnonzero(labels[row])
        if not dataset.annotations.segments[row] or (counts[classes] <= min_per_class).any():
            continue
        counts[classes] -= 1
        held.append(row)
    if not held:
        raise Co2Error("no training video can be held out for checkpoint selection (too few videos per class); "
                       "use --select-on-test")
    return sorted(held)


def prepare_data(s: Settings) -> TrainData:
    """Load and split the videos as the original's dataset classes do (plus the optional held-out split)."""
    p = s.protocol
    dataset = load_dataset(s.features, s.annotations, subsets=(p.train_subset, p.eval_subset), dim=s.feature_dim)
    long_enough = {r for r in range(len(dataset.videonames))
                   if dataset.features[r] is not None and len(dataset.features[r]) >= p.min_snippets}
    all_train = dataset.indices(p.train_subset)
    empty = [r for r in all_train + dataset.indices(p.eval_subset) if len(dataset.features[r]) == 0]
    if empty and not p.ant:
        raise Co2Error(f"video {dataset.videonames[empty[0]]} has no snippets (T = 0)")
    train_rows = [r for r in all_train if r in long_enough]
    if not train_rows:
        raise Co2Error(f"the annotations have no '{p.train_subset}' videos to train on")
    # ActivityNet: pairs come from all non-zero training videos, short ones included (the original maps classes
    # before filtering lengths); THUMOS: from all training videos.
    pair_rows = [r for r in all_train if not p.ant or (len(dataset.features[r]) and dataset.features[r].any())]
    ann = dataset.annotations
    if s.select_on_test:
        eval_rows = [r for r in dataset.indices(p.eval_subset) if r in long_enough]
        eval_ann, eval_subset = ann, p.eval_subset
        if not eval_rows:
            raise Co2Error(f"the annotations have no '{p.eval_subset}' videos to select the checkpoint on")
    else:
        held = set(heldout_split(dataset, train_rows, s.heldout_fraction, s.seed))
        train_rows = [r for r in train_rows if r not in held]
        pair_rows = [r for r in pair_rows if r not in held]
        eval_rows = sorted(held)
        eval_subset = HELDOUT_SUBSET
        eval_ann = dataclasses.replace(ann, subsets=[HELDOUT_SUBSET if i in held else sub
                                                     for i, sub in enumerate(ann.subsets)])
    return TrainData(dataset, train_rows, class_members(dataset.labels, pair_rows), eval_rows, eval_ann,
                     eval_subset)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def predictions_for(model: CO2Net, video: str, features: np.ndarray) -> list[Detection]:
    """The original's test-time proposals of one video (snippet units)."""
    outputs = run_co2net(model, features)
    return [p.of_video(video) for p in multiple_threshold_proposals(outputs["cas"], outputs["attn"])]


def evaluate_model(model: CO2Net, videos: Sequence[tuple[str, np.ndarray]], annotations: Annotations, subset: str,
                   thresholds: Sequence[float] = THUMOS_TIOU, filter_ambiguous: bool = True) -> DetectionResult:
    """Detection mAP of `model` on (name, (T, 2048) features) videos against `subset`'s ground truth."""
    predictions: list[Detection] = []
    for name, feats in videos:
        predictions.extend(predictions_for(model, name, feats))
    return detection_map(predictions, annotations, subset, thresholds, filter_ambiguous_segments=filter_ambiguous)


# ---------------------------------------------------------------------------------------------------------------
# Training state


@dataclass
class EvalRecord:
    iteration: int  # optimizer steps done
    loss: float  # mean training loss since the previous evaluation
    map: list[float]  # per threshold, fractions
    score: float  # the selection score

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    checkpoint: Path
    classes_file: Path
    state_file: Path
    iterations: int
    best_iteration: int
    best_score: float
    best_map: list[float]
    thresholds: tuple[float, ...]
    selected_on: str
    history: list[EvalRecord]
    resumed_from: int | None
    seconds: float
    headline: tuple[str, float]  # e.g. ("0.1:0.7", best mean mAP over those thresholds)


@dataclass
class _Progress:
    iteration: int = 0
    best_score: float = -math.inf
    best_iteration: int = 0
    best_map: list[float] = field(default_factory=list)
    history: list[EvalRecord] = field(default_factory=list)
    loss_sum: float = 0.0
    loss_count: int = 0


def _rng_states(device: torch.device) -> dict:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save_state(path: Path, s: Settings, data: TrainData, model: CO2Net, optimizer: torch.optim.Optimizer,
               sampler: PairSampler, prog: _Progress) -> None:
    state = {
        "format": STATE_FORMAT, "version": STATE_VERSION, "iteration": prog.iteration,
        "trajectory": s.trajectory(), "data": data.fingerprint(), "max_iter": s.max_iter,
        "model": cpu_state_dict(model), "optimizer": optimizer.state_dict(),
        "rng": _rng_states(s.device), "sampler_rng": sampler.rng_state(),
        "best_score": prog.best_score, "best_iteration": prog.best_iteration, "best_map": list(prog.best_map),
        "history": [r.to_json() for r in prog.history], "loss_sum": prog.loss_sum, "loss_count": prog.loss_count,
    }
    save_torch_atomic(state, path)


def load_state(path: Path) -> dict:
    state = read_training_state(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise Co2Error(f"{path} is not a co2cli training state (version {STATE_VERSION}); delete it or pass --fresh")
    return state


def _check_resumable(state: dict, s: Settings, data: TrainData, path: Path) -> None:
    want = s.trajectory()
    for key, value in want.items():
        if state["trajectory"].get(key) != value:
            raise Co2Error(f"{path} was trained with {key} = {state['trajectory'].get(key)!r}, not {value!r}: "
                           "rerun with the same options to resume, or pass --fresh to start over")
    if state["data"] != data.fingerprint():
        raise Co2Error(f"{path} was trained on other videos (features or annotations changed): "
                       "pass --fresh to start over")
    if state["iteration"] > s.max_iter:
        raise Co2Error(f"{path} has already done {state['iteration']} iterations, more than --max-iter {s.max_iter}")


def _restore(state: dict, s: Settings, model: CO2Net, optimizer: torch.optim.Optimizer, sampler: PairSampler) -> _Progress:
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    sampler.set_rng_state(state["sampler_rng"])
    _set_rng_states(state["rng"], s.device)
    history = [EvalRecord(**r) for r in state["history"]]
    return _Progress(state["iteration"], state["best_score"], state["best_iteration"], list(state["best_map"]),
                     history, state["loss_sum"], state["loss_count"])


# ---------------------------------------------------------------------------------------------------------------
# The loop


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training (restored afterwards); cuBLAS needs its workspace setting first."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def build_model(n_class: int, s: Settings) -> CO2Net:
    """CO2Net (THUMOS14) or the ANT variant, initialised from the torch RNG on the CPU (device-independent)."""
    return CO2Net(n_class, temporal_pool_kernel=s.temporal_pool_kernel, **s.widths)


def train_step(model: CO2Net, optimizer: torch.optim.Optimizer, features: np.ndarray, labels: np.ndarray,
               weights: LossWeights, device: torch.device, parts: dict[str, float] | None = None) -> float:
    """One optimizer step on a (B, T, 2048) batch with (B, C) labels; returns the loss. A `parts` dict given
    receives the loss terms as floats (per-video terms averaged over the batch)."""
    model.train()
    x = torch.from_numpy(features).to(device)
    y = torch.from_numpy(labels).to(device)
    loss, terms = co2_loss(model(x), y, weights)
    if parts is not None:
        parts.update(total=float(loss.detach()), **{k: float(v.detach().mean()) for k, v in terms.items()
                                                     if k != "cas_supp"})
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _is_eval_step(step: int, s: Settings) -> bool:
    """step = 0-based index of the step just done. The original: step % interval == 0 and step > 0."""
    return (step % s.eval_every == 0 and step > 0) or step == s.max_iter - 1


def _write_outputs(s: Settings, model: CO2Net, classlist: Sequence[str]) -> None:
    save_torch_atomic(cpu_state_dict(model), s.output)
    write_text_atomic(classes_path(s.output), "\n".join(classlist) + "\n")


def _write_summary(s: Settings, data: TrainData, prog: _Progress, selected_on: str) -> None:
    name, value = s.protocol.headline(prog.best_map) if prog.best_map else ("", float("nan"))
    summary = {
        "checkpoint": s.output.name, "dataset": s.protocol.name, "iterations": prog.iteration,
        "max_iter": s.max_iter, "best_iteration": prog.best_iteration, "selected_on": selected_on,
        "map": {f"{t:g}": m for t, m in zip(s.protocol.thresholds, prog.best_map)},
        f"average_{name}": value, "temporal_pool_kernel": s.temporal_pool_kernel,
        "recipe": s.trajectory() | {"max_iter": s.max_iter, "eval_every": s.eval_every},
        "classes": len(data.dataset.classlist), "train_videos": len(data.train_rows),
        "history": [r.to_json() for r in prog.history],
    }
    write_text_atomic(summary_path(s.output), json.dumps(summary, indent=1) + "\n")


OnIteration = Callable[[int, float], None]
OnStep = Callable[[int, list[int], np.ndarray, dict[str, float]], None]


def train(config: TrainConfig, on_iteration: OnIteration | None = None,
          on_step: OnStep | None = None) -> TrainResult:
    """Train (or resume) as configured; returns where things were written and the best scores.

    `on_iteration(steps_done, loss)` is called after every step (tests use it to interrupt a run);
    `on_step(steps_done, dataset_rows, batch, loss_parts)` too, with the batch just trained on (tests compare
    the batches and loss terms with the original's).
    """
    started = time.perf_counter()
    s = resolve(config)
    data = prepare_data(s)
    classlist = data.dataset.classlist
    p = s.protocol
    path = state_path(s.output)
    state = None if s.fresh or not path.is_file() else load_state(path)
    if state is not None:
        _check_resumable(state, s, data, path)
    selected_on = (f"'{p.eval_subset}' subset ({len(data.eval_rows)} videos, as the original)" if s.select_on_test
                   else f"held-out training videos ({len(data.eval_rows)} of {len(data.eval_rows) + len(data.train_rows)})")
    eval_videos = [(data.dataset.videonames[r], data.dataset.features[r]) for r in data.eval_rows]
    weights = LossWeights(k=s.k, alpha4=None if p.ant else 1.0)
    console = Console(stderr=True)
    devices = [s.device] if s.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _deterministic(s.device):
        torch.manual_seed(s.seed)
        model = build_model(len(classlist), s).to(s.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        sampler = PairSampler(data.dataset.features, data.dataset.labels, data.train_rows, data.pair_members,
                              s.batch_size, s.max_seqlen, np.random.RandomState(s.seed), class_names=classlist)
        prog = _Progress() if state is None else _restore(state, s, model, optimizer, sampler)
        resumed_from = None if state is None else prog.iteration
        del state
        if resumed_from is not None:
            done = "already finished" if resumed_from >= s.max_iter else "resuming"
            console.print(f"{done}: {path.name} is at iteration {resumed_from} of {s.max_iter}")
        columns = (TextColumn("[bold]co2 train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=console, disable=not s.progress, transient=False) as bar:
            task = bar.add_task("train", total=s.max_iter, completed=prog.iteration, status="")
            for step in range(prog.iteration, s.max_iter):
                batch, labels, rows = sampler.sample()
                parts: dict[str, float] | None = {} if on_step is not None else None
                loss = train_step(model, optimizer, batch, labels, weights, s.device, parts)
                if on_step is not None:
                    on_step(step + 1, rows, batch, parts)
                if not math.isfinite(loss):
                    raise Co2Error(f"the loss became {loss} at iteration {step + 1}; try a lower --lr")
                prog.iteration = step + 1
                prog.loss_sum += loss
                prog.loss_count += 1
                saved = False
                if _is_eval_step(step, s):
                    _evaluate_and_keep(s, data, model, eval_videos, prog, classlist, console)
                    _write_summary(s, data, prog, selected_on)
                    save_state(path, s, data, model, optimizer, sampler, prog)
                    saved = True
                if s.save_every and prog.iteration % s.save_every == 0 and not saved:
                    save_state(path, s, data, model, optimizer, sampler, prog)
                bar.update(task, completed=prog.iteration, status=_status(prog, p))
                if on_iteration is not None:
                    on_iteration(prog.iteration, loss)
    if not s.output.is_file():  # only possible when a finished run's checkpoint was deleted afterwards
        raise Co2Error(f"{s.output} is missing although {path.name} says training finished; pass --fresh")
    return TrainResult(s.output, classes_path(s.output), path, prog.iteration, prog.best_iteration, prog.best_score,
                       list(prog.best_map), p.thresholds, selected_on, list(prog.history), resumed_from,
                       time.perf_counter() - started, p.headline(prog.best_map) if prog.best_map else ("", math.nan))


def _status(prog: _Progress, p: Recipe) -> str:
    """The progress bar's text: mean loss since the last evaluation and that evaluation's headline mAP."""
    if not prog.history:
        return f"loss {prog.loss_sum / max(prog.loss_count, 1):.4f}"
    last = prog.history[-1]
    loss = prog.loss_sum / prog.loss_count if prog.loss_count else last.loss
    name, value = p.headline(last.map)
    return f"loss {loss:.4f} | mAP@{name} {100 * value:.1f}%"


def _evaluate_and_keep(s: Settings, data: TrainData, model: CO2Net, eval_videos: Sequence[tuple[str, np.ndarray]],
                       prog: _Progress, classlist: Sequence[str], console: Console) -> None:
    """Evaluate, log one line, and write the checkpoint when the selection score improves."""
    p = s.protocol
    result = evaluate_model(model, eval_videos, data.eval_annotations, data.eval_subset, p.thresholds,
                            p.filter_ambiguous)
    score = p.selection_score(result.map)
    record = EvalRecord(prog.iteration, prog.loss_sum / max(prog.loss_count, 1), [float(m) for m in result.map], score)
    prog.history.append(record)
    prog.loss_sum, prog.loss_count = 0.0, 0
    improved = score > prog.best_score
    if improved:
        prog.best_score, prog.best_iteration, prog.best_map = score, prog.iteration, list(record.map)
        _write_outputs(s, model, classlist)
    name, value = p.headline(result.map)
    _, best = p.headline(prog.best_map)
    console.print(f"iteration {prog.iteration}: loss {record.loss:.4f}, mAP@{name} {100 * value:.2f}% "
                  f"(best {100 * best:.2f}% at {prog.best_iteration}){' - saved' if improved else ''}")
