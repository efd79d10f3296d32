"""A seeded randomized probe of sparseadv.io and the command line, as a careless or hostile user
would try them (issue 15): random data files (CSV and .npz, valid and damaged), random
tamperings of a real checkpoint, random command lines.

The invariants: a data file either loads as finite float64 data with unit rows, equal to the
original where the mutation keeps the meaning (BOM, CRLF, quotes, compression), or raises
DataFileError; a checkpoint either loads and resumes consistently or raises CheckpointError
(one line, exit 2 at the command line); a command line exits 0 with finite weights, or 2 with
one line. Any other exception, or a crash, fails the test."""
import contextlib
import io as _io
import json
import os
import zipfile

import numpy as np
import pytest

from sparseadv import cli, io
from sparseadv.errors import CheckpointError, DataFileError, SparseAdvError

SEED = int(os.environ.get("SPARSEADV_PROBE_SEED", 20261201))  # another seed: a new probe


def _dataset(rng):
    n, d = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    X = rng.standard_normal((n, d)) * 10.0 ** rng.integers(-3, 4)
    y = rng.choice([-1.0, 1.0], n)
    return X, y


def _csv_text(X, y, fmt=repr, sep=","):
    return "\n".join(sep.join(fmt(float(v)) for v in list(x) + [t]) for x, t in zip(X, y)) + "\n"


# Each mutation returns (bytes, expect): "same" must load to the original data, "error" must be
# refused, "any" may go either way (but only as data or DataFileError).
def _csv_mutations(rng, X, y):
    text = _csv_text(X, y)
    lines = text.splitlines()
    n, ncol = len(lines), X.shape[1] + 1
    i = int(rng.integers(n))
    j = int(rng.integers(ncol))
    cells = [ln.split(",") for ln in lines]
    def with_cell(value, row=i):
        c = [list(r) for r in cells]
        c[row][j] = value
        return ("\n".join(",".join(r) for r in c) + "\n").encode()
    return {
        "plain": (text.encode(), "same"),
        "bom": (b"\xef\xbb\xbf" + text.encode(), "same"),
        "crlf": (text.replace("\n", "\r\n").encode(), "same"),
        "bom_header": (("\ufeff" + ",".join(f"f{k}" for k in range(ncol)) + "\n" + text)
                       .encode("utf-8"), "same"),
        "quoted": (_csv_text(X, y, fmt=lambda v: f'"{v!r}"').encode(), "same"),
        "blank_lines_spaces": (("\n \n" + text.replace(",", " , ") + "\n\n").encode(), "same"),
        "truncated": (text.encode()[:int(rng.integers(len(text)))], "any"),
        "dropped_cell": (("\n".join(",".join(r[:-1] if k == i else r)
                                    for k, r in enumerate(cells)) + "\n").encode(), "any"),
        "bad_cell": (with_cell(str(rng.choice(["nan", "inf", "-inf", "", "abc", "1e999",
                                                "0x10", "1,5"]))), "any"),
        "bad_cell_late": (with_cell("oops", row=n - 1) if n > 1 else b"1,2\n1,oops\n",
                          "error"),
        "garbage": (rng.bytes(int(rng.integers(1, 200))), "any"),
        "latin1": (text.encode()[:1] + b"\xff\xe9" + text.encode()[1:], "error"),
        "nul": (text.encode().replace(b",", b"\0,", 1), "any"),
        "extreme": (with_cell(str(rng.choice(["1e308", "-1.7e308", "1e-320", "5e-324"]))),
                    "any"),
        "zero_row": (("0," * X.shape[1] + "1\n" + text).encode(), "zero_row"),
        "long_number": (with_cell("1" * int(rng.integers(300, 5000))), "any"),
        "empty": (b"", "error"),
    }


def _npz_bytes(write=np.savez, **arrays):
    buf = _io.BytesIO()
    write(buf, **arrays)
    return buf.getvalue()


def _raw_npz(members):
    """A zip of raw .npy members: name -> bytes."""
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy_header(shape, descr="<f8", fortran=False, body=b"\0" * 64):
    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran,
                                               "shape": shape})
    return buf.getvalue() + body


