"""fastyolo label SOURCE... --teacher T.onnx [--teacher T2.onnx] -o DATASET: label footage with COCO teachers.

Teachers are COCO detectors in the YOLOX or PicoDet ONNX layout (recognised from the file). Each runs on
several views of a frame (the full frame, overlapping tiles enlarged 1.5x, their horizontal flips:
fastyolo.teacher_views), and all their boxes are fused by weighted boxes fusion (fastyolo.fusion).

The dataset is what `fastyolo train`/`eval` and `fastyolo.datasets.load_dataset` read:

    DATASET/labels.csv     crowdAI layout, header xmin,ymin,xmax,ymax,Frame,Label,Preview URL (integer pixels)
    DATASET/images/        one JPEG per labelled frame, named SOURCE_FRAME.jpg (e.g. highway_clip_000123.jpg)
    DATASET/sources.json   every teacher, view and fusion setting, and per frame: source path, frame index, file,
                           boxes

File names carry the source and its frame index so that contiguous segments of a video can be held
out for validation. Frames where the teachers find nothing are not written: a crowdAI CSV cannot list
a frame without boxes, and a teacher's empty frame is as likely a miss as a true negative.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fastyolo import teacher_views as views
from fastyolo.cfg import add_ray_options
from fastyolo.errors import FastYoloError
from fastyolo.layout import CLASS_NAMES
from fastyolo.teacher import DEFAULT_IOU

CSV_HEADER = ["xmin", "ymin", "xmax", "ymax", "Frame", "Label", "Preview URL"]
JPEG_QUALITY = 95
# Near-duplicate test: frames are compared, as grey thumbnails THUMB_WIDTH wide, with the last frame
# kept from the same source; a thumbnail pixel "changed" if it moved by more than CHANGE_LEVEL grey levels.
THUMB_WIDTH = 160
CHANGE_LEVEL = 12
# Default: skip a frame when under 0.1% of the thumbnail changed (about 9 pixels of 160x90). Measured
# on the bundled videos: every frame of the 25 FPS highway clip differs by >= 1.7%, so all are kept;
# the static top-down car-detection clip keeps 194 of 377 (its skipped frames differ by sub-pixel motion).
DEFAULT_DEDUP = 0.001


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "label", help="label images or video with COCO teacher detectors (YOLOX or PicoDet ONNX) into a training dataset",
        description="Run COCO detectors (YOLOX or PicoDet ONNX layout) on the full frame, overlapping tiles enlarged "
                    "1.5x and their flips, fuse their boxes (weighted boxes fusion) and write a dataset fastyolo "
                    "train/eval read: labels.csv (crowdAI), images/, sources.json. COCO car -> Car, truck and bus -> "
                    "Truck, person -> Pedestrian.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="image, folder of images, quoted glob ('frames/*.png') or video file; several are allowed")
    p.add_argument("--teacher", type=Path, action="append", required=True,
                   help="COCO detector .onnx, YOLOX or PicoDet layout (e.g. picodet_s_416_coco.onnx); give it again "
                        "for more teachers, whose boxes are fused")
    p.add_argument("--teacher-weights", default=None, metavar="W1,W2",
                   help="fusion weight of each teacher, in --teacher order [1 each]")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="dataset folder to create (must not exist yet, or be empty)")
    p.add_argument("--every", type=int, default=1, help="label every Nth frame of each source [1]")
    p.add_argument("--conf", type=float, default=views.DEFAULT_CONF,
                   help=f"score a fused box needs to become a label [{views.DEFAULT_CONF}]")
    p.add_argument("--tiles", action=argparse.BooleanOptionalAction, default=views.DEFAULT_TILES,
                   help="also run each teacher on overlapping tiles, enlarged into its input by --tile-zoom "
                        f"(small, distant objects) [{'on' if views.DEFAULT_TILES else 'off'}]")
    p.add_argument("--tile-overlap", type=float, default=views.DEFAULT_OVERLAP,
                   help=f"fraction of a tile shared with its neighbour [{views.DEFAULT_OVERLAP}]")
    p.add_argument("--tile-zoom", type=float, nargs="+", default=list(views.DEFAULT_TILE_ZOOMS), metavar="Z",
                   help="one set of tiles per zoom: tiles of the teacher's input size / Z, enlarged into it (1 is "
                        "native scale; 1.5 shows distant objects 1.5x larger; several zooms give several sets) "
                        f"[{' '.join(f'{z:g}' for z in views.DEFAULT_TILE_ZOOMS)}]")
    p.add_argument("--flip", choices=views.FLIPS, default=views.DEFAULT_FLIP,
                   help="horizontal flips: none, the full frame's, or every view's [%(default)s]")
    p.add_argument("--fusion", choices=views.FUSIONS, default=views.DEFAULT_FUSION,
                   help="how the views' and teachers' boxes are merged: weighted boxes fusion or one pooled NMS "
                        "[%(default)s]")
    p.add_argument("--fusion-iou", type=float, default=views.DEFAULT_FUSION_IOU,
                   help=f"IoU above which boxes of different views are one object [{views.DEFAULT_FUSION_IOU}]")
    p.add_argument("--view-conf", type=float, default=views.DEFAULT_VIEW_CONF,
                   help=f"score a box needs in one view to go into the fusion [{views.DEFAULT_VIEW_CONF}]")
    p.add_argument("--iou", type=float, default=DEFAULT_IOU,
                   help=f"each teacher's own NMS IoU threshold [{DEFAULT_IOU}, as YOLOX's demo]")
    p.add_argument("--class-aware-nms", action="store_true",
                   help="one NMS per COCO class (YOLOX's class-aware variant) instead of the demo's class-agnostic NMS")
    p.add_argument("--dedup", type=float, default=DEFAULT_DEDUP,
                   help="skip a frame when less than this fraction of a 160-px-wide grey thumbnail changed by more than "
                        f"{CHANGE_LEVEL} levels since the last frame kept from its source; 0 keeps every frame "
                        f"[{DEFAULT_DEDUP}]")
    p.add_argument("--max-frames", type=int, default=None, help="stop after writing this many frames")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for each teacher [the runtime's default]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_options(p, module="fastyolo.distributed_label", run="label (the same dataset, plus manifest.json)",
                    actors="teacher", chunk="with --dedup 0, frames per task of a long video (one task per source "
                                            "otherwise)")
    return p


@dataclass
class Summary:
    read: int = 0  # frames decoded
    not_taken: int = 0  # between --every steps
    duplicates: int = 0  # near-duplicates of the last frame kept
    empty: int = 0  # teacher found no Car/Truck/Pedestrian
    written: int = 0
    boxes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASS_NAMES, 0))
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, other: Summary) -> None:
        """Count `other`'s frames and boxes in this one (not its unreadable files: each source lists its own)."""
        for name in ("read", "not_taken", "duplicates", "empty", "written"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, n in other.boxes.items():
            self.boxes[name] += n


def _validate(args: argparse.Namespace) -> None:
    if args.every < 1:
        raise FastYoloError(f"--every must be at least 1 (1 = every frame), got {args.every}")
    if not 0.0 <= args.conf < 1.0:
        raise FastYoloError(f"--conf must be in [0, 1), got {args.conf}")
    if not 0.0 < args.iou <= 1.0:
        raise FastYoloError(f"--iou must be in (0, 1], got {args.iou}")
    if not 0.0 <= args.dedup < 1.0:
        raise FastYoloError(f"--dedup must be a fraction in [0, 1) (0 keeps every frame), got {args.dedup}")
    if args.max_frames is not None and args.max_frames < 1:
        raise FastYoloError(f"--max-frames must be at least 1, got {args.max_frames}")
    for name, value in (("--tile-overlap", args.tile_overlap),):
        if not 0.0 <= value < 1.0:
            raise FastYoloError(f"{name} must be in [0, 1), got {value}")
    views.check_zooms(args.tile_zoom, "--tile-zoom")
    if not 0.0 < args.fusion_iou <= 1.0:
        raise FastYoloError(f"--fusion-iou must be in (0, 1], got {args.fusion_iou}")
    if not 0.0 <= args.view_conf < 1.0:
        raise FastYoloError(f"--view-conf must be in [0, 1), got {args.view_conf}")
    if args.view_conf > args.conf:
        raise FastYoloError(f"--view-conf {args.view_conf:g} is above --conf {args.conf:g}: boxes that could become "
                            "labels would be dropped before the fusion")
    if args.threads is not None and args.threads < 1:
        raise FastYoloError(f"--threads must be at least 1, got {args.threads}")
    if args.teacher_weights is not None:
        try:
            args.teacher_weights = [float(v) for v in str(args.teacher_weights).split(",")]
        except ValueError:
            raise FastYoloError(f"--teacher-weights: expected numbers separated by commas, one per --teacher, got "
                                f"{args.teacher_weights!r}") from None
        if len(args.teacher_weights) != len(args.teacher):
            raise FastYoloError(f"--teacher-weights has {len(args.teacher_weights)} values for {len(args.teacher)} "
                                "--teacher")
        if any(not w > 0 for w in args.teacher_weights):
            raise FastYoloError(f"--teacher-weights must be positive, got {args.teacher_weights}")
    for path in args.teacher:
        if not path.is_file():
            raise FastYoloError(f"teacher model not found: {path} (a COCO YOLOX or PicoDet .onnx, e.g. "
                                "../shared/data/teacher/picodet_s_416_coco.onnx)")


def check_placement(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that is, holds or lies inside an input (its images would become inputs)."""
    out = output.expanduser().resolve()
    for path in inputs:
        src = path.expanduser().resolve()
        if out == src or out in src.parents:
            raise FastYoloError(f"output {output} is or contains the input {path}: choose a new folder outside the inputs")
        if src.is_dir() and src in out.parents:
            raise FastYoloError(f"output {output} is inside the input folder {path}: choose a folder outside the inputs")


def _check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that holds a dataset or other files, or that is, holds or lies inside an input."""
    check_placement(output, inputs)
    out = output.expanduser().resolve()
    if out.exists():
        if not out.is_dir():
            raise FastYoloError(f"output {output} is a file: the dataset needs a new folder")
        held = [n for n in ("labels.csv", "images", "sources.json", "label_2") if (out / n).exists()]
        if held:
            raise FastYoloError(f"output {output} already holds a dataset ({', '.join(held)}): it is never "
                                "overwritten, choose a new folder")
        if any(out.iterdir()):
            raise FastYoloError(f"output {output} is not empty: choose a new or empty folder")


def _stem(spec: str, source) -> str:
    """A file-name-safe name for a source: a video's or single image's stem, a folder's or glob's folder name."""
    if source.kind == "video":
        name = Path(source.name).stem
    elif len(source.paths) == 1 and not Path(spec).is_dir():
        name = source.paths[0].stem
    elif Path(spec).is_dir():
        name = Path(spec).resolve().name
    else:
        name = source.paths[0].parent.resolve().name if source.paths else "images"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "source"


def _thumbnail(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    size = (THUMB_WIDTH, max(1, round(THUMB_WIDTH * h / w)))
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), size, interpolation=cv2.INTER_AREA).astype(np.int16)


def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of thumbnail pixels that differ by more than CHANGE_LEVEL; 1.0 if the sizes differ."""
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b) > CHANGE_LEVEL).mean())


def _integer_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes rounded to whole pixels inside the frame (crowdAI labels are integers); mask of those with area."""
    r = np.rint(boxes).astype(np.int64).clip(0, [width, height, width, height])
    return r, (r[:, 2] > r[:, 0]) & (r[:, 3] > r[:, 1])


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fastyolo.sources import open_source
    from fastyolo.teacher import Teacher
    from fastyolo.teacher_views import Ensemble

    _validate(args)
    if args.ray is not None:
        return _run_ray(args)
    for flag, value in (("--workers", args.workers), ("--chunk-frames", args.chunk_frames)):
        if value is not None:
            raise FastYoloError(f"{flag} goes with --ray")
    opened = []
    try:
        for spec in args.sources:
            if spec.strip().isdigit() and not Path(spec).exists():
                raise FastYoloError(f"{spec}: label reads files (images, folders, globs, videos), not cameras")
            opened.append((spec, open_source(spec)))
        inputs = [Path(spec) for spec, _ in opened if Path(spec).exists()]
        inputs += [p for _, source in opened for p in source.paths]
        _check_output(args.output, inputs)
        teachers = [Teacher(path, conf=args.view_conf, iou=args.iou, class_agnostic=not args.class_aware_nms,
                            threads=args.threads) for path in args.teacher]
        ensemble = Ensemble(teachers, weights=args.teacher_weights, tiles=args.tiles, overlap=args.tile_overlap,
                            zooms=tuple(args.tile_zoom), flip=args.flip, fusion=args.fusion,
                            fusion_iou=args.fusion_iou, view_conf=args.view_conf, conf=args.conf)
        return _label(args, opened, ensemble, tqdm)
    finally:
        for _, source in opened:
            source.close()


@dataclass
class LabelledFrame:
    """One frame's part of the dataset: its JPEG, its labels.csv rows and its sources.json record."""

    name: str  # the file in DATASET/images/
    jpeg: np.ndarray  # encoded bytes
    rows: list[list]  # labels.csv rows
    record: dict  # sources.json "frames" entry


class SourceLabeller:
    """label's steps for the frames of one source, in reading order: --every, near-duplicates, the teachers' fused
    boxes in whole pixels, the JPEG. One per source (the near-duplicate test compares with the last frame kept);
    the single-process command and the Ray workers (fastyolo.distributed_label) both label through it."""

    def __init__(self, ensemble, spec: str, stem: str, every: int, dedup: float):
        self.ensemble, self.spec, self.stem, self.every, self.dedup = ensemble, spec, stem, every, dedup
        self.summary = Summary()
        self.views: dict[str, dict] = {}  # "WxH" -> the views each teacher ran on frames of that size
        self._last = None

    def taken(self, frame) -> bool:
        """Whether `frame` is one of the --every steps (what the progress bar counts)."""
        return frame.index % self.every == 0

    def label(self, frame) -> LabelledFrame | None:
        """The frame's labels, or None (between --every steps, a near-duplicate, or no box), counted in .summary."""
        s = self.summary
        s.read += 1
        if not self.taken(frame):
            s.not_taken += 1
            return None
        thumb = _thumbnail(frame.image) if self.dedup > 0 else None
        if self._last is not None and changed_fraction(thumb, self._last) < self.dedup:
            s.duplicates += 1
            return None
        self._last = thumb
        h, w = frame.image.shape[:2]
        if f"{w}x{h}" not in self.views:
            self.views[f"{w}x{h}"] = {t["path"]: t["views"] for t in self.ensemble.describe(w, h)["teachers"]}
        dets = self.ensemble.detect(frame.image)
        boxes, keep = _integer_boxes(dets.boxes, w, h)
        if not keep.any():
            s.empty += 1
            return None
        name = f"{self.stem}_{frame.index:06d}.jpg"
        ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise FastYoloError(f"OpenCV cannot encode frame {frame.index} of {self.spec} as JPEG")
        rows = []
        for (x1, y1, x2, y2), cid in zip(boxes[keep], dets.class_ids[keep], strict=True):
            rows.append([int(x1), int(y1), int(x2), int(y2), name, CLASS_NAMES[cid], ""])
            s.boxes[CLASS_NAMES[cid]] += 1
        s.written += 1
        record = {"file": name, "source": str(frame.path or self.spec), "frame": frame.index, "boxes": int(keep.sum())}
        return LabelledFrame(name, data, rows, record)


def source_stems(opened: list) -> list[str]:
    """Each source's file-name stem, made unique in the job (two clip.mp4 of two folders: clip, clip_2)."""
    stems, used = [], {}
    for spec, source in opened:
        stem = _stem(spec, source)
        used[stem] = used.get(stem, 0) + 1
        stems.append(stem if used[stem] == 1 else f"{stem}_{used[stem]}")
    return stems


def _run_ray(args: argparse.Namespace) -> int:
    """label SOURCES... --ray [ADDRESS] -o DATASET: the sources as tasks of a Ray job (fastyolo.distributed_label)."""
    from fastyolo import distributed, distributed_label
    from fastyolo.cfg import check_at_least
    from fastyolo.fileio import sigterm_as_interrupt

    if args.max_frames is not None:
        raise FastYoloError("--max-frames counts frames in order in one process; with --ray use --every to label fewer")
    check_at_least("--workers", args.workers, 1, optional=True)
    check_at_least("--chunk-frames", args.chunk_frames, 1, optional=True)
    if args.dedup > 0:
        print("label --ray: one task per source (--dedup compares each frame with the last one kept from its source; "
              "--dedup 0 cuts long videos into frame ranges)", file=sys.stderr)
    options = distributed_label.LabelOptions.from_args(args, args.threads or 1,
                                                      args.chunk_frames or distributed.DEFAULT_CHUNK)
    with sigterm_as_interrupt():  # kill/timeout: the parts done stay on disk, the same command resumes
        job, counts = distributed_label.label(args.sources, args.output, options,
                                              address=None if args.ray == "local" else args.ray,
                                              workers=args.workers, progress=not args.no_progress)
    distributed.print_summary(job)
    if counts is not None:
        _report(args.output, counts, args, interrupted=False)
    elif job.already:
        print(f"{args.output}/ holds the complete dataset of this job already: nothing to do", file=sys.stderr)
    else:
        raise FastYoloError("the dataset was not written: no source could be labelled, or some ranges failed (see the "
                            "lines above; run the same command again to retry them)")
    return 0


def _label(args: argparse.Namespace, opened: list, ensemble, tqdm) -> int:
    out: Path = args.output
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    frames_meta: list[dict] = []
    per_source: list[dict] = []
    views_by_size: dict[str, dict] = {}
    total = sum(-(-len(s) // args.every) for _, s in opened) or None
    bar = tqdm(total=total, desc="label", unit="frame", disable=args.no_progress, dynamic_ncols=True)
    interrupted = True
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as csv_file:
        try:
            rows = csv.writer(csv_file)
            rows.writerow(CSV_HEADER)
            for (spec, source), stem in zip(opened, source_stems(opened), strict=True):
                info = {"source": spec, "kind": source.kind, "name": stem, "frames_written": 0}
                per_source.append(info)
                labeller = SourceLabeller(ensemble, spec, stem, args.every, args.dedup)
                try:
                    for frame in source:
                        bar.update(labeller.taken(frame))
                        done = labeller.label(frame)
                        if done is None:
                            continue
                        done.jpeg.tofile(images_dir / done.name)  # the image before its rows: a stop stays consistent
                        rows.writerows(done.rows)
                        csv_file.flush()
                        frames_meta.append(done.record)
                        info["frames_written"] += 1
                        if args.max_frames and summary.written + labeller.summary.written >= args.max_frames:
                            break
                finally:
                    summary.add(labeller.summary)
                    views_by_size.update({k: v for k, v in labeller.views.items() if k not in views_by_size})
                summary.unreadable += source.skipped
                if args.max_frames and summary.written >= args.max_frames:
                    break
            interrupted = False
        finally:
            bar.close()
            manifest = dataset_manifest(ensemble.describe(), views_by_size, args, not interrupted, per_source,
                                        frames_meta)
            (out / "sources.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            _report(out, summary, args, interrupted)
    if summary.read == 0:
        raise FastYoloError("no frame could be read from the sources (unreadable images or undecodable video)")
    return 0


def dataset_manifest(described: dict, views: dict, args: argparse.Namespace, complete: bool, per_source: list,
                     frames: list) -> dict:
    """DATASET/sources.json: every teacher, view and fusion setting, the sources and every frame written."""
    return {**described, "views": views, "every": args.every, "dedup": args.dedup, "complete": complete,
            "sources": per_source, "frames": frames}


def _report(out: Path, s: Summary, args: argparse.Namespace, interrupted: bool) -> None:
    err = sys.stderr
    stop = " (stopped early)" if interrupted else ""
    boxes = ", ".join(f"{name} {n}" for name, n in s.boxes.items())
    print(f"wrote {s.written} frames, {sum(s.boxes.values())} boxes ({boxes}) to {out}/ "
          f"(labels.csv, images/, sources.json){stop}", file=err)
    print(f"  {s.read} frames read: {s.not_taken} between --every {args.every} steps, {s.duplicates} near-duplicates "
          f"skipped, {s.empty} with no box above --conf {args.conf:g} (not written)", file=err)
    if s.unreadable:
        print(f"  skipped {len(s.unreadable)} unreadable file(s):", file=err)
        for path, reason in s.unreadable:
            print(f"    {path}: {reason}", file=err)
