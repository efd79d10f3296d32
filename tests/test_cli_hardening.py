"""Regression tests of issue 15 (items 2, 5, 6, 7) and issue 10 (item 5) for the command line
and sparseadv.io: every bad file, tampered checkpoint or impossible size is one line and exit
status 2 (never a traceback, never a silent wrong run), and a bug in the library is not
swallowed as if it were a usage error."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from sparseadv import cli, io
from sparseadv._runs import LOCK_NAME, RunLock
from sparseadv.errors import CheckpointError, DataFileError, InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--m", "64", "--n", "20", "--d", "4", "--no-progress"]


def run_cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "sparseadv"] + list(args), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def one_line(stderr, *words):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(("sparseadv: error:", "sparseadv train: error:")), stderr
    for w in words:
        assert w in lines[0], stderr
    return lines[0]


def huge_header_npz(path, shape=(2 ** 33, 1)):
    """An .npz whose X header declares a 64 GiB float64 array (the data itself is 64 bytes)."""
    import io as _io
    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": shape})
    buf.write(b"\0" * 64)
    ybuf = _io.BytesIO()
    np.save(ybuf, np.ones(3))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X.npy", buf.getvalue())
        z.writestr("y.npy", ybuf.getvalue())


def good_npz_bytes(n=10, d=3):
    import io as _io
    b = _io.BytesIO()
    np.savez(b, X=np.random.default_rng(0).standard_normal((n, d)), y=np.ones(n))
    return b.getvalue()


# --------------------------------------------------------------------------- item 5: crashes

@pytest.mark.parametrize("case", ["truncated_half", "truncated_tail", "huge_header"])
def test_bad_npz_is_one_line_exit_2_in_subprocess(tmp_path, case):
    path = tmp_path / "d.npz"
    if case == "huge_header":
        huge_header_npz(path)
        words = ("array 'X' declares shape (8589934592, 1)", "68,719,476,736 bytes")
    else:
        data = good_npz_bytes()
        path.write_bytes(data[:len(data) // 2] if case == "truncated_half" else data[:-25])
        words = ("d.npz", "not a readable .npz file")
    r = run_cli(["train", "--data", "d.npz", "--m", "16", "--no-progress"], tmp_path)
    assert r.returncode == 2, r.stderr
    one_line(r.stderr, *words)


@pytest.mark.parametrize("args,words", [
    (["--m", "1099511627776"], ("--m, --d asks for", "bytes")),
    (["--d", str(2 ** 40)], ("--n, --d asks for", "bytes")),
    (["--n", str(2 ** 40)], ("--n, --d asks for", "bytes")),
    (["--m", str(2 ** 31), "--d", str(2 ** 31)], ("--n, --d asks for",)),
])
def test_huge_sizes_are_refused_before_allocating(tmp_path, args, words):
    r = run_cli(["train", "--no-progress", "--iterations", "1"] + args, tmp_path)
    assert r.returncode == 2, r.stderr
    one_line(r.stderr, *words)


def _checkpoint(tmp_path, name="run", *extra):
    out = tmp_path / name
    assert cli.main(["train", "--out", str(out), "--iterations", "3"] + SMALL + list(extra)) == 0
    return out


def _tamper(out, **changes):
    """Rewrite out/checkpoint.npz with some fields changed (config: a dict of changes, or
    a callable taking the config dict)."""
    path = out / io.CHECKPOINT_NAME
    with np.load(path) as z:
        raw = {k: z[k] for k in z.files}
    for key, value in changes.items():
        if key == "config" and callable(value):
            cfg = json.loads(str(raw["config"]))
            value(cfg)
            raw["config"] = np.array(json.dumps(cfg))
        else:
            raw[key] = value
    np.savez(path, **raw)


TAMPERED = {
    "config_without_engine": (dict(config=lambda c: c.pop("engine")), "lacks engine"),
    "config_without_iterations": (dict(config=lambda c: c.pop("iterations")),
                                  "lacks iterations"),
    "config_bad_eps": (dict(config=lambda c: c.update(eps="wide")), "eps='wide'"),
    "config_m_mismatch": (dict(config=lambda c: c.update(m=7)), "m=7 but W has 64 rows"),
    "W_1d": (dict(W=np.ones(64)), "W must be a non-empty 2-D"),
    "W_nan": (dict(W=np.full((64, 4), np.nan)), "W holds NaN"),
    "a_wrong_length": (dict(a=np.ones(3)), "a must be a float vector of length m = 64"),
    "iteration_beyond_history": (dict(iteration=np.array(50)), "at iteration 50"),
    "iteration_negative": (dict(iteration=np.array(-3)), "iteration must be >= 0"),
    "iteration_float": (dict(iteration=np.array(2.5)), "'iteration' must be a scalar"),
    "lr_negative": (dict(lr=np.array(-1.0)), "lr must be a positive"),
    "config_not_json": (dict(config=np.array("{oops")), "not valid JSON"),
    "version_2": (dict(version=np.array(2)), "checkpoint version 2"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_checkpoint_is_one_line_exit_2(tmp_path, capsys, case):
    changes, words = TAMPERED[case]
    out = _checkpoint(tmp_path)
    _tamper(out, **changes)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--iterations", "6", "--no-progress"]) == 2
    one_line(capsys.readouterr().err, words)
    with pytest.raises(CheckpointError):
        if case.startswith("config") and case != "config_not_json":
            cli._resume_config(cli.build_parser().parse_args(["train", "--resume", str(out)]),
                               {})
        else:
            io.load_checkpoint(out)


def test_negative_iteration_does_not_run(tmp_path):
    """iteration = -3 used to run 9 steps while reporting 6: now refused, nothing written."""
    out = _checkpoint(tmp_path)
    _tamper(out, iteration=np.array(-3))
    before = (out / "weights.npz").read_bytes()
    r = run_cli(["train", "--resume", str(out), "--iterations", "6", "--no-progress"],
                tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "iteration must be >= 0")
    assert (out / "weights.npz").read_bytes() == before


# --------------------------------------------------------------------------- item 6: damage

def test_csv_with_bom_and_no_header_keeps_its_first_row(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("3,4,1\n1,0,-1\n0,2,1\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    X, y = io.load_data_file(path)
    np.testing.assert_allclose(X, [[0.6, 0.8], [1, 0], [0, 1]])
    np.testing.assert_array_equal(y, [1, -1, 1])
    # with a header the BOM belongs to the header, which is still detected and skipped
    path.write_text("a,b,label\n3,4,1\n", encoding="utf-8-sig")
    X, y = io.load_data_file(path)
    assert X.shape == (1, 2)


def test_resume_notices_that_the_data_file_changed(tmp_path, capsys):
    rng = np.random.default_rng(3)
    data = tmp_path / "d.npz"
    np.savez(data, X=rng.standard_normal((20, 4)), y=np.sign(rng.standard_normal(20)))
    out = tmp_path / "o"
    assert cli.main(["train", "--data", str(data), "--m", "32", "--iterations", "2",
                     "--no-progress", "--out", str(out)]) == 0
    np.savez(data, X=rng.standard_normal((40, 4)), y=np.sign(rng.standard_normal(40)))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--iterations", "4", "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "changed since the checkpoint", "n=20", "n=40",
             str(data))
    # same shape, one value changed: still noticed
    X = np.load(data)["X"][:20]
    np.savez(data, X=X, y=np.ones(20))
    assert cli.main(["train", "--resume", str(out), "--iterations", "4", "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "changed since the checkpoint")


def test_second_run_into_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    with RunLock(str(out)):   # a first run holding the directory
        r = run_cli(["train", "--out", "o", "--iterations", "1"] + SMALL, tmp_path)
        assert r.returncode == 2
        one_line(r.stderr, "another sparseadv train is writing into", LOCK_NAME)
        assert not (out / io.CHECKPOINT_NAME).exists()
        with pytest.raises(InputError, match="another sparseadv train"):
            with RunLock(str(out)):
                pass
    # released on exit: the next run goes through, and releases it in turn
    assert cli.main(["train", "--out", str(out), "--iterations", "1"] + SMALL) == 0
    with RunLock(str(out)):
        pass


def test_stale_checkpoint_temporaries_are_removed_on_the_next_start(tmp_path):
    out = _checkpoint(tmp_path)
    stale = [out / f".{io.CHECKPOINT_NAME}.12345.abcd.tmp", out / ".weights.npz.1.x.tmp"]
    for p in stale:
        p.write_bytes(b"PK half")
    keep = out / "notes.tmp"        # not one of ours
    keep.write_text("mine")
    assert cli.main(["train", "--resume", str(out), "--iterations", "4", "--no-progress"]) == 0
    assert not any(p.exists() for p in stale) and keep.exists()


def test_temporary_names_are_unique_per_process(tmp_path, monkeypatch):
    names = []
    real = io.os.replace

    def spy(src, dst):
        names.append(os.path.basename(src))
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", spy)
    io.atomic_save_npz(tmp_path / "a.npz", {"x": np.ones(2)})
    io.atomic_save_npz(tmp_path / "a.npz", {"x": np.ones(2)})
    assert len(set(names)) == 2
    assert all(n.startswith(f".a.npz.{os.getpid()}.") and n.endswith(".tmp") for n in names)


# --------------------------------------------------------------------------- item 2: norms

def test_normalize_rows_at_extreme_scales():
    X = np.array([[1e300, 1e300, 1e300], [1e-300, 2e-300, 0.0], [5e-324, 0.0, 0.0],
                  [-1.7e308, 1.7e308, 0.0], [3.0, 4.0, 0.0]])
    Z = io.normalize_rows(X)
    s = 1 / np.sqrt(3)
    want = [[s, s, s], [1 / np.sqrt(5), 2 / np.sqrt(5), 0], [1, 0, 0],
            [-np.sqrt(0.5), np.sqrt(0.5), 0], [0.6, 0.8, 0]]
    np.testing.assert_allclose(Z, want, rtol=1e-15, atol=0)
    # ordinary rows keep the bits of the plain X / ||X||
    assert Z[4].tobytes() == (X[4] / np.linalg.norm(X[4])).tobytes()


@pytest.mark.parametrize("row,words", [([0.0, 0.0], "all zeros"), ([np.nan, 1.0], "NaN or inf"),
                                       ([np.inf, 1.0], "NaN or inf")])
def test_normalize_rows_refuses_only_zero_or_non_finite_rows(row, words):
    with pytest.raises(DataFileError, match=rf"row 2 .*{words}|row 2 {words}"):
        io.normalize_rows(np.array([[1.0, 2.0], row]))


def test_csv_row_of_1e300_trains_on_a_unit_row(tmp_path):
    (tmp_path / "big.csv").write_text("1e300,1e300,1e300,1\n1,0,0,-1\n0,1e-200,0,1\n")
    X, _ = io.load_data_file(tmp_path / "big.csv")
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-15)
    assert cli.main(["train", "--data", str(tmp_path / "big.csv"), "--m", "32",
                     "--iterations", "1", "--no-progress", "--out", str(tmp_path / "o")]) == 0
    ck = io.load_checkpoint(tmp_path / "o")
    assert np.isfinite(ck["W"]).all()


# --------------------------------------------------------------------------- item 7: arguments

@pytest.mark.parametrize("args,words", [
    (["--eps", "1e308"], "--eps: expected a number <= 1e+150"),
    (["--eps", "1e200"], "--eps: expected a number <= 1e+150"),
    (["--step-size", "1e300"], "--step-size: expected a number <= 1e+150"),
    (["--m", "9" * 30], "--m: expected a positive integer below 2**63"),
    (["--seed", str(2 ** 64)], "--seed: expected an integer >= 0 below 2**63"),
    (["--lr", "1e400"], "--lr: expected a finite number"),
])
def test_arguments_that_cannot_work_are_refused(args, words, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train"] + args)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


# --------------------------------------------------------------------------- issue 10 item 5

@pytest.mark.parametrize("exc", [ValueError("a bug"), TypeError("a bug"), RuntimeError("a bug"),
                                 KeyError("a bug")])
def test_a_bug_in_the_library_is_not_swallowed(tmp_path, monkeypatch, exc):
    import sparseadv.trainer

    def broken(self, X, y):
        raise exc

    monkeypatch.setattr(sparseadv.trainer.AdversarialTrainer, "step", broken)
    with pytest.raises(type(exc), match="a bug"):
        cli.main(["train", "--out", str(tmp_path / "o"), "--iterations", "1"] + SMALL)
    # and the lock is released all the same
    with RunLock(str(tmp_path / "o")):
        pass


def test_a_bug_in_the_library_shows_a_traceback_in_subprocess(tmp_path):
    code = ("import sys, sparseadv.datasets as d, sparseadv.cli as c\n"
            "def bad(*a, **k): raise ValueError('planted bug')\n"
            "d.DATASETS['separated'] = bad\n"
            "sys.exit(c.main(['train', '--iterations', '1', '--no-progress', '--m', '8']))\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "planted bug" in r.stderr


def test_project_errors_and_os_errors_are_one_line(tmp_path, monkeypatch, capsys):
    import sparseadv.trainer

    for exc, words in [(InputError("lr is bad"), "lr is bad"),
                       (PermissionError(13, "Permission denied", "/x"), "Permission denied: /x")]:
        def broken(self, X, y, exc=exc):
            raise exc
        monkeypatch.setattr(sparseadv.trainer.AdversarialTrainer, "step", broken)
        assert cli.main(["train", "--out", str(tmp_path / "o"), "--iterations", "1"] + SMALL) == 2
        one_line(capsys.readouterr().err, words)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("args", [["--lr", "1e200"], ["--eps", "1e150"],
                                  ["--eps", "1e100", "--norm", "inf"]])
def test_divergence_is_an_error_not_exit_0(tmp_path, capsys, args):
    """Issue 15 item 4 at the command line: with lr = 1e200 (or a radius the auto lr cannot
    follow) the weights became NaN and the run exited 0 reporting robust loss 0.5."""
    out = tmp_path / "o"
    code = cli.main(["train", "--out", str(out), "--iterations", "4",
                     "--checkpoint-every", "1"] + SMALL + args)
    assert code == 2
    one_line(capsys.readouterr().err, "diverge", "lr")
    if (out / io.CHECKPOINT_NAME).exists():   # what was saved is finite and resumable
        assert np.isfinite(io.load_checkpoint(out)["W"]).all()
    assert not (out / "weights.npz").exists()


def test_csv_too_large_for_memory_is_refused_before_parsing(tmp_path, monkeypatch):
    from sparseadv import _validation
    path = tmp_path / "d.csv"
    path.write_text("1,2,1\n3,4,-1\n")
    monkeypatch.setattr(_validation, "available_memory", lambda: 50)
    with pytest.raises(DataFileError, match="too large to parse in the memory available"):
        io.load_data_file(path)
    monkeypatch.setattr(_validation, "available_memory", lambda: 10 ** 6)
    assert io.load_data_file(path)[0].shape == (2, 2)


def test_checkpoint_with_a_huge_or_damaged_member_is_refused(tmp_path, capsys):
    out = _checkpoint(tmp_path)
    path = out / io.CHECKPOINT_NAME
    good = path.read_bytes()
    with np.load(path) as zf:                      # rewrite it with a 64 GiB header for W
        members = {k: zf[k] for k in zf.files if k != "W"}
    import io as _io
    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": (2 ** 33, 1)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("W.npy", buf.getvalue() + b"\0" * 64)
        for k, arr in members.items():
            b = _io.BytesIO()
            np.save(b, arr)
            z.writestr(k + ".npy", b.getvalue())
    with pytest.raises(CheckpointError, match=r"array 'W' declares shape \(8589934592, 1\)"):
        io.load_checkpoint(out)
    path.write_bytes(good[:len(good) - 40])
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--iterations", "4", "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "unreadable checkpoint")
