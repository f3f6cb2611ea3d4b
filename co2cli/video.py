"""Decode, resample to 25 fps, resize and crop video frames (stage 1 of the pipeline)."""

from __future__ import annotations

FPS = 25
"""Frames per second every video is resampled to before flow and I3D."""

SNIPPET = 16
"""Frames per I3D snippet; one snippet lasts SNIPPET / FPS = 0.64 s."""

SNIPPET_SECONDS = SNIPPET / FPS
