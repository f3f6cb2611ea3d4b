"""Input gathering and naming for batch commands: files as given, folders searched, globs expanded, names read
from a list or stdin; every input gets a result name unique in the batch. Checked before any model loads."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from co2cli.errors import Co2Error, UsageError

NO_VIDEOS = "no input videos found: give video files, folders or globs (or - to read names from stdin)"


def read_list(source: str) -> list[str]:
    """Input names from a list file (or stdin for '-'), one per line; blank lines and '#' comments skipped."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"input list not found: {path}")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise UsageError(f"input list {path} is not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def gather_inputs(items: Sequence[str], from_file: str | None, suffixes: Iterable[str]) -> list[Path]:
    """Files as given, folders searched recursively for `suffixes`, globs expanded, '-' = names on stdin;
    order kept, no repeats. A name that matches nothing is kept so it fails with its own error line."""
    import glob

    names = [n for item in items for n in (read_list("-") if item == "-" else [item])]
    if from_file:
        names += read_list(from_file)
    wanted = {s.lower() for s in suffixes}
    found: list[Path] = []
    for item in names:
        path = Path(item).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                            and not p.name.startswith("."))
            found.extend(inside or [path])  # an empty folder is reported as such
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            found.extend(p for p in matches if p.is_file())
            if not matches:
                found.append(path)  # reported as "not found" like any missing input
        else:
            found.append(path)
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def split_missing(paths: Sequence[Path], suffixes: Iterable[str] = ()) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(existing videos and feature files, [(path, message)] for the rest), checked before any model is loaded:
    a file that is not .npy must open as a video (container metadata only, no frame decoded)."""
    from co2cli.video import video_info

    suffixes = {s.lower() for s in suffixes}
    ok, bad = [], []
    for path in paths:
        if path.is_file() and path.suffix.lower() == ".npy" and ".npy" in suffixes:
            ok.append(path)
        elif path.is_file():
            try:
                video_info(path)
            except Co2Error as exc:
                bad.append((path, str(exc)))
            else:
                ok.append(path)
        elif path.is_dir():
            bad.append((path, f"{path}: the folder holds no videos (nothing with a video"
                              f"{' or .npy' if '.npy' in suffixes else ''} extension, searched recursively)"))
        else:
            bad.append((path, f"{path}: not found (no such file or folder)"))
    return ok, bad


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


def named_inputs(paths: Sequence[Path]) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(path, unique result name) pairs, and failures for inputs whose name another input already has."""
    pairs, clashes = [], []
    owner: dict[str, Path] = {}
    for path, name in zip(paths, result_names(paths)):
        if name in owner:
            clashes.append((path, f"{path}: its result name {name!r} is already used by {owner[name]}; rename one "
                                  "of them (results are never overwritten)"))
        else:
            owner[name] = path
            pairs.append((path, name))
    return pairs, clashes


def no_inputs_left(failures: Sequence[tuple[Path, str]]) -> Co2Error:
    """The error when no input can be processed: a single failure is the error line itself; several are one
    line each (details), then the summary error."""
    if len(failures) == 1:
        return Co2Error(failures[0][1])
    return Co2Error(f"none of the {len(failures)} inputs can be read", [message for _, message in failures])


def prepare_inputs(inputs: Sequence[str] | None, from_file: str | None, suffixes: Iterable[str], empty: str,
                   out_dir: Path | None = None) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Gather, check and name the inputs before any model loads: ((path, name) to process, failures so far).
    An empty input set is the error `empty` (a usage error when nothing at all was given); an `out_dir` that
    cannot be written is an error too."""
    if not inputs and not from_file:
        raise UsageError(f"{empty} (see --help)")
    paths = gather_inputs(inputs or [], from_file, suffixes)
    if not paths:
        raise Co2Error(empty)
    if out_dir is not None:
        check_writable(out_dir, "dir")
    existing, failures = split_missing(paths, suffixes)
    named, clashes = named_inputs(existing)
    failures += clashes
    if not named:
        raise no_inputs_left(failures)
    return named, failures


def check_writable(target: Path, kind: str = "file") -> None:
    """Fail before any heavy work when `target` cannot be written (wrong kind, read-only folder, a file in the
    way of a folder); missing folders are fine (they are created), their nearest existing parent must be writable."""
    if kind == "file" and target.is_dir():
        raise Co2Error(f"{target}: is a folder; give a file name to write the results to")
    if kind == "file" and (target.is_symlink() or (target.exists() and not target.is_file())):
        if target.exists() and not os.access(target, os.W_OK):  # a pipe or device (/dev/stdout): written in place
            raise Co2Error(f"{target}: permission denied (cannot write there); choose another output location")
        return
    if kind == "dir" and target.exists() and not target.is_dir():
        raise Co2Error(f"{target}: exists and is not a folder; give a folder to write into")
    folder = target.parent if kind == "file" else target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise Co2Error(f"{folder}: is a file, not a folder; choose another output location")
    read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    if read_only or not os.access(folder, os.W_OK | os.X_OK):
        why = "read-only file system" if read_only else "permission denied"
        raise Co2Error(f"{folder}: cannot write there ({why}); choose another output location")
