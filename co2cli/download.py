"""HTTP downloads of weight files: resumable (HTTP Range), progress-reporting, checked by git blob id.

The partial file lives outside the weight store (`<home>/downloads/<file>.part`), so an interrupted download is
never "installed"; the next run resumes it with a Range request, or restarts from zero when the server ignores the
range or the partial is stale. Every network failure becomes one Co2Error line.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from co2cli.errors import Co2Error
from co2cli.version import __version__

CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60.0
ProgressFn = Callable[[int, "int | None"], None]  # (bytes done, bytes total or None when unknown)


def git_blob_id(path: Path) -> str:
    """Git's object id of a file's content: sha1 of `blob <size>\\0` followed by the bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _open(url: str, have_bytes: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"co2cli/{__version__}"}
    if have_bytes:
        headers["Range"] = f"bytes={have_bytes}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise _HttpStatus(exc.code, str(exc.reason)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "reason", None) or exc
        raise Co2Error(f"could not download {url}: {why}") from None


class _HttpStatus(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"HTTP {code} {reason}")
        self.code = code


def _resume_offset(response: http.client.HTTPResponse, have_bytes: int) -> int:
    """Where the body starts in the file: `have_bytes` for a matching 206, else 0 (server ignored the range)."""
    if response.status != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    start = content_range.removeprefix("bytes ").split("-")[0]
    return have_bytes if start.isdigit() and int(start) == have_bytes else -1


def _stream(response: http.client.HTTPResponse, part: Path, start: int, url: str,
            progress: ProgressFn | None) -> None:
    length = response.headers.get("Content-Length")
    total = start + int(length) if length and length.isdigit() else None
    done = start
    try:
        with open(part, "ab" if start else "wb") as fh:
            while chunk := response.read(CHUNK_BYTES):
                fh.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except (http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)) and exc.filename:
            raise  # a local disk error, reported by the CLI as such
        done = part.stat().st_size if part.exists() else done
        raise Co2Error(f"download of {url} was interrupted after {done} of {total or '?'} bytes "
                       f"({type(exc).__name__}); run the same command again to resume") from None
    if total is not None and done < total:
        raise Co2Error(f"download of {url} was interrupted after {done} of {total} bytes (connection closed); "
                       "run the same command again to resume")


def fetch(url: str, part: Path, progress: ProgressFn | None = None) -> Path:
    """Download `url` into `part`, resuming from the bytes already there; returns `part` when complete.

    A stale partial (server answers 416, or a 206 for another offset) is discarded and the download restarts.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(2):
        have = part.stat().st_size if part.exists() else 0
        try:
            response = _open(url, have)
        except _HttpStatus as exc:
            if exc.code == 416 and have:  # our partial is not a prefix of this file: start over
                part.unlink()
                continue
            raise Co2Error(f"could not download {url}: {exc}") from None
        with response:
            start = _resume_offset(response, have)
            if start < 0:
                part.unlink()
                continue
            _stream(response, part, start, url, progress)
        return part
    raise Co2Error(f"could not download {url}: the server does not serve a consistent file; try again later")
