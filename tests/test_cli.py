"""The CLI's contract: options, config file, --set overrides, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.errors import ConfigError
from edgekd.training.config import build_config
from tests.helpers import write_image_folder

runner = CliRunner()
DIGITS = ["--data", "digits", "--image-size", "16", "--model", "resnet8", "--batch-size", "64", "--no-export"]
FAST = [*DIGITS, "--method", "byot"]


def _invoke(args):
    result = runner.invoke(app, args)
    return result.exit_code, result.output


def _assert_clean_error(code, output, *needles):
    assert code == 2, output
    assert "Traceback" not in output
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    error_lines = [ln for ln in lines if ln.startswith("error:")]
    assert len(error_lines) == 1, output
    for needle in needles:
        assert needle in output, output


def test_config_precedence_defaults_yaml_options_set(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 7\nlr: 0.2\nmodel: resnet14\nexits: [0, 2]\n")
    cfg = build_config(str(cfg_file), {"lr": 0.3, "model": None}, ["model=resnet20", "hflip=false"])
    assert (cfg.epochs, cfg.lr, cfg.model, cfg.exits, cfg.hflip) == (7, 0.3, "resnet20", [0, 2], False)
    assert cfg.batch_size == 128  # untouched default
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        build_config(None, {}, ["nope=1"])
    with pytest.raises(ConfigError, match="epochs must be int"):
        build_config(None, {}, ["epochs=many"])


def test_train_cli_with_config_and_set_runs(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 5\n")
    out = tmp_path / "run"
    code, output = _invoke(["train", *FAST, "--config", str(cfg_file), "--set", "epochs=1", "--set", "export=true",
                            "--out", str(out)])
    assert code == 0, output
    from edgekd.core.manifest import load_manifest

    assert load_manifest(out / "bundle").num_exits == 3  # training exports its best checkpoint at the end
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["config"]["method"] == "byot"
    assert "vote:soft" in output  # the final per-exit table
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    # a second run into the same directory neither overwrites nor crashes
    before = (out / "last.pt").read_bytes()
    code, output = _invoke(["train", *FAST, "--epochs", "1", "--out", str(out)])
    _assert_clean_error(code, output, "--resume")
    assert (out / "last.pt").read_bytes() == before


def test_missing_data_path_is_one_line_error(tmp_path):
    code, output = _invoke(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    _assert_clean_error(code, output, "nowhere")


def test_unreadable_image_is_named_or_skipped(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ("cat", "dog"), 6, (20, 20, 3))
    (root / "dog" / "broken.png").write_bytes(b"not an image at all")
    args = ["train", "--data", str(root), "--image-size", "16", "--model", "resnet8", "--method", "byot",
            "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-export"]
    code, output = _invoke([*args, "--out", str(tmp_path / "a")])
    _assert_clean_error(code, output, "broken.png")
    code, output = _invoke([*args, "--skip-bad", "--out", str(tmp_path / "b")])
    assert code == 0, output
    assert "skipped 1 unreadable image" in output


def test_label_outside_class_list_is_named(tmp_path):
    path = tmp_path / "bad.npz"
    x = np.zeros((10, 8, 8), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.array([0, 1] * 4 + [0, 5]), x_test=x[:2], y_test=np.array([0, 1]),
             classes=np.array(["a", "b"]))
    code, output = _invoke(["train", "--data", str(path), "--out", str(tmp_path / "o"), "--method", "byot"])
    _assert_clean_error(code, output, "bad.npz")


def test_tskd_without_teacher_and_bad_teacher(tmp_path):
    code, output = _invoke(["train", *DIGITS, "--out", str(tmp_path / "o")])
    _assert_clean_error(code, output, "--teacher")
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"garbage")
    code, output = _invoke(["train", *DIGITS, "--teacher", str(fake), "--out", str(tmp_path / "o2")])
    _assert_clean_error(code, output, "fake.pt")


def test_unknown_model_and_set_key(tmp_path):
    code, output = _invoke(["train", "--model", "resnet9000", "--out", str(tmp_path / "o"), "--method", "byot",
                            "--image-size", "16"])
    _assert_clean_error(code, output, "resnet9000")
    code, output = _invoke(["train", "--set", "wat=1", "--out", str(tmp_path / "o")])
    _assert_clean_error(code, output, "wat")


def test_models_lists_registry():
    code, output = _invoke(["models"])
    assert code == 0 and "resnet8" in output and "tv_mobilenet_v3_small" in output


def test_rectangular_rgb_folder_trains(tmp_path):
    root = write_image_folder(tmp_path / "rect", ("a", "b"), 5, (30, 40, 3), ext=".jpg", seed=1)
    out = tmp_path / "o"
    code, output = _invoke(["train", "--data", str(root), "--image-size", "12x16", "--model", "resnet8",
                            "--method", "byot", "--epochs", "1", "--batch-size", "4", "--workers", "0",
                            "--no-export", "--out", str(out)])
    assert code == 0, output
    spec = json.loads((out / "summary.json").read_text())["exit_info"][0]
    assert spec["feat_shape"][1:] == [12, 16]  # stage 0 keeps the input resolution
    code, output = _invoke(["train", "--data", str(root), "--image-size", "12by16", "--out", str(tmp_path / "p")])
    _assert_clean_error(code, output, "12by16")


def test_error_lines_keep_square_brackets(tmp_path):
    """Messages are printed literally, not read as rich markup: paths and hints such as 'edgekd[train]' survive."""
    missing = tmp_path / "bundle[int8]"
    code, output = _invoke(["build", str(missing)])
    _assert_clean_error(code, output, "bundle[int8]")


def test_old_names_still_work_as_hidden_aliases(tiny_bundle, tmp_path):
    """`edgekd profiles` and `build --profile` were renamed (targets, --target) and stay as hidden aliases."""
    code, new = _invoke(["targets"])
    assert code == 0 and "orin-nano" in new and "x86-cpu" in new
    code, old = _invoke(["profiles"])
    assert code == 0 and old == new
    assert "profiles" not in _invoke(["--help"])[1] and "--profile " not in _invoke(["build", "--help"])[1]
    for flag in ("--target", "--profile"):  # both refuse int8 on a Nano before any work, naming the target
        code, output = _invoke(["build", str(tiny_bundle), "--precision", "int8", flag, "jetson-nano",
                                "--out", str(tmp_path / flag.strip("-"))])
        _assert_clean_error(code, output, "jetson-nano cannot build int8")
        assert not (tmp_path / flag.strip("-")).exists()
    code, output = _invoke(["build", str(tiny_bundle), "--target", "orin-nano", "--profile", "jetson-nano"])
    _assert_clean_error(code, output, "--profile is the old name of --target")
