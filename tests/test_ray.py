"""detect --ray on a real local Ray cluster (head + a second node, one CPU each): the same rows as single-process
detect frame by frame, a worker killed with SIGKILL mid-job, a driver killed mid-job and resumed, Ray Data."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fastyolo[ray]')")

from fastyolo import distributed  # noqa: E402
from fastyolo.cli import main  # noqa: E402
from fastyolo.fileio import VideoReader, sample_video  # noqa: E402

CHUNK = 30  # frames per range: 3 ranges per clip
CLIP_FRAMES = 90
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """A real two-node Ray cluster on this machine, one CPU per node; this process is its driver."""
    from ray.cluster_utils import Cluster

    mb100 = 100 * 2**20
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "object_store_memory": mb100})
    c.add_node(num_cpus=1, object_store_memory=mb100)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="warning")
    # Ray Data's metrics poller is a daemon thread that outlives ray.shutdown() and logs each failed poll with its
    # traceback at DEBUG; pytest's log capture formats it, which calls ast.parse on that thread. On Python < 3.11.8
    # ast.parse is not thread-safe (cpython gh-106905), and a later test's torch.onnx.export (onnxscript parses its
    # torchlib) failed with "AST constructor recursion depth mismatch". Its log records go nowhere instead.
    logging.getLogger("ray.data._internal.usage.poller").disabled = True
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Two 90-frame cuts of the bundled real highway clip (frames 0-89 and 200-289), re-encoded by detect's writer."""
    from fastyolo.writers import VideoSink

    folder = tmp_path_factory.mktemp("clips")
    out = []
    with VideoReader(sample_video(), loop=False) as reader:
        frames = [reader.read() for _ in range(290)]
        fps = reader.fps
    for name, first in (("a.mp4", 0), ("b.mp4", 200)):
        with VideoSink(folder / name, fps, (frames[0].shape[1], frames[0].shape[0])) as sink:
            for image in frames[first:first + CLIP_FRAMES]:
                sink.write(image)
        out.append(folder / name)
    return out


