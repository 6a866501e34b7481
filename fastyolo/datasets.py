"""Labelled driving frames from Udacity (crowdAI, Autti) CSVs or KITTI label_2/ as one list of Samples.

Torch-free (numpy, csv, opencv/pillow) so that `fastyolo eval` works without the [train] extra.

Formats, detected automatically from `labels` or what `data_dir` holds (labels.csv wins over label_2/):

- crowdAI `labels.csv`: comma separated with a header. Udacity's published header reads
  `xmin,xmax,ymin,ymax,Frame,Label,Preview URL` while the values are in xmin,ymin,xmax,ymax order;
  with that header the order is decided from the values (a warning says which), any other header is
  read by column name. Labels Car, Truck, Pedestrian.
- Udacity Autti `labels.csv`: space separated, no header:
  `frame xmin ymin xmax ymax occluded "label" ["attribute"]`, labels car/truck/pedestrian; trafficLight,
  biker, ... are ignored (and counted).
- KITTI `label_2/*.txt` (`type truncated occluded alpha x1 y1 x2 y2 h w l x y z rot_y`), images in
  images/ or image_2/. Car -> Car; Van, Truck -> Truck; Pedestrian, Person_sitting -> Pedestrian;
  Cyclist, Tram, Misc, DontCare are ignored (and counted).

Images are looked up in data_dir/images/, beside labels.csv, then in data_dir itself. Image sizes come
from the file header (pillow's lazy open, EXIF rotation applied as cv2.imread does) so that indexing a
9000-frame Udacity set does not decode 9000 JPEGs; without pillow each image is decoded with OpenCV.

Untrusted files: a frame name must stay inside the folder it is looked up in (no absolute paths, no
`..` out of it; links inside the folders are followed, as a dataset may link its images from elsewhere):
such a row is malformed. An exact duplicate row (same frame, box and label) counts once and is reported.
A truncated JPEG (no end marker; OpenCV would decode it with a grey bottom and a warning on stderr) or
PNG (no IEND chunk) is left out and listed, as a missing image is; `Sample.load_image` refuses one too.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fastyolo.errors import DatasetError
from fastyolo.fileio import link_problem
from fastyolo.layout import CLASS_NAMES

log = logging.getLogger(__name__)

_LOWER_CLASSES = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}  # crowdAI and Autti names
KITTI_CLASSES = {"Car": "Car", "Van": "Truck", "Truck": "Truck", "Pedestrian": "Pedestrian", "Person_sitting": "Pedestrian"}
KITTI_IMAGE_DIRS = ("images", "image_2")
KITTI_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CROWDAI_SWAPPED_HEADER = ["xmin", "xmax", "ymin", "ymax"]


@dataclass
class Sample:
    """One labelled frame. boxes: (K, 4) float32 x1, y1, x2, y2 in the image's pixels, clipped to it;
    class_ids: (K,) int64 indices into fastyolo.CLASS_NAMES. K may be 0 (a valid negative frame)."""

    image_path: Path
    boxes: np.ndarray
    class_ids: np.ndarray
    width: int
    height: int

    def load_image(self) -> np.ndarray:
        """The frame as an HxWx3 uint8 BGR array (as cv2.imread reads it)."""
        image = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {self.image_path}: missing or not an image file")
        problem = truncated(self.image_path)  # changed since load_dataset: not a half-grey frame to train on
        if problem:
            raise DatasetError(f"cannot use image {self.image_path}: {problem} (the file changed after the dataset "
                               "was read: restore it, or read the dataset again to leave it out)")
        return image


@dataclass
class DatasetReport:
    """What load_dataset read, kept and left out."""

    source: str = ""
    format: str = ""
    frames: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASS_NAMES, 0))
    malformed_rows: int = 0  # skipped (skip_malformed=True)
    boxes_clipped: int = 0  # partly outside the image, clipped to it
    boxes_dropped: int = 0  # fully outside the image or zero area after clipping
    missing_images: list[str] = field(default_factory=list)  # frames left out: image missing or unreadable
    truncated_images: list[str] = field(default_factory=list)  # frames left out: image file cut short
    duplicate_boxes: int = 0  # rows repeating a frame's box and label exactly, counted once
    ignored_labels: dict[str, int] = field(default_factory=dict)  # label -> boxes not in CLASS_NAMES
    warnings: list[str] = field(default_factory=list)

    @property
    def boxes(self) -> int:
        return sum(self.boxes_per_class.values())

    def __str__(self) -> str:
        classes = ", ".join(f"{name} {n}" for name, n in self.boxes_per_class.items())
        lines = [f"{self.source} ({self.format}): {self.frames} frames, {self.boxes} boxes ({classes})"]
        if self.ignored_labels:
            ignored = ", ".join(f"{name} {n}" for name, n in sorted(self.ignored_labels.items()))
            lines.append(f"  ignored labels: {ignored}")
        lines.append(
            f"  {self.boxes_clipped} boxes clipped to the image, {self.boxes_dropped} dropped (outside it), "
            f"{self.malformed_rows} malformed rows skipped, {len(self.missing_images)} frames without an image"
        )
        if self.missing_images:
            shown = ", ".join(self.missing_images[:3]) + (" ..." if len(self.missing_images) > 3 else "")
            lines.append(f"  missing images: {shown}")
        if self.truncated_images:
            shown = ", ".join(self.truncated_images[:3]) + (" ..." if len(self.truncated_images) > 3 else "")
            lines.append(f"  {len(self.truncated_images)} truncated images left out: {shown}")
        if self.duplicate_boxes:
            lines.append(f"  {self.duplicate_boxes} duplicate label rows counted once")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# A parsed label: (x1, y1, x2, y2) and a class id.
_Box = tuple[float, float, float, float]


class _Parser:
    """Collects frames -> boxes; raises or counts malformed rows."""

    def __init__(self, report: DatasetReport, skip_malformed: bool):
        self.report, self.skip_malformed = report, skip_malformed
        self.frames: dict[str, list[tuple[_Box, int]]] = {}
        self.seen: set[tuple[str, _Box, str]] = set()  # (frame, box, label) rows read, for duplicates

    def malformed(self, path: Path, line: int, why: str) -> None:
        if not self.skip_malformed:
            raise DatasetError(f"{path}, line {line}: {why} (fix the row, or pass skip_malformed=True / --skip-malformed)")
        self.report.malformed_rows += 1

    def box(self, path: Path, line: int, values: list[str]) -> _Box | None:
        try:
            x1, y1, x2, y2 = (float(v) for v in values)
        except ValueError:
            self.malformed(path, line, f"box coordinates {values} are not numbers")
            return None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            self.malformed(path, line, f"box coordinates {values} are not finite")
            return None
        if x2 < x1 or y2 < y1:
            self.malformed(path, line, f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has xmax < xmin or ymax < ymin")
            return None
        return x1, y1, x2, y2

    def frame(self, path: Path, line: int, name: str) -> str | None:
        """The frame name, normalised, or None (malformed) if it would leave the folder it is looked up in."""
        normal = os.path.normpath(name) if name else name
        if os.path.isabs(name) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
            self.malformed(path, line, f"frame {name!r} is outside the dataset folder (frames are file names "
                                       "relative to images/ or the labels file's folder)")
            return None
        return normal

    def add(self, frame: str | None, box: _Box | None, label: str, class_id: int | None) -> None:
        if frame is None:
            return
        boxes = self.frames.setdefault(frame, [])  # a frame listed only with ignored labels is a negative
        if box is None:
            return
        key = (frame, box, label if class_id is None else CLASS_NAMES[class_id])
        if key in self.seen:  # a repeated row would double the ground truth (recall halves, mAP with it)
            self.report.duplicate_boxes += 1
            return
        self.seen.add(key)
        if class_id is None:
            self.report.ignored_labels[label] = self.report.ignored_labels.get(label, 0) + 1
        else:
            boxes.append((box, class_id))


def _read_crowdai(path: Path, parser: _Parser) -> None:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [h.strip().lower() for h in rows[0]]
    needed = ("xmin", "ymin", "xmax", "ymax", "frame", "label")
    if any(name not in header for name in needed):
        raise DatasetError(f"{path}: the header {rows[0]} lacks one of the crowdAI columns {', '.join(needed)}")
    col = {name: header.index(name) for name in needed}
    coords = [col["xmin"], col["ymin"], col["xmax"], col["ymax"]]
    width = max(col.values()) + 1
    body = [(line, row) for line, row in enumerate(rows[1:], start=2) if any(v.strip() for v in row)]
    if header[:4] == CROWDAI_SWAPPED_HEADER:
        coords = _crowdai_order(path, body, parser.report)
    for line, row in body:
        if len(row) < width:
            parser.malformed(path, line, f"{len(row)} fields, expected at least {width}")
            continue
        box = parser.box(path, line, [row[i].strip() for i in coords])
        label = row[col["label"]].strip()
        frame = parser.frame(path, line, row[col["frame"]].strip())
        parser.add(frame, box, label, _LOWER_CLASSES.get(label.lower()))


def _crowdai_order(path: Path, body: list[tuple[int, list[str]]], report: DatasetReport) -> list[int]:
    """Columns of x1, y1, x2, y2 under Udacity's `xmin,xmax,ymin,ymax` header, decided from the values:
    the published files hold xmin,ymin,xmax,ymax; a file whose values follow the header is read that way."""
    positional, literal = [0, 1, 2, 3], [0, 2, 1, 3]
    bad = {"positional": 0, "literal": 0}
    for _, row in body:
        try:
            a, b, c, d = (float(v) for v in row[:4])
        except ValueError:
            continue
        bad["positional"] += a > c or b > d  # values xmin, ymin, xmax, ymax
        bad["literal"] += a > b or c > d  # values xmin, xmax, ymin, ymax
    use_literal = bad["literal"] < bad["positional"]
    message = (
        f"{path.name}: the header says xmin,xmax,ymin,ymax; the values are read as "
        + ("xmin,xmax,ymin,ymax (as the header says)" if use_literal
           else "xmin,ymin,xmax,ymax (Udacity's known header mix-up)")
    )
    warnings.warn(message, stacklevel=4)
    report.warnings.append(message)
    return literal if use_literal else positional


def _read_autti(path: Path, parser: _Parser) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f, delimiter=" ", quotechar='"', skipinitialspace=True), start=1):
            row = [v for v in row if v != ""]
            if not row:
                continue
            if len(row) < 7:
                parser.malformed(path, line, f"{len(row)} fields, expected `frame xmin ymin xmax ymax occluded label`")
                continue
            label = row[6].strip()
            frame = parser.frame(path, line, row[0])
            parser.add(frame, parser.box(path, line, row[1:5]), label, _LOWER_CLASSES.get(label.lower()))


def _read_kitti(label_dir: Path, parser: _Parser) -> None:
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise DatasetError(f"{label_dir} holds no KITTI label files (*.txt)")
    for path in files:
        parser.frames.setdefault(path.stem, [])
        problem = link_problem(path)
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = problem or (exc.strerror if isinstance(exc, OSError) else "not UTF-8 text")
            raise DatasetError(f"{path}: {why}: fix or remove the label file") from None
        for line, text in enumerate(content.splitlines(), start=1):
            row = text.split()
            if not row:
                continue
            if len(row) < 15:
                parser.malformed(path, line, f"{len(row)} fields, expected 15 (type truncated occluded alpha x1 y1 ...)")
                continue
            name = KITTI_CLASSES.get(row[0])
            class_id = None if name is None else CLASS_NAMES.index(name)
            parser.add(path.stem, parser.box(path, line, row[4:8]), row[0], class_id)


def _sniff(path: Path) -> str:
    """'crowdai' or 'autti' from the first line of a labels file."""
    with open(path, encoding="utf-8-sig") as f:
        first = next((line for line in f if line.strip()), "")
    if "," in first and "xmin" in first.lower():
        return "crowdai"
    fields = first.split()
    if len(fields) >= 7:
        try:
            [float(v) for v in fields[1:5]]
            return "autti"
        except ValueError:
            pass
    raise DatasetError(
        f"{path}: unknown labels format (first line {first.strip()[:80]!r}); expected a crowdAI CSV with an "
        "xmin,ymin,xmax,ymax,Frame,Label header, an Autti `frame xmin ymin xmax ymax occluded label` file, "
        "or a KITTI label_2/ folder"
    )


_JPEG_SOI, _PNG_SIGNATURE = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole (empty) IEND chunk: length, type, CRC
# A marker inside entropy-coded JPEG data: 0xFF followed by anything but stuffing (00), RSTn (D0-D7) or fill (FF).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_TAIL = 64  # bytes read from a file's end for the cheap completeness checks


def _jpeg_complete(data: bytes) -> bool:
    """Whether the JPEG's segments lead to its end marker (EOI) before the data ends: walks the header
    segments by their lengths and each scan to the marker after it, so bytes after the EOI (trailers,
    appended data) are allowed and an EXIF thumbnail's own EOI is skipped with its segment."""
    pos, end = 2, len(data)
    while pos + 2 <= end:
        if data[pos] != 0xFF:
            return False  # not a marker where one must be: corrupt
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xD9:
            return True
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            if pos + 4 > end:
                return False
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
            if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
                found = _JPEG_MARKER.search(data, pos)
                if found is None:
                    return False
                pos = found.start()
    return False


