"""Data files (csv, npz) and atomic checkpoints of ``sparseadv.io``."""
import os

import numpy as np
import pytest

from sparseadv import io
from sparseadv.errors import CheckpointError, DataFileError, InputError


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_csv_without_header(tmp_path):
    p = _write(tmp_path / "d.csv", "3,4,1\n0,2,-1\n\n1,0,1\n")
    X, y = io.load_data_file(p)
    np.testing.assert_allclose(X, [[0.6, 0.8], [0, 1], [1, 0]])
    np.testing.assert_array_equal(y, [1, -1, 1])
    assert X.flags.c_contiguous and X.dtype == np.float64


def test_csv_with_header_and_no_normalize(tmp_path):
    p = _write(tmp_path / "d.csv", "x1, x2, label\n3,4,0.5\n1,1,-2.5\n")
    X, y = io.load_data_file(p, normalize=False)
    np.testing.assert_array_equal(X, [[3, 4], [1, 1]])
    np.testing.assert_array_equal(y, [0.5, -2.5])   # real labels are allowed


def test_npz(tmp_path):
    p = str(tmp_path / "d.npz")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3))
    np.savez(p, X=X, y=np.array([1, -1, 1, 1, -1]), extra=np.zeros(2))
    X2, y2 = io.load_data_file(p)
    np.testing.assert_allclose(np.linalg.norm(X2, axis=1), 1.0)
    np.testing.assert_allclose(X2, X / np.linalg.norm(X, axis=1, keepdims=True))
    assert y2.dtype == np.float64


BAD_CSV = {
    "empty": ("", "empty"),
    "blank_lines": ("\n\n", "empty"),
    "header_only": ("a,b,label\n", "zero data rows"),
    "ragged_missing": ("1,2,1\n3,1\n", "line 2: 2 columns, expected 3"),
    "ragged_extra": ("1,2,1\n3,1,1,7\n", "line 2: 4 columns, expected 3"),
    "non_numeric": ("1,2,1\n3,abc,1\n", "line 2, column 2: non-numeric cell 'abc'"),
    "nan": ("1,2,1\n3,nan,1\n", "non-finite value"),
    "inf_label": ("1,2,1\n3,1,inf\n", "non-finite label"),
    "one_column": ("1\n2\n", "at least 2 columns"),
    "zero_row": ("0,0,1\n1,2,1\n", "all zeros"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CSV))
def test_bad_csv(tmp_path, kind):
    text, words = BAD_CSV[kind]
    p = _write(tmp_path / "bad.csv", text)
    with pytest.raises(io.DataError, match=words) as err:
        io.load_data_file(p)
    assert "\n" not in str(err.value)


def _npz(tmp_path, **arrays):
    p = str(tmp_path / "bad.npz")
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("kind", ["missing_y", "wrong_length", "nan", "X_1d", "strings",
                                  "not_zip", "missing_file", "bad_ext", "zero_rows"])
def test_bad_npz(tmp_path, kind):
    X = np.ones((4, 3))
    y = np.ones(4)
    if kind == "missing_y":
        p, words = _npz(tmp_path, X=X), "missing array 'y'"
    elif kind == "wrong_length":
        p, words = _npz(tmp_path, X=X, y=np.ones(3)), "labels of wrong length"
    elif kind == "nan":
        X[2, 1] = np.nan
        p, words = _npz(tmp_path, X=X, y=y), "non-finite value.*row 3, column 2"
    elif kind == "X_1d":
        p, words = _npz(tmp_path, X=np.ones(4), y=y), "X must be 2-D"
    elif kind == "strings":
        p, words = _npz(tmp_path, X=np.array([["a", "b"]]), y=np.ones(1)), "real numbers"
    elif kind == "not_zip":
        p, words = _write(tmp_path / "bad.npz", "hello"), "not a readable .npz"
    elif kind == "missing_file":
        p, words = str(tmp_path / "nope.csv"), "not found"
    elif kind == "bad_ext":
        p, words = _write(tmp_path / "data.txt", "1,2"), "unknown data file type"
    else:
        p, words = _npz(tmp_path, X=np.ones((0, 3)), y=np.ones(0)), "zero rows"
    with pytest.raises(io.DataError, match=words) as err:
        io.load_data_file(p)
    assert "\n" not in str(err.value)


def _state(W, it):
    return dict(W=W, a=np.ones(W.shape[0]), b=0.5, iteration=it, lr=0.1,
                attack={"eps": 0.1}, rng_state=None, data={"source": "sphere"},
                config={"m": W.shape[0]}, history={"loss": np.arange(it, dtype=float)})


def test_checkpoint_roundtrip(tmp_path):
    W = np.random.default_rng(0).standard_normal((8, 3))
    io.save_checkpoint(tmp_path, **_state(W, 3))
    ck = io.load_checkpoint(tmp_path)
    assert ck["W"].tobytes() == W.tobytes()
    assert ck["iteration"] == 3 and ck["lr"] == 0.1 and ck["b"] == 0.5
    assert ck["attack"] == {"eps": 0.1} and ck["rng_state"] is None
    np.testing.assert_array_equal(ck["history"]["loss"], [0, 1, 2])


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    W1 = np.zeros((8, 3))
    io.save_checkpoint(tmp_path, **_state(W1, 1))
    before = (tmp_path / io.CHECKPOINT_NAME).read_bytes()

    def crashing_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip file")   # partial bytes, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(io.np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(tmp_path, **_state(np.ones((8, 3)), 2))
    monkeypatch.undo()
    assert (tmp_path / io.CHECKPOINT_NAME).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [io.CHECKPOINT_NAME]   # no temp file left behind
    assert io.load_checkpoint(tmp_path)["iteration"] == 1


def test_crash_before_replace(tmp_path, monkeypatch):
    io.save_checkpoint(tmp_path, **_state(np.zeros((4, 2)), 1))

    def no_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", no_replace)
    with pytest.raises(OSError):
        io.save_checkpoint(tmp_path, **_state(np.ones((4, 2)), 2))
    monkeypatch.undo()
    assert io.load_checkpoint(tmp_path)["iteration"] == 1
    assert sorted(os.listdir(tmp_path)) == [io.CHECKPOINT_NAME]


def test_bad_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        io.load_checkpoint(tmp_path)
    (tmp_path / io.CHECKPOINT_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        io.load_checkpoint(tmp_path)
