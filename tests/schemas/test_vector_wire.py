"""The binary vector frame: round trips, validation, refusals, and its size against JSON."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import numpy as np
import pytest

from schemas.vector_wire import (
    MAGIC,
    VectorEncoding,
    decode_vector,
    encode_frame,
    encode_json,
    read_vector,
)
from schemas.vectors import UserVector

DOC = {
    "user_id": "user-7",
    "dim": 385,
    "model_version": "llm:all-MiniLM-L6-v2:a12",
    "produced_at": "2026-11-25T12:00:00+00:00",
    "events_seen": 31,
    "consumed": [f"item-{k}" for k in range(20)],
}


def _numbers(seed: int = 0) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    vector = rng.normal(size=385).astype(np.float32)
    vector /= np.linalg.norm(vector)
    indices = rng.integers(0, 2**31, size=50)
    return vector, (indices, rng.random(50).astype(np.float32))


@pytest.mark.parametrize("encoding", [VectorEncoding.F32, VectorEncoding.F16])
def test_a_frame_decodes_to_a_valid_document_with_the_numbers(encoding: VectorEncoding) -> None:
    vector, (indices, values) = _numbers()
    frame = encode_frame(DOC, vector, (indices, values), encoding)
    assert frame[:4] == MAGIC
    user = UserVector.model_validate(decode_vector(frame))
    assert user.user_id == "user-7"
    assert user.consumed == DOC["consumed"]
    assert user.sparse is not None
    assert user.sparse.indices == indices.tolist()
    tolerance = 0 if encoding is VectorEncoding.F32 else 1e-3
    np.testing.assert_allclose(user.vector, vector, atol=tolerance)
    np.testing.assert_allclose(user.sparse.values, values, atol=tolerance)
    wire = read_vector(frame)
    assert wire.vector.dtype == np.float32
    assert "vector" not in wire.document


def test_json_records_read_the_same_way() -> None:
    vector, (indices, values) = _numbers()
    doc = {
        **DOC,
        "vector": vector.tolist(),
        "sparse": {"indices": indices.tolist(), "values": values.tolist()},
    }
    wire = read_vector(json.dumps(doc).encode())
    np.testing.assert_array_equal(wire.vector, vector)
    np.testing.assert_array_equal(wire.indices, indices)
    assert wire.document["consumed"] == DOC["consumed"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: f[:-1], "length does not match"),  # truncated
        (lambda f: f + b"\0", "length does not match"),  # trailing bytes
        (lambda f: f[:4] + b"\x07" + f[5:], "unknown float dtype"),
        (lambda f: b"XSV1" + f[4:], "not a lorastream vector record"),  # wrong magic
        (lambda f: f[:10], "not a lorastream vector record"),  # shorter than the header
    ],
    ids=["truncated", "trailing", "dtype", "magic", "short"],
)
def test_a_damaged_frame_is_refused(damage: Callable[[bytes], bytes], reason: str) -> None:
    vector, sparse = _numbers()
    frame = encode_frame(DOC, vector, sparse, VectorEncoding.F16)
    with pytest.raises(ValueError, match=reason):
        read_vector(damage(frame))


def test_the_header_is_as_documented() -> None:
    vector, sparse = _numbers()
    frame = encode_frame(DOC, vector, sparse, VectorEncoding.F32)
    magic, dtype, dim, nnz, n = struct.unpack_from("<4sB3xIII", frame)
    assert (magic, dtype, dim, nnz) == (b"LSV1", 1, 385, 50)
    assert json.loads(frame[20 : 20 + n]) == DOC


def test_float16_frames_take_under_a_third_of_the_json_bytes() -> None:
    vector, (indices, values) = _numbers()
    doc = {**DOC, "consumed": None}
    frame = encode_frame(doc, vector, (indices, values), VectorEncoding.F16)
    as_json = encode_json(doc, vector, (indices, values))
    assert len(frame) < 0.3 * len(as_json), (len(frame), len(as_json))
