"""``sparseadv train --loss --batch-size --epochs``: resume in the middle of an epoch gives the
uninterrupted run's weights; the batch order is part of the checkpoint; bad options."""
import json

import numpy as np
import pytest

from sparseadv import cli, io

from test_cli import SMALL, assert_one_line_error


def _train(tmp_path, out, *extra):
    code = cli.main(["train", "--out", str(tmp_path / out)] + SMALL + list(extra))
    assert code == 0
    return np.load(tmp_path / out / "weights.npz")["W"], np.load(tmp_path / out / "history.npz")


@pytest.mark.parametrize("extra", [["--batch-size", "10"],
                                   ["--batch-size", "7", "--loss", "logistic",
                                    "--checkpoint-every", "2", "--engine", "certified"]])
def test_resume_mid_epoch_is_bitwise_identical(tmp_path, extra):
    W_full, h_full = _train(tmp_path, "full", "--epochs", "3", *extra)
    batch = int(extra[1])
    per_epoch = -(-int(SMALL[SMALL.index("--n") + 1]) // batch)
    part = per_epoch + per_epoch // 2               # stops in the middle of epoch 1
    _train(tmp_path, "part", "--iterations", str(part), *extra)
    order = io.load_checkpoint(tmp_path / "part")["batch_order"]
    assert order["epoch"] == 1 and 0 < order["position"] < order["n"]
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "3",
                     "--no-progress"]) == 0
    W_res = np.load(tmp_path / "part" / "weights.npz")["W"]
    assert W_res.tobytes() == W_full.tobytes()
    h_res = np.load(tmp_path / "part" / "history.npz")
    assert h_res["loss"].tobytes() == h_full["loss"].tobytes()
    assert len(h_res["loss"]) == 3 * per_epoch
    assert list(h_res["epoch"]) == sorted(h_res["epoch"]) and h_res["epoch"][-1] == 2


def test_loss_and_batch_size_are_frozen_on_resume(tmp_path, capsys):
    _train(tmp_path, "a", "--iterations", "2", "--batch-size", "8")
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "a"), "--batch-size", "4",
                     "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--batch-size=4 conflicts")
    assert cli.main(["train", "--resume", str(tmp_path / "a"), "--loss", "logistic",
                     "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--loss=logistic conflicts")


def test_damaged_batch_order_is_a_checkpoint_error(tmp_path, capsys):
    _train(tmp_path, "a", "--iterations", "3", "--batch-size", "8")
    path = tmp_path / "a" / io.CHECKPOINT_NAME
    raw = dict(np.load(path))
    state = json.loads(str(raw["batch_order"]))
    state["position"] = 10 ** 6
    raw["batch_order"] = np.array(json.dumps(state))
    np.savez(path, **raw)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "a"), "--iterations", "5",
                     "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "unusable batch order")


@pytest.mark.parametrize("args,words", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "100000"], "--batch-size=100000 is larger than"),
    (["--loss", "hinge"], "--loss"),
    (["--iterations", "3", "--epochs", "2"], "--iterations or --epochs"),
])
def test_bad_options(tmp_path, capsys, args, words):
    try:
        code = cli.main(["train", "--out", str(tmp_path / "o")] + SMALL + args)
    except SystemExit as exc:                       # argparse's own checks
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    assert words in captured.err


def test_logistic_needs_pm1_labels(tmp_path, capsys):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", X=rng.standard_normal((16, 3)), y=rng.standard_normal(16))
    code = cli.main(["train", "--data", str(tmp_path / "d.npz"), "--m", "64", "--loss",
                     "logistic", "--no-progress", "--out", str(tmp_path / "o")])
    assert code == 2
    assert_one_line_error(capsys.readouterr().err, "y must hold labels -1 and +1")
