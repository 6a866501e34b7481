"""Label fleets of footage on a Ray cluster: `fastyolo label SOURCES... --teacher T.onnx --ray [ADDRESS] -o DATASET`.

The same dataset as the single-process `fastyolo label` (labels.csv, images/, sources.json: the same files, rows
and records), made by Ray actors that each hold the teachers (fastyolo.teacher_views.Ensemble) and label one task
at a time through the command's own `SourceLabeller`. The near-duplicate test (`--dedup`, on by default)
compares each frame with the last one kept from its source, so each source is then one task; with `--dedup 0`
long videos are cut into ranges of `chunk_frames` (a worker seeks to the range's first frame). A folder of
images is one task (its files are numbered by how many before them could be read).

The driver writes each task's JPEGs into DATASET/images/ as it comes back, then the task's rows and records into
DATASET/.parts/ (atomically: what a stopped run resumes from), and labels.csv and sources.json once every source
is done, in the sources' order, as one process would; DATASET/manifest.json holds the settings and each source's
state. Running the same command again resumes: what is in .parts/ is kept, the rest is redone. .parts/ stays
beside the dataset (rows only, small): a later run that redoes a source (it failed, or its file changed)
rebuilds labels.csv from it. The JPEGs travel through Ray's object store, so DATASET need only be reachable from
the driver.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fastyolo import distributed
from fastyolo import teacher_views as views
from fastyolo.commands.label import CSV_HEADER, DEFAULT_DEDUP, SourceLabeller, Summary, check_placement, dataset_manifest
from fastyolo.distributed import JobSummary, Source
from fastyolo.errors import FastYoloError, UsageError
from fastyolo.fileio import atomic_path, check_outputs, file_identity, write_text
from fastyolo.teacher import DEFAULT_IOU

DATASET_FILES = ("labels.csv", "sources.json")


@dataclass(frozen=True)
class LabelOptions:
    """What every worker needs to label frames exactly as `fastyolo label` does."""

    teachers: tuple[str, ...]
    teacher_weights: tuple[float, ...] | None = None
    every: int = 1
    conf: float = views.DEFAULT_CONF
    tiles: bool = views.DEFAULT_TILES
    overlap: float = views.DEFAULT_OVERLAP
    zooms: tuple[float, ...] = views.DEFAULT_TILE_ZOOMS
    flip: str = views.DEFAULT_FLIP
    fusion: str = views.DEFAULT_FUSION
    fusion_iou: float = views.DEFAULT_FUSION_IOU
    view_conf: float = views.DEFAULT_VIEW_CONF
    iou: float = DEFAULT_IOU
    class_aware_nms: bool = False
    dedup: float = DEFAULT_DEDUP
    threads: int = 1  # each teacher's runtime threads = the actor's num_cpus
    chunk_frames: int = distributed.DEFAULT_CHUNK

    @classmethod
    def from_args(cls, args: argparse.Namespace, threads: int, chunk_frames: int) -> LabelOptions:
        weights = None if args.teacher_weights is None else tuple(float(w) for w in args.teacher_weights)
        return cls(tuple(str(t) for t in args.teacher), weights, every=args.every, conf=args.conf, tiles=args.tiles,
                   overlap=args.tile_overlap, zooms=tuple(args.tile_zoom), flip=args.flip, fusion=args.fusion,
                   fusion_iou=args.fusion_iou, view_conf=args.view_conf, iou=args.iou,
                   class_aware_nms=args.class_aware_nms, dedup=args.dedup, threads=threads, chunk_frames=chunk_frames)

    def settings(self) -> dict:
        """What a resumed run must share with the run that wrote the manifest (not the workers' count)."""
        return {**asdict(self), "teachers": [os.path.realpath(t) for t in self.teachers],
                "teacher_identities": [file_identity(t) for t in self.teachers],
                "teacher_weights": None if self.teacher_weights is None else list(self.teacher_weights),
                "zooms": list(self.zooms)}  # as JSON reads it back: a tuple never equals the manifest's list

    def namespace(self) -> argparse.Namespace:
        """The fields sources.json takes from the command line."""
        return argparse.Namespace(every=self.every, dedup=self.dedup, conf=self.conf)


def _ensemble(options: LabelOptions):
    from fastyolo.teacher import Teacher
    from fastyolo.teacher_views import Ensemble

    teachers = [Teacher(Path(path), conf=options.view_conf, iou=options.iou, class_agnostic=not options.class_aware_nms,
                        threads=options.threads) for path in options.teachers]
    return Ensemble(teachers, weights=None if options.teacher_weights is None else list(options.teacher_weights),
                    tiles=options.tiles, overlap=options.overlap, zooms=options.zooms, flip=options.flip,
                    fusion=options.fusion, fusion_iou=options.fusion_iou, view_conf=options.view_conf, conf=options.conf)


class LabelWorker:
    """The teachers and the frames of one task at a time (a Ray actor: `ray.remote(...)(LabelWorker)`)."""

    def __init__(self, options: LabelOptions):
        self.options = options
        self.ensemble = _ensemble(options)

    def run(self, source: Source, start: int, stop: int | None) -> dict:
        """The labelled frames of [start, stop) of `source`; a bad file is an "error", not a raise."""
        try:
            labeller = SourceLabeller(self.ensemble, source.spec, source.name, self.options.every, self.options.dedup)
            done, skipped, note = [], [], None
            if source.kind == "video":
                frames = _VideoRange(source, start, stop)
            else:
                from fastyolo.sources import ImageSource

                images = ImageSource([Path(p) for p in source.paths])
                frames = iter(images)
            for frame in frames:
                labelled = labeller.label(frame)
                if labelled is not None:
                    done.append(labelled)
            if source.kind == "video":
                note = frames.note
            else:
                skipped = [(str(path), why) for path, why in images.skipped]
        except FastYoloError as exc:
            return {"source": source.name, "start": start, "error": str(exc).splitlines()[0]}
        s = labeller.summary
        return {"source": source.name, "start": start, "error": None, "note": note, "skipped": skipped,
                "pid": os.getpid(), "jpegs": [(d.name, d.jpeg) for d in done],
                "rows": [row for d in done for row in d.rows], "records": [d.record for d in done],
                "counts": {k: getattr(s, k) for k in ("read", "not_taken", "duplicates", "empty", "written")},
                "boxes": dict(s.boxes), "views": labeller.views, "described": self.ensemble.describe()}


class _VideoRange:
    """Frames [start, stop) of a video as `Frame`s (absolute indices), by seeking to `start`; `.note` afterwards:
    the reader's note if the stream ended before its header's frame count."""

    def __init__(self, source: Source, start: int, stop: int | None):
        self.source, self.start, self.stop, self.note = source, start, stop, None

    def __iter__(self) -> Iterator:
        from fastyolo.fileio import VideoReader
        from fastyolo.sources import Frame

        with VideoReader(self.source.paths[0], loop=False, what="a video", decode_threads=1) as reader:
            if self.start:
                reader.seek(self.start)  # to the key frame before, decoding on to `start` (tested exact for detect)
            index = self.start
            while self.stop is None or index < self.stop:
                image = reader.read()
                if image is None:
                    break
                yield Frame(image, index)
                index += 1
            self.note = reader.truncated() if self.stop is None else None


def _part_path(output: Path, source: Source, start: int, stop: int | None) -> Path:
    return distributed._part_path(output, source, start, stop).with_suffix(".json")


class _LabelJob(distributed._Job):
    worker = LabelWorker
    desc = "label --ray"

    def __init__(self, output: Path, sources: list[Source], options: LabelOptions, manifest: dict | None,
                 summary: JobSummary):
        super().__init__(output, sources, options, manifest, summary)
        self.completed: dict[str, list[dict]] = {}  # name -> its parts in range order, once all are in

    def _output_of(self, source: Source) -> str:
        return "labels.csv"

    def _written(self, source: Source) -> bool:  # complete only once the dataset itself is written
        return all((self.output / name).is_file() for name in DATASET_FILES)

    def _worker_args(self) -> tuple:
        return (self.options,)

    def _uses_gpu(self) -> bool:
        return False

    def _load(self, source: Source, start: int, stop: int | None) -> dict | None:
        try:
            return json.loads(_part_path(self.output, source, start, stop).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # none, or cut short: redone

    def _store(self, source: Source, start: int, stop: int | None, part: dict) -> int:
        images = self.output / "images"
        images.mkdir(exist_ok=True)
        for name, jpeg in part.pop("jpegs"):  # the images before the part that lists them: a stop stays consistent
            with atomic_path(images / name) as tmp:
                jpeg.tofile(tmp)
        write_text(_part_path(self.output, source, start, stop), json.dumps(part) + "\n")
        self.summary.frames += part["counts"]["read"]
        return part["counts"]["read"] + len(part["skipped"])

    def _finish(self, source: Source, parts: dict[int, dict]) -> None:
        self.completed[source.name] = [parts[start] for start, _ in source.ranges]
        self.state[source.name] = "labelled"
        self.summary.done.append(source.spec)
        self.write_manifest()

    def run(self, address: str | None, workers: int | None, progress: bool) -> JobSummary:
        super().run(address, workers, progress)
        states = self.state.values()
        if all(state != "partial" for state in states) and (
                any(state == "labelled" for state in states) or not self._written(self.sources[0])):
            self._write_dataset()
        return self.summary

    def _write_dataset(self) -> None:
        """labels.csv and sources.json from every source's parts, in the sources' order, as one process writes them."""
        per_source, frames, views, described, rows = [], [], {}, None, []
        label_summary = Summary()
        for s in self.sources:
            if self.state[s.name] == "failed":  # reported, not in the dataset
                continue
            # A source of an earlier run's dataset: its rows from .parts/, kept for this (a source redone since).
            parts = self.completed.get(s.name) or [self._load(s, start, stop) for start, stop in s.ranges]
            if any(part is None for part in parts):
                raise FastYoloError(f"{self.output / distributed.PARTS / s.name} lost ranges of {s.spec}: label into a "
                                    "new folder")
            info = {"source": s.spec, "kind": s.kind, "name": s.name, "frames_written": 0}
            for part in parts:
                rows += part["rows"]
                frames += part["records"]
                info["frames_written"] += len(part["records"])
                for key, value in part["views"].items():
                    views.setdefault(key, value)
                described = described or part["described"]
                label_summary.add(Summary(**part["counts"], boxes=part["boxes"]))
                self.summary.skipped += [(path, why) for path, why in part["skipped"]]
                if part.get("note"):
                    self.summary.notes.append(part["note"])
            per_source.append(info)
        if described is None:
            return  # no source could be labelled: nothing to write
        with atomic_path(self.output / "labels.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            table = csv.writer(f)
            table.writerow(CSV_HEADER)
            table.writerows(rows)
        manifest = dataset_manifest(described, views, self.options.namespace(), True, per_source, frames)
        write_text(self.output / "sources.json", json.dumps(manifest, indent=1) + "\n")
        for s in self.sources:
            if self.state[s.name] == "labelled":
                self.state[s.name] = "complete"
        self.write_manifest()
        self.label_summary = label_summary


def label(sources: Sequence[str | os.PathLike], output: str | os.PathLike, options: LabelOptions, *,
          address: str | None = None, workers: int | None = None, progress: bool = True
          ) -> tuple[JobSummary, Summary | None]:
    """Label every source on a Ray cluster into the dataset folder `output`; run it again to resume.

    Returns the job's summary and the dataset's counts (frames, boxes; None when this run wrote no dataset:
    it was complete already, or no source could be labelled)."""
    for path in options.teachers:
        if not Path(path).is_file():
            raise UsageError(f"teacher model not found: {path}")
    output = Path(output)
    planned, bad = distributed.plan_sources([os.fspath(s) for s in sources], options.chunk_frames,
                                            whole_videos=options.dedup > 0, whole_folders=True)
    manifest = distributed.read_manifest(output, options.settings(), what="a dataset")
    inputs = [p for s in planned for p in s.paths] + list(options.teachers)
    check_placement(output, [Path(os.fspath(s)) for s in sources] + [Path(p) for p in inputs])
    check_outputs([("-o", output / name) for name in (*DATASET_FILES, distributed.MANIFEST)], inputs)
    summary = JobSummary(skipped=list(bad))
    if not planned:
        raise FastYoloError("none of the sources can be read: " + "; ".join(f"{s}: {r}" for s, r in bad))
    job = _LabelJob(output, planned, options, manifest, summary)
    job.run(address, workers, progress)
    return summary, getattr(job, "label_summary", None)
