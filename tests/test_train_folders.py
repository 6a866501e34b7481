"""The run folder of `fastyolo train`: never inside the data, never over a user's files, one run at a time
(an OS lock), a full disk stops the run in one line with the earlier checkpoints kept; --val over the
training frames is called what it is.

Most tests stop at the point training would start (fit replaced by a stand-in that records its call):
what they check happens before. One real run of 1 epoch (2 frames, batch 1) is shared, and the full-disk
test resumes it for one more epoch."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch)")

from conftest import tiny_dataset  # noqa: E402

from fastyolo.cli import main as cli  # noqa: E402

FRAMES = ("000037.jpg", "000074.jpg")


def train_args(data: Path | list[Path], out: Path, *extra: str) -> list[str]:
    folders = [str(d) for d in (data if isinstance(data, list) else [data])]
    return ["train", "--data", *folders, "--out", str(out), "--backbone", "resnet18", "--epochs", "2",
            "--batch", "1", "--val-split", "0.5", "--workers", "0", "--device", "cpu", "--pretrained", "none", *extra]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) >= 1 and lines[-1].startswith("fastyolo train: error:"), err
    assert sum(line.startswith("fastyolo train: error:") for line in lines) == 1, err
    return lines[-1]


@pytest.fixture(scope="module")
def data(kitti_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(kitti_dir, tmp_path_factory.mktemp("folders") / "data", FRAMES)


class FitStandIn:
    """fit() replaced: each call records its config and frames; `during` runs inside the next call (what
    another command does while this run trains)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.during: list = []

    def __call__(self, config, train, val, **kwargs) -> list:
        self.calls.append({"config": config, "train": train, "val": val})
        hooks, self.during = self.during, []
        for hook in hooks:
            hook()
        return []


@pytest.fixture()
def fit_calls(monkeypatch) -> FitStandIn:
    stand_in = FitStandIn()
    monkeypatch.setattr("fastyolo.train.engine.fit", stand_in)
    return stand_in


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------------- item 7: --val over --data


def test_val_equal_to_data_is_called_the_training_frames(data, tmp_path, fit_calls, capsys):
    args = train_args(data, tmp_path / "run")
    at = args.index("--val-split")
    args[at:at + 2] = ["--val", str(data)]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "held-out" not in out and "validating on 2 (the training frames themselves)" in out, out
    assert fit_calls.calls[0]["config"].val_name == "train"  # metrics, curves and the summary say "train mAP"


def test_val_overlapping_data_says_how_many_are_training_frames(data, kitti_dir, tmp_path, fit_calls, capsys):
    other = tiny_dataset(kitti_dir, tmp_path / "other", ("000000.jpg",))
    args = train_args(data, tmp_path / "run")
    at = args.index("--val-split")
    args[at:at + 2] = ["--val", str(data), str(other)]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "validating on 3 frames, 2 of them training frames (not held out" in out, out
    assert "held-out frames" not in out


# ------------------------------------------------------------------------- item 8: --out inside the data


@pytest.mark.parametrize("inside", ["run", "images/run", "."])
def test_out_inside_the_dataset_folder_is_refused(inside, data, tmp_path, fit_calls, capsys):
    before = tree(data)
    assert cli(train_args(data, data / inside)) == 2
    assert "is inside the dataset folder" in error_line(capsys)
    assert tree(data) == before and not fit_calls.calls  # nothing created in the data, nothing trained


def test_out_holding_the_dataset_is_refused(data, tmp_path, fit_calls, capsys):
    assert cli(train_args(data, data.parent)) == 2
    assert "holds the dataset folder" in error_line(capsys)


# ------------------------------------------------------------------------- item 11: a user's files


