"""Training end to end on real KITTI frames: the CLI run folder, exact resume (clean stop and Ctrl-C),
DDP with 2 gloo processes, the schedule, and a small overfit checked through the real inference path.

Budget: about 3-4 minutes on 2 CPU cores, most of it the overfit test (marked slow).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch)")

from conftest import tiny_dataset  # noqa: E402
from fastyolo.train.schedule import lr_factor, make_optimizer, make_scheduler  # noqa: E402

from fastyolo.cli import main as cli  # noqa: E402

RESUME_FRAMES = ("000000.jpg", "000022.jpg", "000037.jpg", "000074.jpg")
OVERFIT_FRAMES = ("000037.jpg", "000074.jpg")  # Car, Truck, Car; 3 Pedestrians; no dropped object
OVERFIT_EPOCHS = 150  # one step each: what a new user tries on a few frames
SMALL_SPLIT = ("--val-split", "0.5")  # of small_data's 2 frames: 1 to train on, 1 to validate


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--backbone", "resnet18", "--epochs", "3",
            "--batch", "1", "--val-split", "0.25", "--workers", "0", "--device", "cpu", "--seed", "3", *extra]


def model_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=False)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{k} differs")
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def resume_data(kitti_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(kitti_dir, tmp_path_factory.mktemp("resume_data"), RESUME_FRAMES)


@pytest.fixture(scope="module")
def small_data(kitti_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 frames (with SMALL_SPLIT: 1 to train on, 1 to validate): one step an epoch, for the tests that need the
    run's behaviour, not several steps in an epoch."""
    return tiny_dataset(kitti_dir, tmp_path_factory.mktemp("small_data"), OVERFIT_FRAMES)


