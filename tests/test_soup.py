"""train/soup.py: runs' weights averaged element by element, BatchNorm recomputed on real frames."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="weight averaging needs the [train] extra (torch)")

from fastyolo.train.checkpoint import load_checkpoint, load_model, save_checkpoint  # noqa: E402
from fastyolo.train.model import YoloNet  # noqa: E402
from fastyolo.train.soup import average_runs, average_states, start_weights  # noqa: E402

from fastyolo.datasets import load_dataset  # noqa: E402
from fastyolo.errors import ModelError  # noqa: E402


def _net(seed: int) -> YoloNet:
    torch.manual_seed(seed)
    return YoloNet("efficientnet_lite0")


def test_average_states_is_the_elementwise_mean():
    nets = [_net(s) for s in (1, 2, 3)]
    for k, net in enumerate(nets):  # running statistics and counters that differ, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(10 * (k + 1))
    states = [n.state_dict() for n in nets]
    mean = average_states(states)
    assert list(mean) == list(states[0])
    for name, value in mean.items():
        if value.is_floating_point():
            expected = np.mean([s[name].numpy().astype(np.float64) for s in states], axis=0)
            np.testing.assert_allclose(value.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=name)
            assert value.dtype == states[0][name].dtype
        else:
            assert torch.equal(value, states[0][name]), name  # counters: the first run's


def test_average_states_refuses_other_networks():
    with pytest.raises(ModelError, match="run 2 of 2 holds another network"):
        average_states([_net(0).state_dict(), YoloNet("efficientnet_lite0", head="slim").state_dict()])


def test_start_weights_are_where_a_seeded_run_starts(tmp_path):
    start_weights(tmp_path / "start.pt", "efficientnet_lite0", seed=3, pretrained=None)
    saved = load_checkpoint(tmp_path / "start.pt")
    torch.manual_seed(3)
    fresh = YoloNet("efficientnet_lite0")
    from fastyolo.train.engine import CONF_PRIOR, set_confidence_prior

    set_confidence_prior(fresh, CONF_PRIOR)
    for name, value in fresh.state_dict().items():
        assert torch.equal(saved["model"][name], value), name
    assert saved["start"] == {"seed": 3, "pretrained": None}


def test_average_runs_on_real_frames(tmp_path, kitti_dir):
    frames = load_dataset(kitti_dir)[0][:6]
    start = tmp_path / "start.pt"
    start_weights(start, "efficientnet_lite0", seed=0, pretrained=None)
    runs = []
    for seed in (1, 2):  # two "runs" of one start (their weights differ as trained runs' do)
        runs.append(tmp_path / f"run{seed}.pt")
        save_checkpoint(runs[-1], _net(seed), config={"seed": seed, "init": str(start), "pretrained": None})
    soup = average_runs(runs, frames, tmp_path / "soup.pt", batch=3)
    written = load_model(tmp_path / "soup.pt")  # what `fastyolo export` reads
    states = [load_checkpoint(r)["model"] for r in runs]
    for name, value in written.state_dict().items():
        assert torch.equal(value, soup.state_dict()[name]), name
        if "running" in name or not value.is_floating_point():
            continue
        torch.testing.assert_close(value, (states[0][name] + states[1][name]) / 2, rtol=1e-6, atol=1e-7)
    # BatchNorm's statistics are the averaged network's own on these frames: the stem's (the first BatchNorm
    # normalises the stem convolution's output) are that output's channel means and (unbiased) variances,
    # averaged over the pass's two batches of three.
    from fastyolo.train.data import YoloDataset
    from fastyolo.train.engine import to_network_input

    net = written.backbone
    images = torch.stack([YoloDataset(frames, augment=False)[i][0] for i in range(len(frames))])
    with torch.no_grad():
        stem = net._conv_stem(to_network_input(images) * net.input_scale + net.input_shift)
    torch.testing.assert_close(net._bn0.running_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    variance = (stem[:3].var((0, 2, 3)) + stem[3:].var((0, 2, 3))) / 2
    torch.testing.assert_close(net._bn0.running_var, variance, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(net._bn0.running_var, torch.ones_like(variance))  # not the fresh network's
    assert load_checkpoint(tmp_path / "soup.pt")["soup"]["bn_frames"] == 6


def test_average_runs_refuses_runs_of_different_starts(tmp_path, kitti_dir):
    frames = load_dataset(kitti_dir)[0][:2]
    start = tmp_path / "start.pt"
    start_weights(start, "efficientnet_lite0", seed=0, pretrained=None)
    same, other = tmp_path / "same.pt", tmp_path / "other.pt"
    save_checkpoint(same, _net(1), config={"seed": 0, "pretrained": None})  # no --init, seed 0: start.pt's weights
    save_checkpoint(other, _net(2), config={"seed": 4, "pretrained": None})  # another seeded head
    runs = [tmp_path / "run.pt", same]
    save_checkpoint(runs[0], _net(3), config={"seed": 7, "init": str(start), "pretrained": None})
    average_runs(runs, frames, tmp_path / "ok.pt", batch=2)  # one start, reached two ways
    said = r"different weights .*run.pt: seed 0, no ImageNet weights; .*other.pt: seed 4, no ImageNet weights"
    with pytest.raises(ModelError, match=said):
        average_runs([runs[0], other], frames, tmp_path / "no.pt", batch=2)
    assert not (tmp_path / "no.pt").exists()
