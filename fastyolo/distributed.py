"""Detect in fleets of footage on a Ray cluster: `fastyolo detect SOURCES... --ray [ADDRESS] -o OUTDIR`.

The sources (videos, image folders, globs) become tasks: a long video is cut into frame ranges of
`chunk_frames` (a worker seeks to the range's first frame and decodes on from there), a folder into
runs of as many images; with tracking or annotated videos a video is one task (a tracker needs its
frames in order, an encoder its whole stream). Each Ray worker is an actor holding one `Detector`
(on the CPU with `threads` = the actor's `num_cpus`; a TensorRT plan or a torch checkpoint gets
`num_gpus=1`), fed by Ray's `ActorPool`. A worker killed mid-task is restarted by Ray and the task
run again (`max_restarts`, `max_task_retries`).

Outputs, in OUTDIR: one `<name>.jsonl` (or `.csv`) per source, written by the same sinks as the
single-process `detect` (fastyolo.writers), frame by frame the same rows, into a temporary file
renamed into place once every range of the source is in; `manifest.json` (the settings, every source
and its state); `.parts/` (each finished range as it comes back, atomically: what a stopped run
resumes from, removed as a source completes). Running the same command again resumes: complete
sources are skipped, the ranges of partial ones that are not in `.parts/` are redone, so every frame
is written exactly once. Sources that cannot be read are reported in one line each and never stop
the job.

For a Ray Data pipeline of your own, `DetectBatch` is a `map_batches` callable class:

    ds = ray.data.read_images("frames/", include_paths=True)
    ds = ds.map_batches(DetectBatch, fn_constructor_kwargs={"conf": 0.3}, batch_size=16,
                        compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastyolo import cfg
from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError, MissingDependencyError, UsageError
from fastyolo.fileio import atomic_path, check_outputs, file_identity, write_text

DEFAULT_CHUNK = cfg.RAY_CHUNK_FRAMES
MANIFEST = "manifest.json"
PARTS = ".parts"
TABLES = ("jsonl", "csv")
MAX_TASK_RETRIES = 2  # a range whose worker died this many more times is reported, not retried forever
MANIFEST_VERSION = 1


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs Ray: pip install 'fastyolo[ray]'") from None
    return ray


# ---------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Options:
    """What every worker needs to run frames exactly as `fastyolo detect` does."""

    model: str
    backend: str = "auto"
    precision: str = "fp32"
    conf: float = cfg.CONF
    iou: float = cfg.IOU
    tiles: str = cfg.TILES
    threads: int = 1  # the runtime's threads = the actor's num_cpus
    track: bool = False
    smooth: str = "kalman"
    classes: tuple[int, ...] | None = None
    table: str = "jsonl"
    annotate: bool = False  # annotated video per video source (one task per video), images into OUTDIR/<name>/
    chunk_frames: int = DEFAULT_CHUNK

    def settings(self) -> dict:
        """What a resumed run must share with the run that wrote the manifest (not the workers' count)."""
        model = Path(self.model)
        return {**asdict(self), "model": os.path.realpath(model), "model_identity": file_identity(model),
                "classes": None if self.classes is None else list(self.classes)}


@dataclass
class Source:
    spec: str  # as given
    name: str  # output stem, unique in the job
    kind: str  # "video" | "images"
    identity: str  # path, size and mtime: a changed file is redone
    frames: int  # a video's header count (0: unknown), or the number of image files
    paths: list[str] = field(default_factory=list)  # image files (images) or [the video]
    fps: float | None = None
    ranges: list[tuple[int, int | None]] = field(default_factory=list)  # [start, stop) ; stop None: to the end

    def describe(self) -> dict:
        return {"spec": self.spec, "name": self.name, "kind": self.kind, "identity": self.identity,
                "frames": self.frames, "ranges": [list(r) for r in self.ranges]}


def _ranges(count: int, chunk: int, whole: bool) -> list[tuple[int, int | None]]:
    """[start, stop) ranges of `chunk` covering `count` items; the last one open (a header can undercount)."""
    if whole or count <= chunk:
        return [(0, None)]
    starts = list(range(0, count, chunk))
    return [(s, s + chunk) for s in starts[:-1]] + [(starts[-1], None)]


def plan_sources(specs: Sequence[str], chunk: int, whole_videos: bool = False, whole_folders: bool = False
                 ) -> tuple[list[Source], list[tuple[str, str]]]:
    """Open every SOURCE to plan its tasks (ranges of `chunk` frames or images, or the `whole_*` source as one);
    unreadable ones come back as (spec, reason), never raised."""
    from fastyolo.commands.label import _stem
    from fastyolo.sources import open_source

    sources, bad, used = [], [], {}
    for spec in specs:
        if spec.strip().isdigit() and not Path(spec).exists():
            bad.append((spec, "a camera cannot be split across a cluster: run fastyolo detect on it without --ray"))
            continue
        try:
            with open_source(spec) as opened:
                stem = _stem(spec, opened)
                if opened.kind == "video":
                    path = str(opened.paths[0])
                    source = Source(spec, stem, "video", file_identity(path), len(opened), [path], opened.fps,
                                    _ranges(len(opened), chunk, whole_videos))
                else:
                    paths = [str(p) for p in opened.paths]
                    ident = "|".join(_identity_or_missing(p) for p in paths)
                    source = Source(spec, stem, "images", ident, len(paths), paths, None,
                                    _images_ranges(len(paths), chunk, whole_folders))
        except FastYoloError as exc:
            bad.append((spec, str(exc).splitlines()[0]))
            continue
        used[stem] = used.get(stem, 0) + 1
        if used[stem] > 1:  # two sources of one name (a/clip.mp4, b/clip.mp4): kept apart
            source.name = f"{stem}_{used[stem]}"
        sources.append(source)
    return sources, bad


def _images_ranges(count: int, chunk: int, whole: bool) -> list[tuple[int, int | None]]:
    if whole or count <= chunk:
        return [(0, count)]
    return [(s, min(s + chunk, count)) for s in range(0, count, chunk)]


def _identity_or_missing(path: str) -> str:
    try:
        return file_identity(path)
    except OSError:  # a broken link: listed as unreadable by the worker, as detect does
        return f"{path}:missing"


# ---------------------------------------------------------------------------------------------- the worker


class DetectWorker:
    """One Detector and the frames of one task at a time (a Ray actor: `ray.remote(...)(DetectWorker)`)."""

    def __init__(self, options: Options, output: str):
        from fastyolo.detector import Detector

        self.options, self.output = options, Path(output)
        self.detector = Detector(options.model, backend=options.backend, precision=options.precision,
                                 conf=options.conf, iou=options.iou, threads=options.threads, tiles=options.tiles)
        self.keep = None if options.classes is None else np.array(options.classes, np.int32)

    def run(self, source: Source, start: int, stop: int | None) -> dict:
        """The detections of frames [start, stop) of `source`, packed; a bad file is an "error", not a raise."""
        try:
            if source.kind == "video":
                return self._video(source, start, stop)
            return self._images(source, start, stop)
        except FastYoloError as exc:
            return {"source": source.name, "start": start, "error": str(exc).splitlines()[0]}

    def _tracker(self, fps: float | None):
        from fastyolo.track import Tracker

        return Tracker(conf=self.detector.conf, fps=fps or 30.0, smooth=self.options.smooth) if self.options.track else None

    def _video(self, source: Source, start: int, stop: int | None) -> dict:
        import contextlib

        from fastyolo.commands.detect import frame_detections
        from fastyolo.draw import annotate
        from fastyolo.fileio import VideoReader
        from fastyolo.prefetch import prefetch
        from fastyolo.writers import VideoSink

        results: list[tuple[int, Detections]] = []
        with VideoReader(source.paths[0], loop=False, what="a video", decode_threads=1) as reader, \
                contextlib.ExitStack() as stack:
            if start:
                reader.seek(start)  # OpenCV seeks to the key frame before and decodes on to `start` (tested exact)
            tracker = self._tracker(reader.fps)

            def frames() -> Iterator[tuple[int, np.ndarray]]:
                index = start
                while stop is None or index < stop:
                    image = reader.read()
                    if image is None:
                        return
                    yield index, image
                    index += 1

            sink = None
            pairs = prefetch(frames(), lambda item: self.detector.prepare(item[1]))
            try:
                for (index, image), prepared in pairs:
                    dets = frame_detections(self.detector, tracker, self.keep, image, prepared)
                    results.append((index, dets))
                    if self.options.annotate:
                        if sink is None:
                            size = (image.shape[1], image.shape[0])
                            sink = stack.enter_context(VideoSink(self.output / f"{source.name}.mp4", reader.fps, size))
                        sink.write(annotate(image, dets))
            finally:
                pairs.close()
            note = reader.truncated() if stop is None else None
        return _pack(source.name, start, results, [], note)

    def _images(self, source: Source, start: int, stop: int | None) -> dict:
        from fastyolo.commands.detect import frame_detections
        from fastyolo.draw import annotate
        from fastyolo.fileio import link_problem, read_image
        from fastyolo.writers import ImageSink

        paths = [Path(p) for p in source.paths]
        sink = ImageSink(self.output / source.name, paths) if self.options.annotate else None
        tracker = self._tracker(None)
        results, skipped = [], []
        for position in range(start, len(paths) if stop is None else stop):
            image = read_image(paths[position])
            if isinstance(image, str):
                skipped.append((str(paths[position]), link_problem(paths[position]) or image))
                continue
            dets = frame_detections(self.detector, tracker, self.keep, image)
            results.append((position, dets))
            if sink is not None:
                sink.write(annotate(image, dets), paths[position])
        return _pack(source.name, start, results, skipped, None)


def _pack(name: str, start: int, results: list[tuple[int, Detections]], skipped: list, note: str | None) -> dict:
    """Detections of a range as flat arrays (small to ship and to store as one .npz)."""
    tracked = any(d.track_ids is not None for _, d in results)
    return {
        "source": name, "start": start, "error": None, "note": note, "skipped": skipped, "pid": os.getpid(),
        "positions": np.array([i for i, _ in results], np.int64),
        "counts": np.array([len(d) for _, d in results], np.int64),
        "boxes": np.concatenate([d.boxes for _, d in results]) if results else np.zeros((0, 4), np.float32),
        "scores": np.concatenate([d.scores for _, d in results]) if results else np.zeros(0, np.float32),
        "class_ids": np.concatenate([d.class_ids for _, d in results]) if results else np.zeros(0, np.int32),
        "track_ids": (np.concatenate([d.track_ids for _, d in results]) if tracked else None),
    }


def _unpack(part: dict) -> Iterator[tuple[int, Detections]]:
    offsets = np.concatenate([[0], np.cumsum(part["counts"])])
    track = part.get("track_ids")
    for k, position in enumerate(part["positions"]):
        a, b = offsets[k], offsets[k + 1]
        yield int(position), Detections(part["boxes"][a:b], part["scores"][a:b], part["class_ids"][a:b],
                                        None if track is None else track[a:b])


# ---------------------------------------------------------------------------------------------- parts on disk


def _part_path(output: Path, source: Source, start: int, stop: int | None) -> Path:
    return output / PARTS / source.name / f"{start:010d}-{'end' if stop is None else f'{stop:010d}'}.npz"


def _save_part(path: Path, part: dict) -> None:
    meta = {"skipped": part["skipped"], "note": part["note"]}
    arrays = {k: part[k] for k in ("positions", "counts", "boxes", "scores", "class_ids")}
    if part["track_ids"] is not None:
        arrays["track_ids"] = part["track_ids"]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a kill mid-write leaves no part that looks done
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def _load_part(path: Path) -> dict | None:
    try:
        with np.load(path) as data:
            part = {k: data[k] for k in data.files if k != "meta"}
            part.update(json.loads(str(data["meta"])))
    except (OSError, ValueError, KeyError):
        return None  # unreadable: redone
    part.setdefault("track_ids", None)
    return part


def _write_table(output: Path, source: Source, parts: list[dict], table: str) -> Path:
    """The source's JSONL/CSV from its ranges in order, through detect's own sinks, renamed into place at the end."""
    from fastyolo.sources import unique_names
    from fastyolo.writers import CsvSink, JsonlSink

    target = output / f"{source.name}.{table}"
    names = unique_names([Path(p) for p in source.paths]) if source.kind == "images" else {}
    with atomic_path(target) as tmp:
        sink = (CsvSink if table == "csv" else JsonlSink)(tmp)
        try:
            index = 0  # images: detect numbers the readable images in order (skipped files take no number)
            for part in parts:
                for position, dets in _unpack(part):
                    if source.kind == "video":
                        sink.write(position, dets)
                    else:
                        sink.write(index, dets, names[Path(source.paths[position])])
                        index += 1
        finally:
            sink.close()
    return target


# ---------------------------------------------------------------------------------------------- the job


@dataclass
class JobSummary:
    """What a job did: sources written now or earlier, sources and files skipped, frames and seconds."""

    done: list[str] = field(default_factory=list)  # sources completed by this run
    already: list[str] = field(default_factory=list)  # complete before this run (resumed)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source or file, reason)
    notes: list[str] = field(default_factory=list)
    frames: int = 0  # frames detected by this run
    resumed_ranges: int = 0  # ranges found done in .parts/
    seconds: float = 0.0
    workers: int = 0
    outputs: list[Path] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [f"ray: {len(self.done)} source(s) done, {len(self.already)} already complete (skipped), "
               f"{len(self.skipped)} skipped; {self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} frames/s) "
               f"on {self.workers} worker(s)" + (f"; {self.resumed_ranges} range(s) resumed from .parts/"
                                                 if self.resumed_ranges else "")]
        out += [f"  skipped {what}: {why}" for what, why in self.skipped]
        out += [f"warning: {note}" for note in self.notes]
        return out


def read_manifest(output: Path, settings: dict, what: str = "one file per source") -> dict | None:
    """OUTDIR's manifest to resume from (None: a new job); refuses a file, a folder that is not ours, or a job with
    other settings."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output} is a file: --ray writes a folder ({what} and {MANIFEST})")
    manifest = None
    if (output / MANIFEST).is_file():
        try:
            manifest = json.loads((output / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UsageError(f"{output / MANIFEST} cannot be read: choose a new -o folder") from None
        if manifest.get("settings") != settings:
            raise UsageError(f"-o {output} holds a run with other settings (model, thresholds, --track, ...): run the "
                             "same command to resume it, or choose a new folder")
    elif output.is_dir() and any(output.iterdir()):
        raise UsageError(f"-o {output} is not empty and holds no {MANIFEST}: choose a new or empty folder")
    return manifest


def _check_output(output: Path, sources: list[Source], options: Options) -> dict | None:
    """Refuse an OUTDIR that is not ours or that a different run wrote; return its manifest to resume, if any."""
    manifest = read_manifest(output, options.settings())
    inputs = [p for s in sources for p in s.paths] + [options.model]
    outputs = [("-o", output / f"{s.name}.{options.table}") for s in sources] + [("-o", output / MANIFEST)]
    if options.annotate:
        outputs += [("-o", output / f"{s.name}.mp4") for s in sources if s.kind == "video"]
    check_outputs(outputs, inputs)
    return manifest


def _connect(address: str | None):
    """ray.init for `address` (None or "local": a Ray on this machine; "auto": RAY_ADDRESS or the local cluster),
    unless this process is connected already; returns whether we connected (and so shut down at the end)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": "warning"}
    if address not in (None, "local"):
        kwargs = {"address": address, "log_to_driver": False, "logging_level": "warning"}
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]} "
                         "(start one with 'ray start --head')") from None
    return True


