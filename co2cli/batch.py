"""The resumable batch runner behind `co2 extract-features`: one output pair per input, finished ones skipped.

Each input is isolated (a bad file fails alone), each output is written under a temporary name then renamed, and a
rerun after a kill resumes with the unfinished inputs. The caller chooses the output names (unique in the batch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from co2cli.errors import Co2Error
from co2cli.extract import FeatureExtractor, Progress
from co2cli.features import is_complete, save
from co2cli.fsio import remove_partials


@dataclass
class BatchItem:
    """The outcome for one input of a batch: status is 'done', 'skipped' or 'failed'."""

    path: Path
    name: str
    """Output stem: `<name>.npy` / `<name>.json` in the output folder."""
    status: str
    snippets: int = 0
    seconds: float = 0.0
    frames: int = 0
    """25 fps frames processed (0 when skipped or failed)."""
    duration_s: float = 0.0
    message: str = ""


@dataclass
class BatchEvents:
    """Callbacks a front end uses to show progress (all optional)."""

    on_start: Callable[[Path, str], None] | None = None
    on_progress: Progress | None = None
    on_end: Callable[[BatchItem], None] | None = None


def run_batch(inputs: Sequence[tuple[Path, str]], out_dir: Path, extractor: FeatureExtractor,
              overwrite: bool = False, events: BatchEvents = BatchEvents()) -> list[BatchItem]:
    """Extract every (video, output name) into `out_dir`; finished outputs are skipped unless `overwrite`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(out_dir)
    items: list[BatchItem] = []
    for path, name in inputs:
        started = time.perf_counter()
        if not overwrite and is_complete(out_dir, name, extractor.streams):
            item = BatchItem(path, name, "skipped", message="already extracted")
        else:
            try:
                if events.on_start:
                    events.on_start(path, name)
                extracted = extractor.extract(path, events.on_progress)
                save(out_dir, name, extracted.features, extracted.recipe)
                item = BatchItem(path, name, "done", int(extracted.features.shape[0]),
                                 frames=int(extracted.recipe.get("frame_count") or 0),
                                 duration_s=float(extracted.recipe.get("duration_s") or 0.0))
            except Co2Error as exc:
                item = BatchItem(path, name, "failed", message=str(exc))
        item.seconds = time.perf_counter() - started
        items.append(item)
        if events.on_end:
            events.on_end(item)
    return items


def result_names(paths: Sequence[Path]) -> list[str]:
    """A name per input, unique in the batch wherever the inputs allow it: file stems when those differ, else
    each path relative to the inputs' common folder without its extension (`class1/clip1`). Two inputs that
    still share a name (a.mp4 and a.mkv in one folder) keep it; the caller reports the clash."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    return [r.relative_to(common).with_suffix("").as_posix() for r in resolved]
