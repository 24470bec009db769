"""How user and item vectors are written to their topics: JSON, or a compact binary frame.

``topics.vector_encoding`` picks one for a worker; readers need not know which, since
:func:`decode_vector` tells them apart by the first byte (``{`` or the magic ``L``).

JSON is the :class:`~schemas.vectors.UserVector` / :class:`~schemas.vectors.ItemVector`
document (:func:`encode_json`), its numbers float32 in their shortest form that reads back
to the same float32, so a reader's float32 ranks exactly as the learner did. The binary
frame carries the same document without its numbers, then the numbers packed (all
integers little-endian)::

    offset  bytes        field
    0       4            magic b"LSV1"
    4       1            dtype of the floats: 1 = float32, 2 = float16 (IEEE 754, little-endian)
    5       3            reserved, zero
    8       4            dim: dense entries (uint32)
    12      4            nnz: sparse entries (uint32)
    16      4            n: bytes of the document (uint32)
    20      n            the document as UTF-8 JSON, without "vector" and "sparse"
    20+n    dim × size   the dense vector
    ...     nnz × 4      sparse indices: item keys (uint32)
    ...     nnz × size   sparse values

float16 keeps about three significant digits: enough to rank by, and half the bytes of
float32. A frame round-trips to the same document a JSON record gives (floats rounded
to the frame's precision):

>>> import numpy as np
>>> frame = encode_frame({"item_id": "sku-7", "dim": 2}, np.array([0.6, 0.8]),
...                      (np.array([5]), np.array([1.0])), VectorEncoding.F16)
>>> len(frame), frame[:4]
(57, b'LSV1')
>>> doc = decode_vector(frame)
>>> doc["vector"], doc["sparse"]
([0.60009765625, 0.7998046875], {'indices': [5], 'values': [1.0]})
>>> encode_json({"item_id": "sku-7", "dim": 2}, np.array([0.6, 1 / 3]), None)
b'{"item_id":"sku-7","dim":2,"vector":[0.6,0.33333334]}'
>>> decode_vector(b'{"item_id": "sku-7", "vector": [0.6, 0.8]}')["vector"]
[0.6, 0.8]
"""

from __future__ import annotations

import json
import struct
from enum import StrEnum
from typing import Any

import numpy as np
import orjson

__all__ = [
    "MAGIC",
    "VectorEncoding",
    "WireVector",
    "decode_vector",
    "encode_frame",
    "encode_json",
    "read_vector",
]

MAGIC = b"LSV1"
_HEAD = struct.Struct("<4sB3xIII")  # magic, dtype, reserved, dim, nnz, document bytes
_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 2: np.dtype("<f2")}


class VectorEncoding(StrEnum):
    """How vector records are encoded on the topics."""

    JSON = "json"
    F32 = "binary-f32"
    F16 = "binary-f16"

    @property
    def code(self) -> int:
        return {VectorEncoding.F32: 1, VectorEncoding.F16: 2}[self]

    @property
    def dtype(self) -> np.dtype[Any]:
        return _DTYPES[self.code]


def encode_json(
    document: dict[str, Any],
    vector: np.ndarray,
    sparse: tuple[np.ndarray, np.ndarray] | None,
) -> bytes:
    """One JSON record: ``document`` with ``vector`` and ``sparse`` added as float32 lists.
    orjson writes the arrays without a Python float per entry (10-20× json.dumps here)."""
    doc = {**document, "vector": np.ascontiguousarray(vector, dtype=np.float32)}
    if sparse is not None:
        indices, values = sparse
        doc["sparse"] = {
            "indices": np.ascontiguousarray(indices, dtype=np.int64),
            "values": np.ascontiguousarray(values, dtype=np.float32),
        }
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_frame(
    document: dict[str, Any],
    vector: np.ndarray,
    sparse: tuple[np.ndarray, np.ndarray] | None,
    encoding: VectorEncoding,
) -> bytes:
    """One binary record: ``document`` (without numbers), the dense and sparse vectors."""
    dtype = encoding.dtype
    indices, values = sparse if sparse is not None else (np.zeros(0), np.zeros(0))
    meta = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    head = _HEAD.pack(MAGIC, encoding.code, len(vector), len(indices), len(meta))
    return b"".join(
        (
            head,
            meta,
            np.asarray(vector, dtype=dtype).tobytes(),
            np.asarray(indices, dtype="<u4").tobytes(),
            np.asarray(values, dtype=dtype).tobytes(),
        )
    )


class WireVector:
    """A decoded vector record: its document and its numbers as arrays (float32)."""

    __slots__ = ("document", "indices", "values", "vector")

    def __init__(
        self,
        document: dict[str, Any],
        vector: np.ndarray,
        indices: np.ndarray,
        values: np.ndarray,
    ) -> None:
        self.document, self.vector, self.indices, self.values = document, vector, indices, values


def read_vector(value: bytes) -> WireVector:
    """Decode a JSON or binary vector record; raises ValueError on anything else."""
    if value[:1] == b"{":
        # json, not orjson: orjson refuses NaN and huge ints that a foreign writer may send
        doc = json.loads(value)
        sparse = doc.pop("sparse", None) or {"indices": [], "values": []}
        return WireVector(
            doc,
            np.asarray(doc.pop("vector"), dtype=np.float32),
            np.asarray(sparse["indices"], dtype=np.int64),
            np.asarray(sparse["values"], dtype=np.float32),
        )
    if len(value) < _HEAD.size or value[:4] != MAGIC:
        raise ValueError("not a lorastream vector record (neither JSON nor an LSV1 frame)")
    _, code, dim, nnz, n = _HEAD.unpack_from(value)
    dtype = _DTYPES.get(code)
    if dtype is None:
        raise ValueError(f"unknown float dtype code {code} in an LSV1 frame")
    at = _HEAD.size + n
    if len(value) != at + dim * dtype.itemsize + nnz * (4 + dtype.itemsize):
        raise ValueError("an LSV1 frame's length does not match its header")
    doc = json.loads(value[_HEAD.size : at])
    vector = np.frombuffer(value, dtype, dim, at)
    indices = np.frombuffer(value, "<u4", nnz, at + dim * dtype.itemsize)
    values = np.frombuffer(value, dtype, nnz, at + dim * dtype.itemsize + 4 * nnz)
    return WireVector(
        doc, vector.astype(np.float32), indices.astype(np.int64), values.astype(np.float32)
    )


def decode_vector(value: bytes) -> dict[str, Any]:
    """The record as the JSON document (``vector`` and ``sparse`` as lists), whatever its
    encoding: what :class:`~schemas.vectors.UserVector` / ``ItemVector`` validate."""
    if value[:1] == b"{":
        return dict(json.loads(value))
    wire = read_vector(value)
    doc = dict(wire.document)
    doc["vector"] = wire.vector.tolist()
    if len(wire.indices):
        doc["sparse"] = {"indices": wire.indices.tolist(), "values": wire.values.tolist()}
    return doc
