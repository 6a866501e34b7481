"""The YOLO v1 network on a ResNet (or EfficientNet-Lite0) feature extractor.

The ResNet is written here (PyPI's torchvision does not install beside the CPU torch wheel) with
torchvision's module and parameter names, so a torchvision ImageNet state dict loads into
`YoloNet.backbone` unchanged. EfficientNet-Lite0 lives in efficientnet.py.

Three heads map the features to the (N, 11, 11, 13) grid:

- "conv" (the default): the stride-16 and stride-32 feature maps resampled onto the 11x11 grid,
  concatenated, then 1x1 + two 3x3 convolutions and a 1x1 to the 13 cell values. Every cell is
  predicted from the features at its own place in the image by the same weights, so what is
  learnt about a car in one cell holds in every cell: it trains from a few frames and generalises
  from a few hundred, where the FC head had to learn each cell separately.
- "slim": the conv head with each 3x3 depthwise-separable (a 3x3 per channel, then a 1x1): the two 3x3s
  were about a quarter of EfficientNet-Lite0's multiply-adds (256 -> 256 at 11x11), separable ones a ninth
  of that.
- "fc": YOLO v1's own: globally pooled features -> Linear(2048) -> ReLU -> Dropout ->
  Linear(11*11*13). Kept so that checkpoints made before the conv head still load.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastyolo.layout import BOXES, CELL_SIZE, CLASS_OFFSET, CLASSES, CONF_OFFSET, GRID, OUTPUT_SIZE


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)  # stride on the 3x3, as torchvision (ResNet v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_SPECS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
RESNETS = tuple(_SPECS)
BACKBONES = (*RESNETS, "efficientnet_lite0")
HEADS = ("conv", "slim", "fc")


class ResNet(nn.Module):
    """torchvision's ResNet, name for name (conv1, bn1, layer1..4, fc)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = 512 * block.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The stride-16 and stride-32 feature maps (layer3, layer4)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c4 = self.layer3(self.layer2(self.layer1(x)))
        return c4, self.layer4(c4)

    @property
    def map_channels(self) -> tuple[int, int]:
        return 256 * self.layer1[0].expansion, self.feature_dim

    def features(self, x: Tensor) -> Tensor:
        """Globally pooled features, (N, feature_dim)."""
        return torch.flatten(self.avgpool(self.feature_maps(x)[1]), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def resnet(name: str, num_classes: int = 1000) -> ResNet:
    if name not in _SPECS:
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    block, layers = _SPECS[name]
    return ResNet(block, layers, num_classes)


def make_backbone(name: str) -> nn.Module:
    """A feature extractor with feature_maps(x) -> (stride 16, stride 32), map_channels, features(x), feature_dim."""
    if name == "efficientnet_lite0":
        from fastyolo.train.efficientnet import EfficientNetLite0

        return EfficientNetLite0()
    net = resnet(name)
    net.fc = nn.Identity()  # the ImageNet classifier is not used; see load_backbone
    return net


class GridHead(nn.Module):
    """Stride-16 and stride-32 maps resampled to the GRID x GRID cells -> CELL_SIZE values per cell.

    Bilinear resampling with align_corners=False puts each output cell's sample at the centre of
    its 1/GRID of the image, the cell the targets assign objects to.
    """

    def __init__(self, in_channels: tuple[int, int], width: int = 256, dropout: float = 0.0,
                 separable: bool = False):
        super().__init__()

        def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        def conv3x3(channels: int) -> list[nn.Module]:
            if separable:  # depthwise 3x3, then the 1x1 that mixes the channels
                return [*conv_bn(channels, channels, 3, groups=channels), *conv_bn(channels, channels, 1)]
            return conv_bn(channels, channels, 3)

        self.body = nn.Sequential(
            *conv_bn(sum(in_channels), width, 1), *conv3x3(width), *conv3x3(width), nn.Dropout(dropout),
        )
        self.out = nn.Conv2d(width, CELL_SIZE, 1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)

    def forward(self, c4: Tensor, c5: Tensor) -> Tensor:
        size = (GRID, GRID)
        x = torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=False) for c in (c4, c5)], dim=1)
        return self.out(self.body(x)).permute(0, 2, 3, 1)  # (N, S, S, CELL_SIZE)

    @property
    def conf_bias(self) -> Tensor:
        """The output bias entries of the box confidences, (BOXES,)."""
        return self.out.bias[CONF_OFFSET : CONF_OFFSET + BOXES]


class YoloNet(nn.Module):
    """Backbone features -> head (module docstring: "conv" or "fc") -> (N, S, S, CELL_SIZE) final values.

    Softmax over the class scores, sigmoid over the confidences and box coordinates, inside the
    network, so training, export and every backend see the same numbers.
    """

    def __init__(self, backbone: str = "resnet50", head: str = "conv", hidden: int = 2048, dropout: float = 0.0):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}: choose one of {', '.join(HEADS)}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
        self.backbone_name = backbone
        self.head_name = head
        self.backbone = make_backbone(backbone)
        if head in ("conv", "slim"):
            self.head = GridHead(self.backbone.map_channels, dropout=dropout, separable=head == "slim")
        else:
            self.head = nn.Sequential(
                nn.Linear(self.backbone.feature_dim, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, OUTPUT_SIZE),
            )

    def forward(self, images: Tensor) -> Tensor:
        if self.head_name != "fc":
            raw = self.head(*self.backbone.feature_maps(images))
        else:
            raw = self.head(self.backbone.features(images)).view(-1, GRID, GRID, CELL_SIZE)
        if raw.dtype != torch.float32:  # under autocast: the probabilities (and so the loss) in fp32
            raw = raw.float()
        class_end = CLASS_OFFSET + CLASSES
        classes = torch.softmax(raw[..., CLASS_OFFSET:class_end], dim=-1)
        rest = torch.sigmoid(raw[..., class_end:])
        # CLASS_OFFSET is 0: class scores first, then confidences and boxes, as in layout.py.
        return torch.cat([classes, rest], dim=-1)

    def confidence_bias(self) -> Tensor:
        """A view of the output bias entries that set the box confidences (for the prior)."""
        if self.head_name != "fc":
            return self.head.conf_bias
        return self.head[-1].bias.view(GRID, GRID, CELL_SIZE)[..., CONF_OFFSET : CONF_OFFSET + BOXES]

    def load_backbone(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load ImageNet weights into the backbone: a torchvision ResNet state dict, or for
        efficientnet_lite0 an efficientnet_pytorch one (the classifier entries are dropped)."""
        weights = {k: v for k, v in state_dict.items() if not k.startswith(("fc.", "_fc."))}
        own = self.backbone.state_dict()
        missing = [k for k in own if k not in weights]
        unexpected = [k for k in weights if k not in own]
        wrong = [k for k in weights if k in own and tuple(weights[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            raise ValueError(
                f"state dict does not fit {self.backbone_name}: {len(missing)} missing keys {missing[:2]}, "
                f"{len(unexpected)} unexpected {unexpected[:2]}, {len(wrong)} of another shape {wrong[:2]}"
            )
        self.backbone.load_state_dict(weights)