def _single(source: Path, out: Path, *extra: str) -> list[dict]:
    """Single-process `fastyolo detect` (one thread, as each Ray worker runs) to JSON lines."""
    assert main(["detect", str(source), "--jsonl", str(out), "--threads", "1", "--no-progress", *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> dict[str, list[dict]]:
    folder = tmp_path_factory.mktemp("reference")
    return {c.stem: _single(c, folder / f"{c.stem}.jsonl") for c in clips}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_frame_ranges_decode_as_a_sequential_decode():
    """A range read by seeking (as the workers do) holds the very frames a decode from the start gives."""
    import numpy as np

    with VideoReader(sample_video(), loop=False, decode_threads=1) as reader:
        sequential = list(reader)
    for start in (1, 37, 120, 251, len(sequential) - 3):
        with VideoReader(sample_video(), loop=False, decode_threads=1) as reader:
            reader.seek(start)
            for k in range(3):
                assert np.array_equal(reader.read(), sequential[start + k]), (start, k)


def test_ranges_plan():
    assert distributed._ranges(90, 30, False) == [(0, 30), (30, 60), (60, None)]
    assert distributed._ranges(90, 30, True) == [(0, None)]
    assert distributed._ranges(20, 30, False) == [(0, None)]


def test_detect_ray_equals_single_process(cluster, clips, reference, udacity_dir, tmp_path, capsys):
    """Two clips in 3 ranges each, a folder of real images (with an unreadable file) in runs of 2, and a corrupt
    video: every row equals single-process detect's; the bad video is one line and the job goes on."""
    images = tmp_path / "images"
    shutil.copytree(udacity_dir, images, ignore=shutil.ignore_patterns("*.txt", "*.md"))
    (images / "test3b.jpg").write_bytes(b"not a jpeg")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    single_images = _single(images, tmp_path / "images.jsonl")
    out = tmp_path / "out"
    assert main(["detect", *map(str, clips), str(images), str(bad), "--ray", cluster.address, "-o", str(out),
                 "--threads", "1", "--chunk-frames", str(CHUNK), "--no-progress"]) == 0
    err = capsys.readouterr().err
    for clip in clips:
        assert _rows(out / f"{clip.stem}.jsonl") == reference[clip.stem]
    assert _rows(out / "images.jsonl") == single_images
    assert len(single_images) == 6
    assert "ray: 3 source(s) done, 0 already complete (skipped), 2 skipped" in err
    assert f"skipped {bad}:" in err and "test3b.jpg: not an image" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["state"] for s in manifest["sources"]] == ["complete"] * 3 and manifest["complete"]
    assert not (out / distributed.PARTS).exists()
    # The same command again: every source complete, nothing redone.
    assert main(["detect", *map(str, clips), str(images), "--ray", cluster.address, "-o", str(out), "--threads", "1",
                 "--chunk-frames", str(CHUNK), "--no-progress"]) == 0
    assert "0 source(s) done, 3 already complete (skipped), 0 skipped; 0 frames" in capsys.readouterr().err
    # Other settings into the same folder are refused in one line.
    assert main(["detect", str(clips[0]), "--ray", cluster.address, "-o", str(out), "--conf", "0.5"]) == 2
    assert "holds a run with other settings" in capsys.readouterr().err


def test_detect_ray_annotate_writes_what_detect_draws(cluster, clips, udacity_dir, tmp_path, capsys):
    """--annotate: a video is one task (said so) and OUTDIR/NAME.mp4 holds every frame with the boxes detect draws;
    a folder's annotated images are detect -o's, byte for byte."""
    import numpy as np

    from fastyolo import Detector
    from fastyolo.draw import annotate

    single = tmp_path / "stills"
    assert main(["detect", str(udacity_dir), "-o", str(single), "--threads", "1", "--no-progress"]) == 0
    out = tmp_path / "out"
    assert main(["detect", str(clips[1]), str(udacity_dir), "--ray", cluster.address, "-o", str(out), "--annotate",
                 "--threads", "1", "--chunk-frames", str(CHUNK), "--no-progress"]) == 0
    assert "one task per video, not per frame range (an annotated video is one stream)" in capsys.readouterr().err
    detector = Detector(threads=1)
    with VideoReader(clips[1], loop=False) as a, VideoReader(out / "b.mp4", loop=False) as b:  # cars in every frame
        raw, got = list(a), list(b)
    assert len(got) == len(raw) == CLIP_FRAMES
    marked = 0
    for frame, decoded in zip(raw, got, strict=True):
        drawn = annotate(frame, detector.detect(frame)).astype(np.int16)
        # Lossy H.264 (two encodes of one frame do not agree bit for bit): the drawn boxes and labels must be there,
        # far nearer the drawn pixels than the undrawn ones were, and the frame within the encoder's noise.
        marks = (drawn != frame).any(axis=2)
        if marks.any():
            marked += 1
            assert np.abs(drawn - decoded)[marks].mean() < 0.5 * np.abs(drawn - frame)[marks].mean()
        # x264 veryfast here: ~3 grey levels. Neighbouring frames differ by about as much (2-31): what pins each frame
        # to its place is the marks check above, as a frame off by one has its boxes off their marks.
        assert np.abs(drawn - decoded).mean() < 6.0
    assert marked > CLIP_FRAMES // 2
    drawn_stills = {p.name: p.read_bytes() for p in single.iterdir()}
    assert len(drawn_stills) == 6
    assert {p.name: p.read_bytes() for p in (out / udacity_dir.name).iterdir()} == drawn_stills


def _worker_pids() -> list[int]:
    """Processes of the DetectWorker actors (Ray titles them ray::DetectWorker...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::DetectWorker"):
                pids.append(int(entry.name))
    return pids


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_worker_killed_mid_job(cluster, clips, reference, tmp_path):
    """kill -9 of a worker while it runs a range: Ray restarts the actor and runs the range again; every frame is
    written exactly once."""
    out = tmp_path / "out"
    result = {}

    def job():
        result["summary"] = distributed.detect(clips, out, threads=1, chunk_frames=CHUNK, progress=False)

    thread = threading.Thread(target=job)
    thread.start()
    _wait_for(lambda: len(_worker_pids()) == 2 or not thread.is_alive())
    _wait_for(lambda: (out / distributed.PARTS).is_dir() or not thread.is_alive())
    victims = _worker_pids()
    assert victims and thread.is_alive(), "the job ended before a worker could be killed"
    os.kill(victims[0], signal.SIGKILL)
    thread.join(timeout=300)
    summary = result["summary"]
    assert summary.skipped == [] and len(summary.done) == 2
    for clip in clips:
        rows = _rows(out / f"{clip.stem}.jsonl")
        assert [r["frame"] for r in rows] == list(range(CLIP_FRAMES))
        assert rows == reference[clip.stem]


def _kill_driver_once(command: list[str], parts: Path, pattern: str) -> None:
    """Run `fastyolo COMMAND` as its own process and kill it outright (SIGKILL) once a first range is in `parts`."""
    driver = subprocess.Popen([sys.executable, "-m", "fastyolo.cli", *command], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (parts.is_dir() and any(parts.rglob(pattern))) or driver.poll() is not None)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stderr.close()


def test_driver_killed_then_resumed(cluster, clips, reference, tmp_path, capsys):
    """The driver killed outright mid-job, then the same command: the ranges done are kept, the rest redone, every
    frame exactly once."""
    out = tmp_path / "out"
    command = ["detect", *map(str, clips), "--ray", cluster.address, "-o", str(out), "--threads", "1",
               "--chunk-frames", str(CHUNK), "--no-progress"]
    parts = out / distributed.PARTS
    _kill_driver_once(command, parts, "*.npz")
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"]
    kept = len(list(parts.rglob("*.npz")))
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "range(s) resumed from .parts/" in err or "already complete" in err, err
    assert kept >= 1
    for clip in clips:
        rows = _rows(out / f"{clip.stem}.jsonl")
        assert [r["frame"] for r in rows] == list(range(CLIP_FRAMES))
        assert rows == reference[clip.stem]
    assert json.loads((out / "manifest.json").read_text())["complete"]


LABEL_CHUNK = 15  # frames per range of label --ray --dedup 0: 6 ranges per clip
LABEL_EVERY = 3


def _label_args(teacher: Path, out: Path, *sources) -> list[str]:
    """label with one teacher on the full frame (the views are label's own tests): small, and the same settings for
    the single process and the Ray job."""
    return ["label", *map(str, sources), "--teacher", str(teacher), "-o", str(out), "--every", str(LABEL_EVERY),
            "--dedup", "0", "--no-tiles", "--flip", "none", "--threads", "1", "--no-progress"]


def _dataset(folder: Path) -> dict:
    """Everything a dataset holds: labels.csv's text, each image's bytes, sources.json."""
    return {"labels.csv": (folder / "labels.csv").read_text(),
            "images": {p.name: p.read_bytes() for p in sorted((folder / "images").iterdir())},
            "sources.json": json.loads((folder / "sources.json").read_text())}


@pytest.fixture(scope="module")
def label_inputs(clips, udacity_dir, tmp_path_factory) -> list[Path]:
    """Both clips and a folder of real images with an unreadable file."""
    images = tmp_path_factory.mktemp("label") / "stills"
    shutil.copytree(udacity_dir, images, ignore=shutil.ignore_patterns("*.txt", "*.md"))
    (images / "test3b.jpg").write_bytes(b"not a jpeg")
    return [*clips, images]


@pytest.fixture(scope="module")
def label_reference(label_inputs, teacher_path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("label_single") / "dataset"
    assert main(_label_args(teacher_path, out, *label_inputs)) == 0
    return _dataset(out)


def test_label_ray_equals_single_process(cluster, label_inputs, label_reference, teacher_path, tmp_path, capsys):
    """label --ray --dedup 0: two clips in frame ranges, a folder as one task: labels.csv, every image's bytes and
    sources.json equal single-process label's; the same command again does nothing; bad options are one line."""
    out = tmp_path / "dataset"
    command = [*_label_args(teacher_path, out, *label_inputs), "--ray", cluster.address,
               "--chunk-frames", str(LABEL_CHUNK)]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert _dataset(out) == label_reference
    assert len(label_reference["images"]) >= 20 and label_reference["labels.csv"].count("\n") > 40
    assert "ray: 3 source(s) done, 0 already complete (skipped), 1 skipped" in err
    assert "test3b.jpg: not an image" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and [len(s["ranges"]) for s in manifest["sources"]] == [6, 6, 1]
    assert main(command) == 0
    assert "holds the complete dataset of this job already" in capsys.readouterr().err
    assert _dataset(out) == label_reference
    # A source redone later (its file changed): labels.csv is rebuilt with the other sources' kept rows.
    os.utime(label_inputs[0], (time.time(), time.time() + 5))
    assert main(command) == 0
    assert "ray: 1 source(s) done, 2 already complete (skipped)" in capsys.readouterr().err
    assert _dataset(out) == label_reference
    for extra, words in ((["--max-frames", "3"], "--max-frames counts frames in order"),
                         (["--conf", "0.5"], "holds a run with other settings")):
        assert main([*command, *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], lines


def test_label_driver_killed_then_resumed(cluster, label_inputs, label_reference, teacher_path, tmp_path, capsys):
    """The label driver killed outright mid-job, then the same command: the dataset equals one process's."""
    out = tmp_path / "dataset"
    command = [*_label_args(teacher_path, out, *label_inputs), "--ray", cluster.address,
               "--chunk-frames", str(LABEL_CHUNK)]
    _kill_driver_once(command, out / distributed.PARTS, "*.json")
    assert not (out / "labels.csv").exists() and not json.loads((out / "manifest.json").read_text())["complete"]
    assert main(command) == 0
    assert "range(s) resumed from .parts/" in capsys.readouterr().err
    assert _dataset(out) == label_reference


def test_ray_data_map_batches(cluster, udacity_dir, tmp_path):
    """DetectBatch in a user's Ray Data pipeline (read_images -> map_batches) gives detect's boxes. One actor of one
    CPU: on this 2-CPU cluster a second one would leave no CPU for the read tasks (Ray Data waits forever)."""
    single = {r["source"]: r for r in _single(udacity_dir, tmp_path / "single.jsonl")}
    ds = ray.data.read_images(str(udacity_dir), include_paths=True)
    rows = ds.map_batches(distributed.DetectBatch, fn_constructor_kwargs={"threads": 1},
                          compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_size=2).take_all()
    assert len(rows) == len(single) == 6
    for row in rows:
        want = single[Path(row["path"]).name]["detections"]
        assert [round(float(s), 4) for s in row["scores"]] == [round(d["score"], 4) for d in want]
        got = [[round(float(v), 2) for v in box] for box in row["boxes"]]
        assert got == [[round(v, 2) for v in d["box"]] for d in want]
        assert row["labels"] == ",".join(d["label"] for d in want)


def test_refusals_in_one_line(clips, tmp_path, capsys):
    """Options that do not go together are one line and exit code 2, before Ray starts."""
    cases = [
        ([str(clips[0]), str(clips[1]), "--jsonl", str(tmp_path / "x.jsonl")], "one detect takes one SOURCE"),
        ([str(clips[0]), "--workers", "2", "--jsonl", str(tmp_path / "x.jsonl")], "--workers goes with --ray"),
        ([str(clips[0]), "--ray"], "pass -o OUTDIR"),
        ([str(clips[0]), "--ray", "-o", str(tmp_path / "o"), "--csv", str(tmp_path / "x.csv")], "--table csv"),
        (["0", str(clips[0]), "--ray", "-o", str(tmp_path / "o"), "--max-frames", "3"], "--max-frames is for one"),
    ]
    for argv, message in cases:
        assert main(["detect", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("a user's file")
    assert main(["detect", str(clips[0]), "--ray", "-o", str(tmp_path / "full")]) == 2
    assert "is not empty and holds no manifest.json" in capsys.readouterr().err