def detect(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    backend: str = "auto",
    precision: str = "fp32",
    conf: float = cfg.CONF,
    iou: float = cfg.IOU,
    tiles: str = cfg.TILES,
    track: bool = False,
    smooth: str = "kalman",
    classes: Sequence[int] | None = None,
    table: str = "jsonl",
    annotate: bool = False,
    chunk_frames: int = DEFAULT_CHUNK,
    progress: bool = True,
) -> JobSummary:
    """Detect in every source on a Ray cluster into `output` (a folder); run it again to resume.

    address: None/"local" starts Ray on this machine, "auto" or "HOST:PORT" joins a running cluster
    (an already connected process uses its connection). workers: actors to start [the cluster's CPUs
    / threads, at most one per task]; threads: CPUs (runtime threads) per worker.
    """
    if model is None:
        from fastyolo.shipped import shipped_model

        model = shipped_model(precision)
    cfg.check_runtime(model=model, backend=backend, precision=precision, conf=conf, iou=iou, threads=threads)
    cfg.check_at_least("chunk_frames", chunk_frames, 1)
    cfg.check_at_least("workers", workers, 1, optional=True)
    if table not in TABLES:
        raise UsageError(f"table must be one of {', '.join(TABLES)}, got {table!r}")
    options = Options(str(model), backend, precision, float(conf), float(iou), str(cfg.parse_tiles(tiles)), int(threads),
                      bool(track), smooth, None if classes is None else tuple(int(c) for c in classes), table,
                      bool(annotate), int(chunk_frames))
    output = Path(output)
    # A tracker needs a video's frames in order, an encoder its whole stream: one task per video (or folder).
    planned, bad = plan_sources([os.fspath(s) for s in sources], options.chunk_frames,
                                whole_videos=options.track or options.annotate, whole_folders=options.track)
    manifest = _check_output(output, planned, options)
    summary = JobSummary(skipped=list(bad))
    if not planned:
        raise FastYoloError("none of the sources can be read: " + "; ".join(f"{s}: {r}" for s, r in bad))
    return _Job(output, planned, options, manifest, summary).run(address, workers, progress)