def test_out_over_a_users_files_without_last_pt_is_refused(data, tmp_path, fit_calls, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, content in (("best.pt", b"my best model"), ("metrics.jsonl", b'{"epoch": 1}\n'), ("curves.png", b"png")):
        (mine / name).write_bytes(content)
    before = tree(mine)
    assert cli(train_args(data, mine)) == 2
    line = error_line(capsys)
    assert "is not empty" in line and "best.pt" in line and "never overwritten" in line
    assert tree(mine) == before and not fit_calls.calls


def test_an_empty_out_is_used_and_a_failed_start_leaves_no_folder(data, tmp_path, fit_calls, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(train_args(data, empty)) == 0 and len(fit_calls.calls) == 1
    fresh = tmp_path / "new" / "run"
    args = train_args(data, fresh)
    at = args.index("--val-split")
    args[at:at + 2] = ["--val", str(tmp_path / "missing")]
    assert cli(args) == 2  # read after the run folder is locked
    assert "dataset folder not found" in error_line(capsys) and len(fit_calls.calls) == 1
    assert not (tmp_path / "new").exists()  # the folders it made for the run are gone again, lock file and all


# ------------------------------------------------------------------------- item 12: two runs, one folder


def test_a_second_train_into_the_same_out_refuses_while_the_first_runs(data, tmp_path, fit_calls, capsys):
    run = tmp_path / "run"
    second: dict = {}

    def start_another():
        capsys.readouterr()
        second["code"] = cli(train_args(data, run))
        second["err"] = capsys.readouterr().err

    fit_calls.during.append(start_another)
    assert cli(train_args(data, run)) == 0
    assert len(fit_calls.calls) == 1  # the second never reached training
    assert second["code"] == 2, second
    line = second["err"].strip().splitlines()[-1]
    assert "is in use by another fastyolo train" in line and str(os.getpid()) in line, line
    assert cli(train_args(data, run)) == 0  # the first one ended: its lock went with it


# ------------------------------------------------------------------------- item 13: a full disk


class _FullDisk:
    """A file on a disk that fills after `room` bytes: writes beyond fail with ENOSPC, as the kernel's do."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture()
def full_disk(monkeypatch):
    """Every file opened for writing from a descriptor (how checkpoints are written) fills after 1 MiB."""
    real = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        file = real(fd, mode, *args, **kwargs)
        return _FullDisk(file, 1 << 20) if "w" in mode else file

    monkeypatch.setattr(os, "fdopen", fdopen)


def test_save_checkpoint_on_a_full_disk_keeps_the_earlier_file(tmp_path, monkeypatch):
    from fastyolo.train.checkpoint import load_model, save_checkpoint
    from fastyolo.train.model import YoloNet

    from fastyolo.errors import OutputError

    model = YoloNet("resnet18")
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, epoch=1)
    before = path.read_bytes()
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: _FullDisk(real(fd, mode, *a, **k), 1 << 20))
    with pytest.raises(OutputError, match=r"cannot write .*best.pt: No space left on device .*the earlier best.pt is kept"):
        save_checkpoint(path, model, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before and load_model(path).backbone_name == "resnet18"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left behind


@pytest.fixture(scope="module")
def one_epoch(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared real run: epoch 1 of 2 (last.pt, best.pt, metrics), to be resumed."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    assert cli([*train_args(data, run), "--stop-after", "1"]) == 0
    return run


def test_a_full_disk_during_training_stops_in_one_line_and_keeps_the_checkpoints(one_epoch, tmp_path, full_disk,
                                                                                  capsys):
    from fastyolo.train.checkpoint import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(one_epoch, run, copy_function=os.link)  # links: a checkpoint is replaced, never written over
    before = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt")}
    capsys.readouterr()
    assert cli(["train", "--out", str(run), "--resume", "--workers", "0", "--device", "cpu"]) == 2
    line = error_line(capsys)
    assert "No space left on device" in line and "is kept" in line and "continue with --resume" in line, line
    assert f"cannot write {run}" in line  # the folder resumed, not the one the run was started in
    for name, content in before.items():
        assert (run / name).read_bytes() == content, name
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and load_checkpoint(run / "best.pt")["epoch"] == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
