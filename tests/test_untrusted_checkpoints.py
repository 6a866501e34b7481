"""A hostile .pt never runs: every command and API that reads a checkpoint (export, eval, detect, bench,
train --init/--resume/--pretrained, Detector, load_model) loads it with torch's weights_only unpickler
(tensors and plain data only) and refuses anything else in one line, before the pickle's code can run.

The hostile file is a checkpoint-shaped dict whose extra entry's __reduce__ calls os.system to create a
marker file: the marker must never appear."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="checkpoints need the [train] extra (torch)")

from conftest import tiny_dataset  # noqa: E402

from fastyolo import Detector, ModelError  # noqa: E402
from fastyolo.cli import main  # noqa: E402
from fastyolo.layout import describe  # noqa: E402

REFUSAL = "not a fastyolo checkpoint or not trusted"


class _Payload:
    """Unpickled with weights_only=False, this runs a shell command (what a hostile download does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def hostile(path: Path, marker: Path) -> Path:
    """A .pt shaped like a fastyolo checkpoint ("model", "backbone", "layout") with the payload beside them."""
    torch.save({"model": {"w": torch.zeros(2)}, "backbone": "resnet18", "head": "conv", "layout": describe(),
                "config": {"epochs": 1}, "extra": _Payload(marker)}, path)
    return path


@pytest.fixture()
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    return hostile(tmp_path / "evil.pt", marker), marker


def one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fastyolo {command}: error:") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def data(kitti_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(kitti_dir, tmp_path_factory.mktemp("data"), ("000037.jpg", "000074.jpg"))


def test_the_payload_does_run_without_weights_only(evil):
    """The check of the test itself: the file really executes its command when unpickled the old way."""
    path, marker = evil
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", ["export", "eval", "detect", "bench"])
def test_commands_refuse_a_hostile_checkpoint(command, evil, data, tmp_path, capsys):
    path, marker = evil
    argv = {
        "export": ["export", str(path), "-o", str(tmp_path / "m.onnx")],
        "eval": ["eval", str(path), "--data", str(data)],
        "detect": ["detect", str(data / "images" / "000037.jpg"), "--model", str(path), "--no-progress"],
        "bench": ["bench", "--model", str(path), "--frames", "1", "--warmup", "0"],
    }[command]
    code = main(argv)
    err = capsys.readouterr().err
    assert not marker.exists(), "the pickle's code ran"
    assert code == 2 and REFUSAL in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "posix.system" in err  # what it holds, so a user can tell a hostile file from a foreign one


def test_train_init_resume_and_pretrained_refuse_a_hostile_file(evil, data, tmp_path, capsys):
    path, marker = evil
    base = ["train", "--data", str(data), "--backbone", "resnet18", "--epochs", "1", "--batch", "1",
            "--workers", "0", "--device", "cpu", "--pretrained", "none"]
    assert main([*base, "--out", str(tmp_path / "a"), "--init", str(path)]) == 2
    assert REFUSAL in one_line(capsys, "train")
    run = tmp_path / "run"
    run.mkdir()
    hostile(run / "last.pt", marker)  # a replaced last.pt
    assert main(["train", "--out", str(run), "--resume", "--workers", "0", "--device", "cpu"]) == 2
    assert REFUSAL in one_line(capsys, "train")
    hostile(tmp_path / "imagenet.pth", marker)
    assert main([*base, "--out", str(tmp_path / "b"), "--pretrained", str(tmp_path / "imagenet.pth")]) == 2
    assert "not a torch state dict or not trusted" in one_line(capsys, "train")
    assert not marker.exists(), "the pickle's code ran"


def test_detector_and_load_model_refuse_a_hostile_checkpoint(evil, tmp_path):
    from fastyolo.train.checkpoint import load_checkpoint, load_model

    path, marker = evil
    renamed = tmp_path / "weights.bin"  # backend="torch" reads any name as a checkpoint
    renamed.write_bytes(path.read_bytes())
    for load in (lambda: Detector(path, device="cpu"), lambda: Detector(renamed, backend="torch", device="cpu"),
                 lambda: load_model(path), lambda: load_checkpoint(path)):
        with pytest.raises(ModelError, match=REFUSAL):
            load()
    assert not marker.exists(), "the pickle's code ran"


def test_a_real_checkpoint_still_loads(tmp_path):
    """Our own files hold tensors and plain data only: the safe loader reads them whole."""
    from fastyolo.train.checkpoint import load_checkpoint, load_model, rng_state, save_checkpoint
    from fastyolo.train.model import YoloNet
    from fastyolo.train.schedule import make_optimizer, make_scheduler

    model = YoloNet("resnet18")
    optimizer = make_optimizer(model, "adam")
    scheduler = make_scheduler(optimizer, 10)
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), epoch=1,
                    rng=rng_state(), history=[{"epoch": 1, "val_map50": 0.5}], config={"milestones": (0.8, 0.9)})
    state = load_checkpoint(path)
    assert state["config"]["milestones"] == (0.8, 0.9) and state["history"][0]["val_map50"] == 0.5
    assert load_model(path).backbone_name == "resnet18"