class _Job:
    """The driver of a job: plans what is left, feeds the worker actors, keeps each range's result in `.parts/`,
    finishes each source as its last range comes in. `fastyolo.distributed_label` subclasses it for label."""

    worker = DetectWorker
    desc = "detect --ray"

    def __init__(self, output: Path, sources: list[Source], options: Options, manifest: dict | None,
                 summary: JobSummary):
        self.output, self.sources, self.options, self.summary = output, sources, options, summary
        earlier = {s["name"]: s for s in (manifest or {}).get("sources", [])}
        self.state: dict[str, str] = {}
        for s in sources:
            old = earlier.get(s.name)
            same = old is not None and {k: old.get(k) for k in ("spec", "identity", "ranges")} == \
                {"spec": s.spec, "identity": s.identity, "ranges": [list(r) for r in s.ranges]}
            if same and old.get("state") == "complete" and self._written(s):
                self.state[s.name] = "complete"
            else:
                if not same:  # a changed or new source: nothing of an earlier run is reused
                    _remove_parts(output / PARTS / s.name)
                self.state[s.name] = "partial"
        self.skipped_files: dict[str, list] = {}

    def _output_of(self, source: Source) -> str:
        return f"{source.name}.{self.options.table}"

    def _written(self, source: Source) -> bool:
        """Whether a source the manifest calls complete still has its output."""
        return (self.output / self._output_of(source)).is_file()

    def _worker_args(self) -> tuple:
        return self.options, str(self.output.resolve())

    def _uses_gpu(self) -> bool:
        return Path(self.options.model).suffix.lower() in (*cfg.ENGINE_SUFFIXES, ".pt")

    def _load(self, source: Source, start: int, stop: int | None) -> dict | None:
        return _load_part(_part_path(self.output, source, start, stop))

    def _store(self, source: Source, start: int, stop: int | None, part: dict) -> int:
        """Keep a range's result in `.parts/` (atomically); returns the frames and files it covered (the bar's)."""
        _save_part(_part_path(self.output, source, start, stop), part)
        self.summary.frames += len(part["positions"])
        return len(part["positions"]) + len(part["skipped"])

    def write_manifest(self) -> None:
        rows = [{**s.describe(), "state": self.state[s.name], "output": self._output_of(s)}
                for s in self.sources]
        manifest = {"version": MANIFEST_VERSION, "settings": self.options.settings(), "sources": rows,
                    "skipped": [list(b) for b in self.summary.skipped],
                    "complete": all(v in ("complete", "failed") for v in self.state.values())}
        write_text(self.output / MANIFEST, json.dumps(manifest, indent=1) + "\n")

    def run(self, address: str | None, workers: int | None, progress: bool) -> JobSummary:
        from tqdm import tqdm

        self.output.mkdir(parents=True, exist_ok=True)
        todo: list[tuple[Source, int, int | None]] = []
        parts: dict[str, dict[int, dict]] = {s.name: {} for s in self.sources}
        frames_total = frames_before = 0
        for s in self.sources:
            if self.state[s.name] == "complete":
                self.summary.already.append(s.spec)
                continue
            for start, stop in s.ranges:
                width = (stop if stop is not None else max(s.frames, start)) - start
                frames_total += width
                part = self._load(s, start, stop)
                if part is not None:
                    parts[s.name][start] = part
                    frames_before += width
                    self.summary.resumed_ranges += 1
                else:
                    todo.append((s, start, stop))
        self.write_manifest()
        for s in self.sources:  # a source whose every range is in .parts/ (stopped while writing its table)
            if self.state[s.name] == "partial" and len(parts[s.name]) == len(s.ranges):
                self._finish(s, parts[s.name])
        started = time.perf_counter()
        if todo:
            self._dispatch(todo, parts, address, workers, progress, tqdm, frames_total, frames_before)
        self.summary.seconds = time.perf_counter() - started
        self.write_manifest()
        return self.summary

    def _dispatch(self, todo, parts, address, workers, progress, tqdm, total, before) -> None:
        ray = _ray()
        from ray.util.actor_pool import ActorPool

        connected = _connect(address)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            count = workers or max(1, cpus // self.options.threads)
            count = min(count, len(todo))
            remote = ray.remote(num_cpus=self.options.threads, num_gpus=1 if self._uses_gpu() else 0, max_restarts=-1,
                                max_task_retries=MAX_TASK_RETRIES)(self.worker)
            actors = [remote.remote(*self._worker_args()) for _ in range(count)]
            self.summary.workers = count
            pool = ActorPool(actors)
            waiting = {(s.name, start): (s, start, stop) for s, start, stop in todo}
            for s, start, stop in todo:
                pool.submit(lambda actor, task: actor.run.remote(*task), (s, start, stop))
            by_name = {s.name: s for s in self.sources}
            with tqdm(total=total or None, initial=before, desc=self.desc, unit="frame", disable=not progress,
                      dynamic_ncols=True) as bar:
                while pool.has_next():
                    try:
                        part = pool.get_next_unordered()
                    except ray.exceptions.RayError as exc:  # its worker died past the retries: found missing below
                        self.summary.notes.append(f"a range failed: {str(exc).splitlines()[0][:200]}")
                        if isinstance(exc, ray.exceptions.ActorDiedError):  # the pool dropped it: keep the count
                            actors.append(remote.remote(*self._worker_args()))
                            pool.push(actors[-1])
                        continue
                    key = (part["source"], part["start"])
                    s, start, stop = waiting.pop(key)
                    if part["error"]:
                        self.summary.skipped.append((s.spec, part["error"]))
                        self.state[s.name] = "failed"
                        continue
                    bar.update(self._store(s, start, stop, part))
                    parts[s.name][start] = part
                    if self.state[s.name] == "partial" and len(parts[s.name]) == len(s.ranges):
                        self._finish(by_name[s.name], parts[s.name])
            for s, start, stop in waiting.values():
                self.summary.skipped.append((f"{s.spec} frames {start}-{'end' if stop is None else stop}",
                                             f"its worker died {MAX_TASK_RETRIES + 1} times on it (run again to retry)"))
            for actor in actors:
                ray.kill(actor)
        finally:
            if connected:
                ray.shutdown()

    def _finish(self, source: Source, parts: dict[int, dict]) -> None:
        ordered = [parts[start] for start, _ in source.ranges]
        for part in ordered:
            self.summary.skipped += [(path, why) for path, why in part["skipped"]]
        if ordered[-1].get("note"):
            self.summary.notes.append(ordered[-1]["note"])
        self.summary.outputs.append(_write_table(self.output, source, ordered, self.options.table))
        self.state[source.name] = "complete"
        self.summary.done.append(source.spec)
        self.write_manifest()
        _remove_parts(self.output / PARTS / source.name)


def _remove_parts(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.iterdir():
            p.unlink(missing_ok=True)
        folder.rmdir()
        if not any(folder.parent.iterdir()):
            folder.parent.rmdir()


def print_summary(summary: JobSummary) -> None:
    for line in summary.lines():
        print(line, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- Ray Data


class DetectBatch:
    """A `ray.data.Dataset.map_batches` callable class: one Detector per Ray Data actor.

    Takes batches with an "image" column (HxWx3 uint8, RGB as `ray.data.read_images` gives them; `bgr=True`
    for BGR) and returns them without the pixels, plus per row "boxes" (N, 4) float32 x1, y1, x2, y2 in the
    image's pixels, "scores", "class_ids" and "labels" (comma-joined label names).

        ds.map_batches(DetectBatch, fn_constructor_kwargs={"conf": 0.3, "threads": 1}, batch_size=8,
                       compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)

    (leave CPUs for Ray Data's read tasks: actors that hold every CPU starve them)
    """

    def __init__(self, model: str | os.PathLike | None = None, *, conf: float = cfg.CONF, iou: float = cfg.IOU,
                 threads: int = 1, backend: str = "auto", precision: str = "fp32", tiles: str = cfg.TILES,
                 bgr: bool = False):
        from fastyolo.detector import Detector

        self.detector = Detector(model, backend=backend, precision=precision, conf=conf, iou=iou, threads=threads,
                                 tiles=tiles)
        self.bgr = bgr

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        images = batch["image"]
        frames = [np.ascontiguousarray(im if self.bgr else np.asarray(im)[..., ::-1]) for im in images]
        results = self.detector.detect_batch(frames)
        out = {k: v for k, v in batch.items() if k != "image"}
        out["boxes"] = [d.boxes for d in results]
        out["scores"] = [d.scores for d in results]
        out["class_ids"] = [d.class_ids for d in results]
        out["labels"] = np.array([",".join(d.labels) for d in results], dtype=object)
        return out
