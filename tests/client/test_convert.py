"""The client's .npz files, chunks and Tensor messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client import convert


def test_npz_without_labels_is_refused_where_labels_are_needed(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 784), np.float32))
    with pytest.raises(KeyError, match="'y'"):
        convert.load_npz(tmp_path / "x.npz")
    x, y = convert.load_npz(tmp_path / "x.npz", need_labels=False)
    assert x.shape == (2, 784) and y is None


def test_chunks_stay_under_the_byte_limit() -> None:
    parts = list(convert.chunks(10, row_bytes=100, limit=350))
    assert [p.stop - p.start for p in parts] == [3, 3, 3, 1]


def test_tensor_message_round_trips() -> None:
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert np.array_equal(convert.array(convert.tensor(a)), a)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_a_corrupt_npz_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"not a readable \.npz file"):
        convert.load_npz(path)
