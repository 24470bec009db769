"""Reading and writing learner state without pickle: arrays as safetensors, the rest as JSON.

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> save_arrays(d / "a.safetensors", {"w": np.arange(3, dtype=np.float32)})
>>> load_arrays(d / "a.safetensors")["w"].tolist()
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

__all__ = ["load_arrays", "load_json", "rng_from_json", "rng_to_json", "save_arrays", "save_json"]


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays (contiguous copies) as one safetensors file."""
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    return dict(load_file(str(path)))


def save_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True), encoding="utf-8")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def rng_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy Generator's bit-generator state as JSON (PCG64's state is plain ints)."""
    state: dict[str, Any] = _stringify(rng.bit_generator.state)
    return state


def rng_from_json(data: dict[str, Any]) -> np.random.Generator:
    state = _destringify(data)
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _stringify(value: Any) -> Any:
    # JSON loses precision on 128-bit ints: keep them as strings.
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return {"__int__": str(value)}
    return value


def _destringify(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__int__"}:
            return int(value["__int__"])
        return {k: _destringify(v) for k, v in value.items()}
    return value
