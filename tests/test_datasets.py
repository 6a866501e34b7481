"""Dataset readers: crowdAI, Autti and KITTI labels on the real KITTI frames and small realistic files."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastyolo.datasets import Sample, image_size, load_dataset
from fastyolo.errors import DatasetError
from fastyolo.layout import CLASS_NAMES


def _write_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    assert cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), np.uint8))


def _by_name(samples: list[Sample]) -> dict[str, Sample]:
    return {s.image_path.stem: s for s in samples}


def test_kitti_tiny_both_formats_agree_box_for_box(kitti_dir: Path):
    csv_samples, csv_report = load_dataset(kitti_dir)
    kitti_samples, kitti_report = load_dataset(kitti_dir, kitti_dir / "label_2")
    assert csv_report.format.startswith("crowdAI") and kitti_report.format.startswith("KITTI")
    for report in (csv_report, kitti_report):
        assert report.boxes_per_class == {"Car": 209, "Truck": 35, "Pedestrian": 41}
        assert report.frames == 75 and not report.missing_images and report.malformed_rows == 0
    assert kitti_report.ignored_labels == {"Cyclist": 14, "DontCare": 188, "Misc": 3, "Tram": 9}
    csv_by, kitti_by = _by_name(csv_samples), _by_name(kitti_samples)
    assert csv_by.keys() == kitti_by.keys()
    for name, a in csv_by.items():
        b = kitti_by[name]
        assert a.image_path == b.image_path and (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        # labels.csv holds KITTI's float coordinates rounded to whole pixels.
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5 + 1e-4)
        assert a.boxes.dtype == np.float32 and a.class_ids.dtype == np.int64


def test_image_size_matches_decoded_frames(kitti_dir: Path):
    samples, _ = load_dataset(kitti_dir)
    sizes = {(s.width, s.height) for s in samples}
    assert len(sizes) > 1  # KITTI frames differ slightly in size, so a single assumed size would be wrong
    for s in samples[::5]:
        image = s.load_image()
        assert image.shape == (s.height, s.width, 3)
        assert image_size(s.image_path) == (s.width, s.height)


AUTTI = """\
1478019952686311006.jpg 950 574 1004 620 0 "car"
1478019952686311006.jpg 1748 482 1818 744 0 "pedestrian"
1478019952686311006.jpg 100 50 140 120 1 "trafficLight" "Red"
1478019953180167674.jpg 872 586 926 632 1 "truck"
1478019953180167674.jpg 686 566 728 618 0 "biker"
1478019953689774621.jpg 10 10 30 60 0 "trafficLight" "Green"
"""


def test_autti_space_separated_with_images_beside_labels(tmp_path: Path):
    (tmp_path / "labels.csv").write_text(AUTTI)
    for name in ("1478019952686311006", "1478019953180167674", "1478019953689774621"):
        _write_image(tmp_path / f"{name}.jpg", 1920, 1200)
    samples, report = load_dataset(tmp_path)
    assert report.format.startswith("Udacity Autti")
    assert [s.image_path.name for s in samples] == [
        "1478019952686311006.jpg", "1478019953180167674.jpg", "1478019953689774621.jpg"]
    first, second, third = samples
    np.testing.assert_array_equal(first.boxes, [[950, 574, 1004, 620], [1748, 482, 1818, 744]])
    assert [CLASS_NAMES[c] for c in first.class_ids] == ["Car", "Pedestrian"]
    np.testing.assert_array_equal(second.boxes, [[872, 586, 926, 632]])
    assert [CLASS_NAMES[c] for c in second.class_ids] == ["Truck"]
    assert len(third.boxes) == 0 and third.class_ids.shape == (0,)  # only a traffic light: a negative frame
    assert (first.width, first.height) == (1920, 1200)
    assert report.ignored_labels == {"trafficLight": 2, "biker": 1}
    assert report.boxes_per_class == {"Car": 1, "Truck": 1, "Pedestrian": 1}


def _write_crowdai(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_crowdai_published_swapped_header_reads_values_in_xmin_ymin_xmax_ymax_order(tmp_path: Path):
    # Udacity's object-detection-crowdai/labels.csv: header xmin,xmax,ymin,ymax but values x1,y1,x2,y2.
    rows = [[785, 533, 905, 644, "1479498371963069978.jpg", "Car", "http://crowdai.com/images/x.jpg"],
            [89, 551, 291, 680, "1479498371963069978.jpg", "Car", ""],
            [268, 546, 383, 650, "1479498372942264998.jpg", "Truck", ""],
            [1693, 533, 1722, 597, "1479498372942264998.jpg", "Pedestrian", ""]]
    _write_crowdai(tmp_path / "labels.csv", ["xmin", "xmax", "ymin", "ymax", "Frame", "Label", "Preview URL"], rows)
    for name in ("1479498371963069978", "1479498372942264998"):
        _write_image(tmp_path / "images" / f"{name}.jpg", 1920, 1200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples, report = load_dataset(tmp_path)
    ours = [w for w in caught if "xmin,xmax,ymin,ymax" in str(w.message)]
    assert len(ours) == 1, "the header mix-up is reported once, not per row"
    assert "xmin,ymin,xmax,ymax" in str(ours[0].message) and report.warnings
    np.testing.assert_array_equal(samples[0].boxes, [[785, 533, 905, 644], [89, 551, 291, 680]])
    np.testing.assert_array_equal(samples[1].boxes, [[268, 546, 383, 650], [1693, 533, 1722, 597]])
    assert [CLASS_NAMES[c] for c in samples[1].class_ids] == ["Truck", "Pedestrian"]


def test_crowdai_header_order_is_honoured_when_values_follow_it(tmp_path: Path):
    # Same boxes, values written in the order the header names (xmin, xmax, ymin, ymax).
    rows = [[785, 905, 533, 644, "a.jpg", "Car", ""], [89, 291, 551, 680, "a.jpg", "Car", ""]]
    _write_crowdai(tmp_path / "labels.csv", ["xmin", "xmax", "ymin", "ymax", "Frame", "Label", "Preview URL"], rows)
    _write_image(tmp_path / "a.jpg", 1920, 1200)
    with pytest.warns(UserWarning, match="as the header says"):
        samples, _ = load_dataset(tmp_path)
    np.testing.assert_array_equal(samples[0].boxes, [[785, 533, 905, 644], [89, 551, 291, 680]])


def test_columns_read_by_name_in_any_order(tmp_path: Path):
    _write_crowdai(tmp_path / "boxes.csv", ["Frame", "Label", "ymin", "xmin", "ymax", "xmax"],
                   [["a.jpg", "Pedestrian", 20, 10, 60, 30]])
    _write_image(tmp_path / "images" / "a.jpg", 100, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no header warning for a well-formed header
        samples, _ = load_dataset(tmp_path, tmp_path / "boxes.csv")
    np.testing.assert_array_equal(samples[0].boxes, [[10, 20, 30, 60]])


def test_boxes_outside_the_image_are_clipped_or_dropped(tmp_path: Path):
    rows = [[-10, 5, 20, 30, "a.jpg", "Car", ""],  # partly left of the image: clipped
            [90, 70, 130, 95, "a.jpg", "Truck", ""],  # over the bottom-right corner: clipped
            [120, 10, 150, 20, "a.jpg", "Car", ""],  # fully right of the image: dropped
            [10, 80, 20, 90, "a.jpg", "Pedestrian", ""],  # touches the bottom edge only: zero area, dropped
            [30, 30, 30, 50, "a.jpg", "Car", ""],  # zero width: dropped
            [40, 10, 60, 30, "a.jpg", "Car", ""]]  # inside: unchanged
    _write_crowdai(tmp_path / "labels.csv", ["xmin", "ymin", "xmax", "ymax", "Frame", "Label", "Preview URL"], rows)
    _write_image(tmp_path / "images" / "a.jpg", 100, 80)
    samples, report = load_dataset(tmp_path)
    np.testing.assert_array_equal(samples[0].boxes, [[0, 5, 20, 30], [90, 70, 100, 80], [40, 10, 60, 30]])
    assert [CLASS_NAMES[c] for c in samples[0].class_ids] == ["Car", "Truck", "Car"]
    assert (report.boxes_clipped, report.boxes_dropped) == (2, 3)
    assert report.boxes_per_class == {"Car": 2, "Truck": 1, "Pedestrian": 0}


def test_frames_without_image_are_listed_and_left_out(tmp_path: Path):
    rows = [[1, 1, 10, 10, "here.jpg", "Car", ""], [1, 1, 10, 10, "gone.jpg", "Car", ""],
            [1, 1, 10, 10, "broken.jpg", "Car", ""]]
    _write_crowdai(tmp_path / "labels.csv", ["xmin", "ymin", "xmax", "ymax", "Frame", "Label", "Preview URL"], rows)
    _write_image(tmp_path / "images" / "here.jpg", 64, 48)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    samples, report = load_dataset(tmp_path)
    assert [s.image_path.name for s in samples] == ["here.jpg"]
    assert sorted(Path(p).name for p in report.missing_images) == ["broken.jpg", "gone.jpg"]
    assert report.frames == 1 and report.boxes == 1
    assert "2 frames without an image" in str(report)


@pytest.mark.parametrize(
    ("line", "why"),
    [("a.jpg 1 2 3\n", "fields"), ('a.jpg 1 two 3 4 0 "car"\n', "not numbers"),
     ('a.jpg 30 2 10 4 0 "car"\n', "xmax < xmin"), ('a.jpg nan 2 10 4 0 "car"\n', "not finite")],
)
def test_malformed_rows_name_file_and_line_or_are_skipped(tmp_path: Path, line: str, why: str):
    labels = tmp_path / "labels.csv"
    labels.write_text('a.jpg 1 2 30 40 0 "car"\n' + line + 'a.jpg 5 6 20 30 0 "truck"\n')
    _write_image(tmp_path / "a.jpg", 64, 48)
    with pytest.raises(DatasetError, match=rf"labels\.csv, line 2: .*{why}"):
        load_dataset(tmp_path)
    samples, report = load_dataset(tmp_path, skip_malformed=True)
    assert report.malformed_rows == 1
    np.testing.assert_array_equal(samples[0].boxes, [[1, 2, 30, 40], [5, 6, 20, 30]])


def test_kitti_label_2_with_image_2_png(tmp_path: Path):
    (tmp_path / "label_2").mkdir()
    (tmp_path / "label_2" / "000007.txt").write_text(
        "Van 0.00 0 -1.57 10.5 20.25 50.0 60.0 2.85 2.63 12.34 0.47 1.49 69.44 -1.56\n"
        "Person_sitting 0.00 0 1.85 70 5 90 55 1.67 1.87 3.69 -16.53 2.39 58.49 1.57\n"
        "DontCare -1 -1 -10 1 1 5 5 -1 -1 -1 -1000 -1000 -1000 -10\n")
    (tmp_path / "label_2" / "000008.txt").write_text("Cyclist 0.00 3 -1.65 6 6 9 9 1.86 0.60 2.02 4.59 1.32 45.84 -1.55\n")
    (tmp_path / "label_2" / "000009.txt").write_text("Car 0.00 0 0 1 1 5\n")
    for name in ("000007", "000008", "000009"):
        _write_image(tmp_path / "image_2" / f"{name}.png", 100, 60)
    with pytest.raises(DatasetError, match=r"000009\.txt, line 1: 7 fields"):
        load_dataset(tmp_path)
    samples, report = load_dataset(tmp_path, skip_malformed=True)
    assert [s.image_path.name for s in samples] == ["000007.png", "000008.png", "000009.png"]
    np.testing.assert_allclose(samples[0].boxes, [[10.5, 20.25, 50, 60], [70, 5, 90, 55]])
    assert [CLASS_NAMES[c] for c in samples[0].class_ids] == ["Truck", "Pedestrian"]
    assert len(samples[1].boxes) == 0  # Cyclist only: kept as a negative frame
    assert report.ignored_labels == {"DontCare": 1, "Cyclist": 1} and report.malformed_rows == 1


def test_unknown_inputs_raise_one_line_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no labels.csv and no label_2"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("hello world\n")
    with pytest.raises(DatasetError, match="unknown labels format"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("xmin,ymin,x2,y2,frame,label\n1,2,3,4,a.jpg,Car\n")
    with pytest.raises(DatasetError, match="lacks one of the crowdAI columns"):
        load_dataset(tmp_path)