def _npz_mutations(rng, X, y):
    good = _npz_bytes(X=X, y=y)
    flips = bytearray(good)
    for k in rng.integers(0, len(flips), int(rng.integers(1, 8))):
        flips[k] = int(rng.integers(256))
    ybuf = _io.BytesIO()
    np.save(ybuf, y)
    xbuf = _io.BytesIO()
    np.save(xbuf, X)
    huge = tuple(int(s) for s in rng.choice([2 ** 33, 2 ** 40, 10 ** 12], size=2))
    return {
        "plain": (good, "same"),
        "compressed": (_npz_bytes(np.savez_compressed, X=X, y=y, extra=np.zeros(3)), "same"),
        "int_X": (_npz_bytes(X=np.round(X * 100).astype(np.int64) + 1, y=y), "any"),
        "truncated": (good[:int(rng.integers(len(good)))], "any"),
        "truncated_compressed": (_npz_bytes(np.savez_compressed, X=X, y=y)[:-int(
            rng.integers(1, 60))], "any"),
        "flipped_bytes": (bytes(flips), "any"),
        "huge_header": (_raw_npz({"X.npy": _npy_header(huge), "y.npy": ybuf.getvalue()}),
                        "error"),
        "negative_shape": (_raw_npz({"X.npy": _npy_header((-4, 2)), "y.npy": ybuf.getvalue()}),
                           "error"),
        "short_body": (_raw_npz({"X.npy": _npy_header(X.shape, body=b"\0" * 3),
                                 "y.npy": ybuf.getvalue()}), "error"),
        "garbage_member": (_raw_npz({"X.npy": rng.bytes(50), "y.npy": ybuf.getvalue()}),
                           "error"),
        "object_X": (_npz_bytes(X=np.array([[1, "a"]], dtype=object), y=np.ones(1)), "error"),
        "X_1d": (_npz_bytes(X=X.ravel(), y=y), "error"),
        "X_3d": (_npz_bytes(X=X[None], y=y), "error"),
        "complex_X": (_npz_bytes(X=X + 1j, y=y), "error"),
        "string_y": (_npz_bytes(X=X, y=y.astype(str)), "error"),
        "no_X": (_npz_bytes(y=y), "error"),
        "y_too_long": (_npz_bytes(X=X, y=np.append(y, 1.0)), "error"),
        "nan": (_npz_bytes(X=np.where(rng.random(X.shape) < 0.5, np.nan, X), y=y), "any"),
        "npy_not_npz": (xbuf.getvalue(), "error"),
        "garbage": (rng.bytes(int(rng.integers(1, 300))), "any"),
    }