def _png_complete(data: bytes) -> bool:
    """Whether the PNG's chunks, walked by their lengths, reach an IEND chunk within the data."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos <= len(data)
    return False


def truncated(path: str | os.PathLike) -> str | None:
    """Why the JPEG or PNG file is cut short ("truncated: ..."), or None (complete, another format, or unreadable).

    Cheap: the end of the file is read first, and the whole file only where that end is not the format's end
    marker (a complete file with bytes appended after it). Other formats are judged by their decoder."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
            if head.startswith(_JPEG_SOI):
                if tail.rstrip(b"\x00").endswith(b"\xff\xd9"):  # EOI, maybe zero padding after it
                    return None
                f.seek(0)
                if not _jpeg_complete(f.read()):
                    return "truncated: the JPEG data ends before its end marker"
            elif head == _PNG_SIGNATURE:
                if tail.endswith(_PNG_IEND):
                    return None
                f.seek(0)
                if not _png_complete(f.read()):
                    return "truncated: the PNG data ends before its IEND chunk"
    except OSError:
        return None  # unreadable, which the reader that follows says
    return None


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as cv2.imread would decode the file, or None if it is not a readable image."""
    try:
        from PIL import Image
    except ImportError:  # pillow comes with matplotlib; decode the whole image otherwise
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if image is None else (image.shape[1], image.shape[0])
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: rotated by 90 degrees
                width, height = height, width
    except (OSError, ValueError, SyntaxError):
        return None
    return width, height


def _find_image(frame: str, dirs: list[Path], suffixes: tuple[str, ...]) -> Path | None:
    for d in dirs:
        for suffix in suffixes:
            candidate = d / (frame + suffix)
            if candidate.is_file() or link_problem(candidate):  # a broken link is reported as missing, by name
                return candidate
    return None


def _clip(boxes: list[tuple[_Box, int]], width: int, height: int, report: DatasetReport) -> tuple[np.ndarray, np.ndarray]:
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    raw = np.array([b for b, _ in boxes], np.float64)
    ids = np.array([c for _, c in boxes], np.int64)
    clipped = raw.clip(0.0, [width, height, width, height])
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    report.boxes_dropped += int((~keep).sum())
    report.boxes_clipped += int((keep & (clipped != raw).any(axis=1)).sum())
    return clipped[keep].astype(np.float32), ids[keep]


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir() and all(not os.path.samefile(p, q) for q in out):
            out.append(p)
    return out


def load_dataset(
    data_dir: str | os.PathLike, labels: str | os.PathLike | None = None, *, skip_malformed: bool = False
) -> tuple[list[Sample], DatasetReport]:
    """Read a labelled dataset; returns one Sample per frame (sorted by frame name) and a report.

    `labels` is a crowdAI/Autti labels file or a KITTI label folder; by default data_dir/labels.csv,
    else data_dir/label_2/. A malformed row raises DatasetError naming file and line, or is skipped and
    counted with skip_malformed=True. Frames whose image is missing are listed in the report and left out.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"dataset folder not found: {data_dir}")
    if labels is None:
        if (data_dir / "labels.csv").is_file():
            labels = data_dir / "labels.csv"
        elif (data_dir / "label_2").is_dir():
            labels = data_dir / "label_2"
        else:
            raise DatasetError(f"{data_dir} has no labels.csv and no label_2/ folder: pass the labels with --labels FILE")
    labels = Path(labels)
    if not labels.exists():
        raise DatasetError(f"labels not found: {labels}")

    report = DatasetReport(source=str(data_dir))
    parser = _Parser(report, skip_malformed)
    if labels.is_dir():
        report.format = f"KITTI {labels.name}/"
        _read_kitti(labels, parser)
        dirs = _unique([data_dir / d for d in KITTI_IMAGE_DIRS] + [labels.parent / d for d in KITTI_IMAGE_DIRS])
        suffixes = KITTI_IMAGE_SUFFIXES
    else:
        kind = _sniff(labels)
        report.format = f"{'crowdAI' if kind == 'crowdai' else 'Udacity Autti'} {labels.name}"
        (_read_crowdai if kind == "crowdai" else _read_autti)(labels, parser)
        dirs = _unique([data_dir / "images", labels.parent, data_dir])
        suffixes = ("",)

    samples = []
    for frame in sorted(parser.frames):
        path = _find_image(frame, dirs, suffixes)
        if path is not None and truncated(path):  # pillow reads a size from the header; OpenCV would decode grey
            report.truncated_images.append(str(path))
            continue
        size = None if path is None else image_size(path)
        if size is None:
            report.missing_images.append(str(path or (dirs[0] if dirs else data_dir) / (frame + suffixes[0])))
            continue
        boxes, class_ids = _clip(parser.frames[frame], size[0], size[1], report)
        for c in class_ids:
            report.boxes_per_class[CLASS_NAMES[c]] += 1
        samples.append(Sample(path, boxes, class_ids, size[0], size[1]))
    report.frames = len(samples)
    if report.missing_images:
        log.warning("%d of %d labelled frames have no readable image and are left out", len(report.missing_images),
                    len(parser.frames))
    if report.truncated_images:
        log.warning("%d of %d labelled frames have a truncated image and are left out", len(report.truncated_images),
                    len(parser.frames))
    if report.duplicate_boxes:
        log.warning("%d duplicate label rows (same frame, box and label) are counted once", report.duplicate_boxes)
    return samples, report
