"""co2cli: find when actions happen in untrimmed videos with CO2-Net.

Pipeline, one module per stage: video -> flow -> i3d -> extract -> features -> co2net -> localize -> writers
(docs/architecture.md). `import co2cli` is light: torch is imported only when a model is loaded.

    import co2cli
    model = co2cli.load_model(classes="kinetics")   # or "thumos" / "activitynet" with CO2-Net weights
    segments = model.localize("video.mp4")           # list[Segment], seconds on the video's timeline
    analysis = model.analyze("video.mp4")            # segments plus the curves behind them
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from co2cli.errors import Co2Error
from co2cli.version import __version__

if TYPE_CHECKING:
    from co2cli.localize import Segment
    from co2cli.pipeline import Analysis, Localizer

__all__ = ["Analysis", "Co2Error", "Localizer", "Segment", "__version__", "load_model"]


def load_model(classes: str | None = None, checkpoint: str | None = None, device: str = "auto",
               **options: Any) -> "Localizer":
    """A localizer like `co2 localize --classes ... --checkpoint ... --device ...` (see pipeline.load_model)."""
    from co2cli.pipeline import load_model as _load

    return _load(classes, checkpoint=checkpoint, device=device, **options)


def __getattr__(name: str) -> Any:  # lazy: `import co2cli` stays light (no torch until needed)
    if name == "Segment":
        from co2cli.localize import Segment

        return Segment
    if name in ("Localizer", "Analysis"):
        from co2cli import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