def _check_loaded(X, y, X0, y0, expect, normalize):
    assert expect != "error", "a damaged file was accepted"
    assert X.dtype == np.float64 and y.dtype == np.float64 and X.flags.c_contiguous
    assert X.ndim == 2 and y.shape == (X.shape[0],) and X.shape[0] >= 1 and X.shape[1] >= 1
    assert np.isfinite(X).all() and np.isfinite(y).all()
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-13)
    if expect == "same":
        want = io.normalize_rows(X0) if normalize else X0
        np.testing.assert_allclose(X, want, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(y, y0)


@pytest.mark.parametrize("ext", ["csv", "npz"])
def test_probe_data_files(tmp_path, ext):
    rng = np.random.default_rng(SEED + (ext == "npz"))
    tried = {}
    for trial in range(12):
        X0, y0 = _dataset(rng)
        mutations = (_csv_mutations if ext == "csv" else _npz_mutations)(rng, X0, y0)
        for kind, (data, expect) in mutations.items():
            path = tmp_path / f"{trial}-{kind}.{ext}"
            path.write_bytes(data)
            normalize = bool(rng.integers(2))
            if expect == "zero_row":   # refused only when rows are scaled to unit norm
                expect = "error" if normalize else "any"
            try:
                X, y = io.load_data_file(path, normalize=normalize)
            except DataFileError as exc:
                assert "\n" not in str(exc) and str(path) in str(exc), (kind, exc)
                tried[kind, "refused"] = tried.get((kind, "refused"), 0) + 1
                assert expect != "same", (kind, exc)
                continue
            _check_loaded(X, y, X0, y0, expect, normalize)
            tried[kind, "loaded"] = tried.get((kind, "loaded"), 0) + 1
    # every mutation kind was exercised
    assert {k for k, _ in tried} == set(mutations)


# --------------------------------------------------------------------------- checkpoints

SMALL = ["--m", "16", "--n", "8", "--d", "3", "--no-progress"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "base"
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
        assert cli.main(["train", "--out", str(out), "--iterations", "3", "--random-start"]
                        + SMALL) == 0
    with np.load(out / io.CHECKPOINT_NAME) as z:
        raw = {k: z[k] for k in z.files}
    return out, raw


JUNK = [np.array("x"), np.ones((2, 2)), np.array(np.nan), np.array(-1), np.array(10 ** 18),
        np.ones(0), np.array([1, 2]), np.array(2.5), np.array(True), np.ones((16, 3, 1)),
        np.full(16, np.inf), np.array("{}"), np.array("null"), np.array("[1, 2]")]
CONFIG_VALUES = [None, -1, 0, 1, "x", True, [], {}, 2 ** 70, 1.5, "inf", "auto", "2", "tree",
                 "sphere", 1e300]


def _tamper(rng, raw):
    raw = dict(raw)
    kind = str(rng.choice(["drop_key", "junk_value", "config", "iteration", "history",
                           "rng_state", "bytes"]))
    if kind == "drop_key":
        raw.pop(str(rng.choice(sorted(raw))))
    elif kind == "junk_value":
        raw[str(rng.choice(sorted(raw)))] = JUNK[int(rng.integers(len(JUNK)))]
    elif kind == "config":
        cfg = json.loads(str(raw["config"]))
        key = str(rng.choice(sorted(cfg)))
        if rng.random() < 0.3:
            del cfg[key]
        else:
            cfg[key] = CONFIG_VALUES[int(rng.integers(len(CONFIG_VALUES)))]
        raw["config"] = np.array(json.dumps(cfg))
    elif kind == "iteration":
        raw["iteration"] = np.array(int(rng.integers(-5, 8)))
    elif kind == "history":
        key = str(rng.choice([k for k in raw if k.startswith("history_")]))
        raw[key] = raw[key][:int(rng.integers(0, 3))] if rng.random() < 0.5 else \
            np.append(raw[key], 1.0)
    elif kind == "rng_state":
        state = json.loads(str(raw["rng_state"]))
        state[str(rng.choice(sorted(state)))] = CONFIG_VALUES[int(rng.integers(len(CONFIG_VALUES)))]
        raw["rng_state"] = np.array(json.dumps(state))
    return kind, raw


def test_probe_tampered_checkpoints(tmp_path, base_run, capsys):
    base, raw0 = base_run
    rng = np.random.default_rng(SEED + 2)
    outcomes = {}
    for trial in range(40):
        kind, raw = _tamper(rng, raw0) if trial else ("none", dict(raw0))   # 0: the control
        out = tmp_path / f"c{trial}"
        out.mkdir()
        path = out / io.CHECKPOINT_NAME
        data = _npz_bytes(**raw)
        if kind == "bytes":
            data = bytearray(data)
            cut = int(rng.integers(len(data)))
            data = bytes(data[:cut]) if rng.random() < 0.5 else \
                bytes(data[:cut]) + rng.bytes(4) + bytes(data[cut + 4:])
        path.write_bytes(data)
        try:
            ck, cfg = cli._resume_config(cli.build_parser().parse_args(
                ["train", "--resume", str(out)]), {})
            loaded = True
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(out) in str(exc), (kind, exc)
            loaded = False
        # the command line: 0 with a consistent run, or 2 with one line; nothing else
        capsys.readouterr()
        code = cli.main(["train", "--resume", str(out), "--iterations", "5", "--no-progress"])
        err = capsys.readouterr().err
        outcomes[kind, code] = outcomes.get((kind, code), 0) + 1
        assert code in (0, 2), (kind, code, err)
        if code == 2:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("sparseadv: error:"), (kind, err)
        else:
            assert loaded, kind
            h = np.load(out / "history.npz")
            np.testing.assert_array_equal(h["iteration"], np.arange(1, 6))
            assert np.isfinite(np.load(out / "weights.npz")["W"]).all()
            assert io.load_checkpoint(out)["iteration"] == 5
    assert outcomes.get(("none", 0)) == 1 and any(code == 2 for _, code in outcomes)


# --------------------------------------------------------------------------- command lines

FLAGS = {
    "--m": ["0", "-1", "1", "16", "x", "1.5", "", str(2 ** 40), str(2 ** 63), "9" * 25],
    "--n": ["0", "1", "5", "x", str(2 ** 40), str(2 ** 63)],
    "--d": ["0", "1", "3", "x", str(2 ** 40)],
    "--steps": ["0", "-1", "1", "3", "x", "1.5"],
    "--iterations": ["0", "-1", "1", "2", "x"],
    "--eps": ["0", "0.1", "-0.1", "nan", "inf", "1e150", "1e151", "1e308", "x", "-0"],
    "--lr": ["auto", "0", "1e-3", "1e200", "-1", "nan", "x", "1e400"],
    "--step-size": ["0.01", "0", "-1", "1e300"],
    "--norm": ["2", "inf", "l2", "linf", "1", "x"],
    "--engine": ["dense", "tree", "certified", "warp", ""],
    "--data": ["sphere", "teacher", "separated", "mnist", "nofile.csv", "x.npz", ""],
    "--seed": ["0", "-1", "x", str(2 ** 64)],
    "--checkpoint-every": ["0", "1", "-1"],
    "--resume": ["nodir"],
    "--bogus": ["1"],
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_probe_command_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(SEED + 3)
    names = sorted(FLAGS)
    codes = {}
    for trial in range(30):
        argv = ["train", "--out", f"o{trial}", "--iterations", "1"] + SMALL
        for name in rng.choice(names, size=int(rng.integers(1, 4)), replace=False):
            argv += [str(name), str(rng.choice(FLAGS[name]))]
        capsys.readouterr()
        try:
            code = cli.main(argv)
        except SystemExit as exc:   # argparse: usage and one error line, status 2
            code = exc.code
            assert code == 2, argv
            assert "error:" in capsys.readouterr().err, argv
            codes[code] = codes.get(code, 0) + 1
            continue
        err = capsys.readouterr().err
        codes[code] = codes.get(code, 0) + 1
        assert code in (0, 2), (argv, code, err)
        if code == 2:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("sparseadv: error:"), (argv, err)
        else:
            out = argv[argv.index("--out") + 1]
            assert np.isfinite(np.load(os.path.join(out, "weights.npz"))["W"]).all()
    assert set(codes) >= {0, 2}