@pytest.fixture(scope="module")
def uninterrupted(resume_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 epochs of 3 steps (augmentation on, so the random state matters), no interruption."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert cli(train_args(resume_data, run)) == 0
    return run


def test_run_folder_has_checkpoints_metrics_and_curves(uninterrupted: Path):
    for name in ("last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "curves.png"):
        assert (uninterrupted / name).is_file(), name
    rows = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) and 0.0 <= r["val_map50"] <= 1.0
        parts = [r[f"seconds_{k}"] for k in ("steps", "bn", "val", "map")]  # where the epoch's time went
        assert min(parts) >= 0 and sum(parts) <= r["seconds"] + 0.01 and r["seconds_steps"] > 0
        assert 0 <= r["seconds_data_wait"] <= r["seconds_steps"]  # the steps' wait for their batches
    assert (uninterrupted / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from fastyolo.train.checkpoint import load_model

    assert load_model(uninterrupted / "best.pt").backbone_name == "resnet18"  # a standard YoloNet checkpoint


def test_stop_after_epoch_then_resume_equals_uninterrupted(resume_data: Path, uninterrupted: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert cli([*train_args(resume_data, run), "--stop-after", "1"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert cli([*train_args(resume_data, run), "--resume"]) == 0
    assert_same_weights(model_state(run), model_state(uninterrupted))
    resumed = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(x) for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in resumed] == pytest.approx([r["train_loss"] for r in expected], rel=1e-5)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_mid_epoch_saves_last_and_resume_equals_uninterrupted(resume_data: Path, uninterrupted: Path, tmp_path,
                                                                     signum: int, code: int):
    """A real Ctrl-C (and a kill's SIGTERM) to a `fastyolo train` process once epoch 1 is done (metrics.jsonl
    written; last.pt is not, it is written every checkpoint_every seconds).

    In a child process, as a user's terminal sends it (in-process, the signal also reaches the
    native threads earlier tests left behind, which crashed the test process).
    """
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fastyolo.cli", *train_args(resume_data, run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "metrics.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err  # interrupted, or terminated
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    # Stopped inside epoch 2 after a whole batch, or (a signal during epoch 1's checkpoints and curves, after
    # metrics.jsonl) at epoch 1's end, before any batch of epoch 2: both must resume exactly.
    assert state["epoch"] == 1 and 0 <= state["batches_done"] < 3
    assert cli([*train_args(resume_data, run), "--resume"]) == 0
    assert_same_weights(model_state(run), model_state(uninterrupted))


def test_eval_every_skips_the_batchnorm_pass_between_validations_and_resumes_exactly(small_data: Path,
                                                                                    tmp_path: Path):
    """--eval-every 2 over 3 epochs: the BatchNorm pass runs where its statistics are read (validation at epoch 2,
    the end at 3), not at epoch 1. A run stopped after epoch 1 (its last.pt gets a pass then) and resumed ends
    with the same weights and statistics as the whole run, with dropout on: the extra pass draws no random numbers.
    On small_data (one step an epoch): what is checked is where the passes run and what they draw."""
    extra = (*SMALL_SPLIT, "--eval-every", "2", "--dropout", "0.2")
    whole = tmp_path / "whole"
    assert cli([*train_args(small_data, whole), *extra]) == 0
    rows = [json.loads(x) for x in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [("seconds_bn" in r, "val_map50" in r) for r in rows] == [(False, False), (True, True), (True, True)]
    assert [r["train_images"] for r in rows] == [1, 1, 1]  # one step of the 1 training frame an epoch
    run = tmp_path / "run"
    assert cli([*train_args(small_data, run), *extra, "--stop-after", "1"]) == 0
    assert cli([*train_args(small_data, run), *extra, "--resume"]) == 0
    assert_same_weights(model_state(run), model_state(whole))


def test_resume_and_overwrite_errors(resume_data: Path, uninterrupted: Path, tmp_path: Path, capsys):
    assert cli(train_args(resume_data, tmp_path / "empty", "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert cli(train_args(resume_data, uninterrupted)) == 2  # never overwrites a run
    assert "holds a run" in capsys.readouterr().err
    assert cli([*train_args(resume_data, tmp_path / "x"), "--pretrained", str(tmp_path / "missing.pth")]) == 2
    assert "--pretrained file not found" in capsys.readouterr().err
    init = ["--init", str(uninterrupted / "best.pt"), "--backbone", "resnet34"]
    assert cli([*train_args(resume_data, tmp_path / "y"), *init]) == 2
    assert "holds a resnet18: pass --backbone resnet18" in capsys.readouterr().err


def test_pretrained_state_dict_loads_into_backbone(small_data: Path, tmp_path: Path):
    from fastyolo.train.model import resnet

    torch.manual_seed(123)
    imagenet = resnet("resnet18").state_dict()  # torchvision layout, fc included
    torch.save(imagenet, tmp_path / "resnet18.pth")
    run = tmp_path / "run"
    args = train_args(small_data, run, *SMALL_SPLIT, "--pretrained", str(tmp_path / "resnet18.pth"), "--stop-after", "1")
    args[args.index("--epochs") + 1] = "1"
    assert cli(args) == 0
    # One epoch at warm-up lr barely moves conv1; random init would be nowhere near.
    got = model_state(run)["backbone.conv1.weight"]
    assert torch.allclose(got, imagenet["conv1.weight"], atol=0.01)


def test_ddp_two_gloo_processes(resume_data: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "fastyolo.cli", *train_args(resume_data, run)]
    cmd[cmd.index("--epochs") + 1] = "1"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 1/1: train loss") == 1  # only rank 0 prints
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["processes"] == 2
    assert rows[0]["train_images"] == 2  # rank 0's share of the 3 training frames (DistributedSampler pads to 4)
    from fastyolo.train.checkpoint import load_model

    load_model(run / "last.pt")


def test_schedule_values():
    total = 1000
    assert lr_factor(0, total) == pytest.approx(0.1)  # warm-up starts at base / 10
    assert lr_factor(25, total) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(50, total) == 1.0
    assert lr_factor(799, total) == 1.0
    assert lr_factor(800, total) == pytest.approx(0.1)  # milestones at 80% and 90% (train/config.py)
    assert lr_factor(899, total) == pytest.approx(0.1)
    assert lr_factor(900, total) == pytest.approx(0.01)
    assert lr_factor(999, total) == pytest.approx(0.01)
    assert lr_factor(300, total, warmup=0.0, milestones=(0.25, 0.5)) == pytest.approx(0.1)

    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, "sgd")
    sched = make_scheduler(opt, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # The paper's SGD: 1e-3 -> 1e-2 warm-up, then 1e-3, 1e-4; momentum 0.9, weight decay 5e-4.
    assert lrs[0] == pytest.approx(1e-3) and lrs[50] == pytest.approx(1e-2)
    assert lrs[700] == pytest.approx(1e-2) and lrs[850] == pytest.approx(1e-3) and lrs[950] == pytest.approx(1e-4)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 5e-4
    assert opt.param_groups[1]["weight_decay"] == 0.0  # biases
    assert make_optimizer(model, "adam").param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(model, "lbfgs")


def test_fused_adamw_steps_equal_torchs_default_on_every_element():
    """make_optimizer takes torch's fused AdamW kernel on the CPU: after 5 steps of a channels_last ResNet-18
    YoloNet (as training holds it) with random gradients, every weight equals torch's default loop's up to
    rounding. (SGD keeps torch's default: its fused kernel gained nothing clear on a CPU.)"""
    from fastyolo.train.model import YoloNet

    torch.manual_seed(0)
    fast_model = YoloNet("resnet18").to(memory_format=torch.channels_last)
    ref_model = YoloNet("resnet18").to(memory_format=torch.channels_last)
    ref_model.load_state_dict(fast_model.state_dict())
    fast = make_optimizer(fast_model, "adam")
    assert fast.defaults["fused"] is True and not make_optimizer(fast_model, "sgd").defaults["fused"]
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")}
              for g in make_optimizer(ref_model, "adam").param_groups]
    ref = type(fast)(groups)  # torch's own default: a loop over the tensors on the CPU
    assert not ref.defaults["fused"]
    initial = [p.detach().clone() for p in fast_model.parameters()]
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(fast_model.parameters(), ref_model.parameters(), strict=True):
            a.grad = torch.empty_like(a).normal_(generator=generator) * 1e-2
            b.grad = a.grad.clone()
        fast.step()
        ref.step()
    for (key, a), b in zip(fast_model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=key)
    assert all(not torch.equal(a, b) for a, b in zip(fast_model.parameters(), initial, strict=True))  # all moved


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["auto", "off"])
def test_default_recipe_overfits_real_frames_through_the_detector(kitti_dir: Path, tmp_path: Path, amp: str):
    """Plain `fastyolo train` (every default that shapes the weights: augmentation, AdamW, schedule, frame cache;
    but for the zoom-in, off) learns a few real frames, and the exported ONNX finds their boxes again through the
    Detector: targets, loss, head, export and decode agree. "auto" is bf16 autocast on a CPU with AMX; "off" is fp32.
    The default zoom-in (2) is there to generalise; on two frames it slows the memorising this test asks for
    (measured: val mAP@0.5 0.861 after the 150 epochs, not >= 0.9); its boxes are checked in test_recipe.py.
    Validated once, at the end (--eval-every OVERFIT_EPOCHS): the 149 BatchNorm passes and validations between
    would change no weight (they draw no random numbers: test_eval_every_...; the losses match epoch for epoch)
    and were a third to a half of each epoch's time."""
    import cv2
    from fastyolo.train.engine import cpu_has_amx
    from fastyolo.train.export import export_onnx

    from fastyolo import Detector
    from fastyolo.datasets import load_dataset
    from fastyolo.metrics import evaluate

    if amp == "off" and not cpu_has_amx():
        pytest.skip("auto is fp32 on this CPU (no AMX): the auto case is this one")
    data = tiny_dataset(kitti_dir, tmp_path / "data", OVERFIT_FRAMES)
    samples, _ = load_dataset(data)
    assert {int(c) for s in samples for c in s.class_ids} == {0, 1, 2}
    run = tmp_path / "run"
    assert cli(["train", "--data", str(data), "--out", str(run), "--backbone", "resnet18", "--epochs", str(OVERFIT_EPOCHS),
                "--batch", "2", "--val-split", "0", "--workers", "0", "--device", "cpu", "--amp", amp,
                "--eval-every", str(OVERFIT_EPOCHS), "--zoom", "1"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == OVERFIT_EPOCHS and all("val_map50" not in r for r in rows[:-1])
    assert rows[-1]["val_map50"] >= 0.9, rows[-1]

    from fastyolo.train.checkpoint import load_model

    onnx_path = tmp_path / "overfit.onnx"
    export_onnx(load_model(run / "last.pt"), onnx_path, untrained=False)
    detector = Detector(onnx_path, conf=0.01)
    predictions = [detector.detect(cv2.imread(str(s.image_path))) for s in samples]
    result = evaluate(predictions, samples)
    assert result["map50"] >= 0.9, result
    found = Detector(onnx_path, conf=0.3).detect(cv2.imread(str(samples[1].image_path)))
    assert sorted(found.class_ids.tolist()) == [2, 2, 2]  # the three pedestrians of 000074, nothing else


def test_resume_from_another_directory_extends_a_finished_run(small_data: Path, tmp_path: Path, monkeypatch):
    """--data is stored absolute (resume works from anywhere) and a larger --epochs extends a finished run."""
    run = tmp_path / "run"
    monkeypatch.chdir(small_data.parent)
    args = ["train", "--data", small_data.name, "--out", str(run), "--backbone", "resnet18", "--epochs", "1",
            "--batch", "2", *SMALL_SPLIT, "--workers", "0", "--device", "cpu"]
    assert cli(args) == 0
    monkeypatch.chdir(tmp_path)  # elsewhere: the relative --data above no longer resolves from here
    assert cli(["train", "--out", str(run), "--resume", "--epochs", "2", "--workers", "0", "--device", "cpu"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert torch.load(run / "last.pt", map_location="cpu", weights_only=False)["config"]["epochs"] == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--min-size", "-3"], "--min-size must be >= 0"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--epochs", "0"], "--epochs and --batch must be at least 1"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--amp", "fp16"], "--amp fp16 needs a CUDA device"),  # train_args run on the CPU
    (["--augment-on", "device", "--cache", "off"], "--augment-on device warps the frame cache's copies"),
])
def test_bad_options_are_one_line(resume_data: Path, tmp_path: Path, capsys, extra, message):
    assert cli([*train_args(resume_data, tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written


def test_missing_map_dependency_is_one_line_before_training(resume_data: Path, tmp_path: Path, capsys, monkeypatch):
    """Validation's mAP needs faster-coco-eval: without it, one line before any frame is decoded or step taken."""
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # what a missing package looks like to import
    assert cli(train_args(resume_data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "needs faster-coco-eval" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_unwritable_out_is_one_line(resume_data: Path, tmp_path: Path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli(train_args(resume_data, blocker / "run")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_train_config_is_the_one_source_of_defaults():
    import dataclasses

    from fastyolo.train.config import TrainConfig

    from fastyolo.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "x"])
    not_given = ("epochs", "amp", "cache", "augment_on")  # None: a new run takes TrainConfig's, --resume the run's
    for f in dataclasses.fields(TrainConfig):
        if f.name not in not_given and hasattr(args, f.name) and f.default is not dataclasses.MISSING:
            assert getattr(args, f.name) == f.default, f.name
    assert TrainConfig(out="x").optimizer == "adam"  # Python users of fit() get what the CLI gives
