"""The Python API that mirrors `co2 localize`: `load_model(...)` then `model.localize(path) -> list[Segment]`.

Inputs are feature files (`.npy`, (T, 2048)) or videos; videos go through the same extraction as
`co2 extract-features`.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from co2cli import classes as class_lists
from co2cli.co2net import CO2Net, load_co2net, run_co2net
from co2cli.errors import Co2Error
from co2cli.features import FeatureFile, load_features
from co2cli.localize import Segment, multiple_threshold_proposals, to_segments

FEATURE_SUFFIXES = {".npy"}


def pick_device(device: str = "auto") -> torch.device:
    """'auto' = CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise Co2Error("--device cuda was asked for but no CUDA GPU is available (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise Co2Error(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def expand_inputs(inputs: Iterable[str], suffixes: set[str] | None = None) -> list[Path]:
    """Files as given, folders searched recursively (for `suffixes`), globs expanded; order kept, no repeats."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and
                                (suffixes is None or p.suffix.lower() in suffixes)))
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not matches:
                raise Co2Error(f"no file matches {item}")
            found.extend(p for p in matches if p.is_file())
        else:
            found.append(path)
    seen: set[Path] = set()
    return [p for p in found if not (p in seen or seen.add(p))]


@dataclass
class Co2Localizer:
    """CO2-Net on two-stream features: CAS + attention -> multiple-threshold proposals -> segments."""

    model: CO2Net
    class_names: list[str]
    description: str = "CO2-Net"

    def localize_features(self, feats: FeatureFile, min_score: float | None = None) -> list[Segment]:
        outputs = run_co2net(self.model, feats.features)
        proposals = multiple_threshold_proposals(outputs["cas"], outputs["attn"])
        return to_segments(feats.name, proposals, self.class_names, feats.snippet_seconds, min_score)

    def localize(self, path: str | Path, min_score: float | None = None) -> list[Segment]:
        """Segments (seconds) of one feature file."""
        path = Path(path)
        if path.suffix.lower() not in FEATURE_SUFFIXES:
            raise Co2Error(f"{path}: videos need the video front end; pass a (T, 2048) .npy feature file")
        return self.localize_features(load_features(path), min_score)

    def localize_many(self, inputs: Sequence[str], min_score: float | None = None,
                      plot_dir: Path | None = None) -> tuple[dict[str, list[Segment]], list[tuple[str, str]]]:
        """Localize every input; one bad input is reported in `failures` and never stops the others."""
        results: dict[str, list[Segment]] = {}
        failures: list[tuple[str, str]] = []
        for path in expand_inputs(inputs, FEATURE_SUFFIXES):
            try:
                results[path.stem] = self.localize(path, min_score)
            except Co2Error as exc:
                failures.append((str(path), str(exc)))
        return results, failures


def resolve_checkpoint(checkpoint: str | None, name: str) -> Path:
    """A checkpoint path as given, or the installed weight `name` (see `co2 weights list`)."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.exists() or "/" in checkpoint or path.suffix:
            if not path.is_file():
                raise Co2Error(f"checkpoint not found: {path}")
            return path
        name = checkpoint
    from co2cli import weights

    return weights.resolve(name)


def load_model(classes: str = "thumos", checkpoint: str | None = None, device: str = "auto") -> Co2Localizer:
    """A localizer for `classes` ('thumos' or 'activitynet') with the given or installed CO2-Net checkpoint."""
    dev = pick_device(device)
    if classes == "thumos":
        path = resolve_checkpoint(checkpoint, "co2-thumos")
        model = load_co2net(path, dev)
        names = class_lists.thumos14()
        if model.n_class != len(names):
            raise Co2Error(f"{path} has {model.n_class} classes, THUMOS14 has {len(names)}; "
                           "use --classes activitynet for an ActivityNet checkpoint")
        return Co2Localizer(model, names, f"CO2-Net ({path.name}, THUMOS14)")
    raise Co2Error(f"--classes {classes} is not available yet")
