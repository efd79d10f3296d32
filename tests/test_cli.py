"""The ``sparseadv`` command line: argument errors, data-file errors, train and resume."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sparseadv import cli, io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--m", "128", "--n", "24", "--d", "5", "--no-progress"]


def run_cli(args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "sparseadv"] + list(args), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, **kw)


def assert_one_line_error(stderr, words=""):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sparseadv: error:"), stderr
    assert "Traceback" not in stderr
    assert words in lines[0], stderr


# --------------------------------------------------------------------------- subprocess

def test_version_and_bad_file_in_subprocess(tmp_path):
    r = run_cli(["--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("sparseadv ")
    (tmp_path / "bad.csv").write_text("1,2,1\n3,oops,1\n")
    r = run_cli(["train", "--data", "bad.csv"] + SMALL[:2], tmp_path)
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "non-numeric cell 'oops'")


@pytest.mark.parametrize("content,words", [
    (None, "not found"),
    ("1,2,1\n3,1\n", "2 columns, expected 3"),
])
def test_bad_files_subprocess(tmp_path, content, words):
    if content is not None:
        (tmp_path / "d.csv").write_text(content)
    r = run_cli(["train", "--data", "d.csv"], tmp_path)
    assert r.returncode == 2
    assert_one_line_error(r.stderr, words)


def test_argument_error_subprocess(tmp_path):
    r = run_cli(["train", "--m", "0"], tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "--m" in r.stderr


# --------------------------------------------------------------------------- in-process

@pytest.mark.parametrize("args,words", [
    (["train", "--m", "-3"], "positive integer"),
    (["train", "--lr", "fast"], "expected a number"),
    (["train", "--eps", "-0.1"], ">= 0"),
    (["train", "--norm", "3"], "expected 2 or inf"),
    (["reproduce", "--quick", "--full"], "not allowed with"),
    (["nonsense"], "invalid choice"),
])
def test_argparse_errors(args, words, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("args,words", [
    (["train", "--engine", "warp"], "--engine must be one of"),
    (["train", "--data", "mnist"], "--data must be"),
    (["reproduce", "--engines", "warp"], "unknown engine"),
])
def test_usage_errors(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(args + (["--no-progress"] if args[0] == "train" else [])) == 2
    assert_one_line_error(capsys.readouterr().err, words)


BAD_FILES = {
    "missing.csv": (None, "data file not found"),
    "empty.csv": ("", "empty file"),
    "header.csv": ("a,b,y\n", "zero data rows"),
    "ragged.csv": ("1,2,1\n1,2,3,4\n", "4 columns, expected 3"),
    "cell.csv": ("1,2,1\n1,x,1\n", "non-numeric cell"),
    "nan.csv": ("1,nan,1\n", "non-finite"),
    "inf.csv": ("1,2,-inf\n", "non-finite label"),
    "zeros.csv": ("0,0,1\n", "all zeros"),
    "short.npz": ("npz-wrong-length", "labels of wrong length"),
    "noy.npz": ("npz-no-y", "missing array 'y'"),
    "zero.npz": ("npz-zero-rows", "zero rows"),
    "garbage.npz": ("not a zip", "not a readable .npz"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files(tmp_path, capsys, name):
    content, words = BAD_FILES[name]
    path = tmp_path / name
    if content == "npz-wrong-length":
        np.savez(path, X=np.ones((3, 2)), y=np.ones(4))
    elif content == "npz-no-y":
        np.savez(path, X=np.ones((3, 2)))
    elif content == "npz-zero-rows":
        np.savez(path, X=np.ones((0, 2)), y=np.ones(0))
    elif content is not None:
        path.write_text(content)
    code = cli.main(["train", "--data", str(path), "--m", "32", "--no-progress",
                     "--out", str(tmp_path / "out")])
    assert code == 2
    assert_one_line_error(capsys.readouterr().err, words)


def _train(tmp_path, out, *extra):
    code = cli.main(["train", "--out", str(tmp_path / out)] + SMALL + list(extra))
    assert code == 0
    return np.load(tmp_path / out / "weights.npz")["W"], np.load(tmp_path / out / "history.npz")


@pytest.mark.parametrize("header", [True, False])
def test_train_on_csv(tmp_path, capsys, header):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4))
    y = np.sign(X[:, 0])
    lines = (["f1,f2,f3,f4,label"] if header else []) + \
        [",".join(str(float(v)) for v in list(x) + [t]) for x, t in zip(X, y)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    code = cli.main(["train", "--data", str(tmp_path / "d.csv"), "--m", "64", "--iterations",
                     "2", "--no-progress", "--out", str(tmp_path / "o")])
    assert code == 0
    ck = io.load_checkpoint(tmp_path / "o")
    assert ck["W"].shape == (64, 4) and ck["iteration"] == 2
    assert ck["config"]["n"] == 20 and '"train_accuracy"' in capsys.readouterr().out


def test_train_on_npz_and_n_conflict(tmp_path, capsys):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", X=rng.standard_normal((16, 3)), y=rng.standard_normal(16))
    code = cli.main(["train", "--data", str(tmp_path / "d.npz"), "--m", "64", "--iterations",
                     "2", "--no-progress", "--out", str(tmp_path / "o")])
    assert code == 0
    capsys.readouterr()
    assert cli.main(["train", "--data", str(tmp_path / "d.npz"), "--n", "5",
                     "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--n applies to synthetic data only")


@pytest.mark.parametrize("extra", [[], ["--random-start", "--norm", "inf"],
                                   ["--checkpoint-every", "2", "--lr", "50"]])
def test_resume_is_bitwise_identical(tmp_path, extra):
    W_full, h_full = _train(tmp_path, "full", "--iterations", "7", *extra)
    _train(tmp_path, "part", "--iterations", "3", *extra)
    code = cli.main(["train", "--resume", str(tmp_path / "part"), "--iterations", "7",
                     "--no-progress"])
    assert code == 0
    W_res = np.load(tmp_path / "part" / "weights.npz")["W"]
    assert W_res.tobytes() == W_full.tobytes()
    h_res = np.load(tmp_path / "part" / "history.npz")
    assert h_res["loss"].tobytes() == h_full["loss"].tobytes()
    np.testing.assert_array_equal(h_res["iteration"], np.arange(1, 8))


def test_resume_rejects_changed_options(tmp_path, capsys):
    _train(tmp_path, "a", "--iterations", "1")
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "a"), "--m", "256",
                     "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "conflicts with the checkpoint")
    assert cli.main(["train", "--resume", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "no checkpoint")


def test_sigint_then_resume_is_bitwise_identical(tmp_path):
    """A real Ctrl-C: the run saves after the current iteration and exits 130; resuming to a
    total N gives the same bits as N uninterrupted iterations."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    args = [sys.executable, "-m", "sparseadv", "train", "--m", "256", "--n", "32", "--d", "6",
            "--iterations", "100000", "--checkpoint-every", "0", "--out", "run"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen = b""
    deadline = time.time() + 90
    while b"loss=" not in seen and time.time() < deadline:   # tqdm postfix: >= 1 iteration done
        chunk = os.read(proc.stderr.fileno(), 256)
        if not chunk:
            break
        seen += chunk
    assert b"loss=" in seen, seen[-500:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err[-2000:]
    assert b"Traceback" not in err
    k = io.load_checkpoint(tmp_path / "run")["iteration"]
    assert k >= 1
    total = k + 2
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--iterations", str(total),
                     "--no-progress"]) == 0
    W_ref, _ = _train(tmp_path, "ref", "--m", "256", "--n", "32", "--d", "6",
                      "--iterations", str(total))
    assert np.load(tmp_path / "run" / "weights.npz")["W"].tobytes() == W_ref.tobytes()


def test_bench_passes_its_arguments_on(capsys):
    # the engines are always built in (no optional sparseadv.scaling any more): bench's own
    # argument errors come through as one line with exit status 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--whatever"])
    assert exc.value.code == 2
    assert "sparseadv bench: error: unrecognized arguments: --whatever" in \
        capsys.readouterr().err


def test_cli_engine_names_are_the_registry():
    # the command line lists engines without importing them; it must name exactly the registry
    from sparseadv.cli import ENGINE_NAMES
    from sparseadv.engines import ENGINES
    assert sorted(ENGINE_NAMES) == sorted(ENGINES)
