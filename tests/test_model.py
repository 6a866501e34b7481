"""The network: torchvision-compatible backbone names, output layout, and ONNX export."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="the network needs the [train] extra (torch)")

from fastyolo.train.export import export_onnx  # noqa: E402
from fastyolo.train.model import YoloNet  # noqa: E402

from fastyolo.layout import CELL_SIZE, CLASS_OFFSET, CLASSES, GRID, INPUT_SIZE, describe  # noqa: E402

# torchvision's ResNet layout, written out independently of train/model.py: (block, blocks per stage).
TORCHVISION = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}


def torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's key names and shapes (random values)."""
    kind, layers = TORCHVISION[name]
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}.{k}"] = torch.rand(c)
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

    state["conv1.weight"] = torch.rand(64, 3, 7, 7)
    bn("bn1", 64)
    inplanes, expansion = 64, (4 if kind == "bottleneck" else 1)
    for stage, (planes, blocks) in enumerate(zip([64, 128, 256, 512], layers, strict=True), start=1):
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            if kind == "bottleneck":
                state[f"{p}.conv1.weight"] = torch.rand(planes, inplanes, 1, 1)
                state[f"{p}.conv2.weight"] = torch.rand(planes, planes, 3, 3)
                state[f"{p}.conv3.weight"] = torch.rand(planes * 4, planes, 1, 1)
                for j, c in ((1, planes), (2, planes), (3, planes * 4)):
                    bn(f"{p}.bn{j}", c)
            else:
                state[f"{p}.conv1.weight"] = torch.rand(planes, inplanes, 3, 3)
                state[f"{p}.conv2.weight"] = torch.rand(planes, planes, 3, 3)
                bn(f"{p}.bn1", planes)
                bn(f"{p}.bn2", planes)
            if i == 0 and (stage > 1 or inplanes != planes * expansion):
                state[f"{p}.downsample.0.weight"] = torch.rand(planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    state["fc.weight"] = torch.rand(1000, 512 * expansion)
    state["fc.bias"] = torch.rand(1000)
    return state


@pytest.mark.parametrize(("name", "keys"), [("resnet18", 122), ("resnet34", 218), ("resnet50", 320)])
def test_torchvision_state_dict_loads(name, keys):
    state = torchvision_state_dict(name)
    assert len(state) == keys  # torchvision's count for this architecture
    model = YoloNet(name)
    model.load_backbone(state)
    loaded = model.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key


def test_load_backbone_rejects_other_architecture():
    with pytest.raises(ValueError, match="does not fit resnet18"):
        YoloNet("resnet18").load_backbone(torchvision_state_dict("resnet50"))


def test_output_layout_and_activations():
    torch.manual_seed(0)
    model = YoloNet("resnet18").eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, INPUT_SIZE, INPUT_SIZE) * 3)
    assert out.shape == (3, GRID, GRID, CELL_SIZE)
    probs = out[..., CLASS_OFFSET : CLASS_OFFSET + CLASSES]
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, GRID, GRID))
    rest = out[..., CLASS_OFFSET + CLASSES :]
    assert (rest > 0).all() and (rest < 1).all()


def test_export_records_metadata_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = YoloNet("resnet18")
    path = tmp_path / "m.onnx"
    diff = export_onnx(model, path, untrained=True)
    assert diff < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["fastyolo.backbone"] == "resnet18"
    assert meta["fastyolo.untrained"] == "true"
    for key, value in describe().items():
        assert meta[key] == value
    # dynamic batch: one model for any batch size
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
        with torch.no_grad():
            expected = model.eval()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(session.run(None, {"images": x})[0], expected, atol=1e-4)


def test_export_cli(tmp_path, capsys):
    # In-process (the CLI's own main): a child would only add an interpreter and torch's import; the one-line error
    # below runs `python -m fastyolo.cli` itself.
    from fastyolo.cli import main as cli

    out = tmp_path / "cli.onnx"
    assert cli(["export", "--untrained", "--backbone", "resnet18", "-o", str(out)]) == 0
    assert out.is_file() and "max abs diff" in capsys.readouterr().out


def test_export_cli_missing_checkpoint_is_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "fastyolo.cli", "export", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "x.onnx")],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"fastyolo export: error: checkpoint not found: {tmp_path / 'nope.pt'}"]


def test_checkpoints_of_the_fully_connected_head_still_load(tmp_path):
    """Checkpoints saved before the conv head (no "head" entry) load as the FC head they hold."""
    from fastyolo.train.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    old = YoloNet("resnet18", head="fc").eval()
    save_checkpoint(tmp_path / "old.pt", old)
    state = torch.load(tmp_path / "old.pt", map_location="cpu", weights_only=False)
    del state["head"]  # as written before the conv head existed
    torch.save(state, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.head_name == "fc"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), old(x))


def test_slim_head_is_separable_saves_loads_and_exports(tmp_path):
    """The "slim" head: the conv head's two 3x3s depthwise-separable (a ninth of their multiply-adds); a checkpoint
    loads as the slim head it holds, and its ONNX export computes what torch computes."""
    import onnxruntime as ort
    from fastyolo.train.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    slim = YoloNet("resnet18", head="slim").eval()
    full = YoloNet("resnet18", head="conv").eval()
    depthwise = [m for m in slim.head.body if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(depthwise) == 2 and all(m.groups == m.in_channels == 256 for m in depthwise)
    head_params = [sum(p.numel() for p in net.head.parameters()) for net in (slim, full)]
    assert head_params[0] < 0.5 * head_params[1], head_params
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        want = slim(x)
    assert want.shape == (2, 11, 11, 13)
    save_checkpoint(tmp_path / "slim.pt", slim)
    loaded = load_model(tmp_path / "slim.pt")
    assert loaded.head_name == "slim"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want)
    export_onnx(loaded, tmp_path / "slim.onnx", untrained=True)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "slim.onnx"), load_external_data=False).metadata_props}
    assert meta["fastyolo.head"] == "slim"
    session = ort.InferenceSession(str(tmp_path / "slim.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_cli_choices_are_the_model_s():
    """The CLI lists the backbones and heads without importing torch: its copies must be train/model.py's."""
    from fastyolo.train import model

    from fastyolo.commands import train as train_cli

    assert train_cli.BACKBONES == model.BACKBONES and train_cli.HEADS == model.HEADS
