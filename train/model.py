"""The YOLO v1 network on a ResNet feature extractor.

The ResNet is written here (PyPI's torchvision does not install beside the CPU torch wheel) with
torchvision's module and parameter names, so a torchvision ImageNet state dict loads into
`YoloNet.backbone` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fastyolo.layout import CELL_SIZE, CLASS_OFFSET, CLASSES, GRID, OUTPUT_SIZE


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
BACKBONES = tuple(_SPECS)


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

    def features(self, x: Tensor) -> Tensor:
        """Globally pooled features, (N, feature_dim)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def resnet(name: str, num_classes: int = 1000) -> ResNet:
    if name not in _SPECS:
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    block, layers = _SPECS[name]
    return ResNet(block, layers, num_classes)


class YoloNet(nn.Module):
    """ResNet features -> Linear(feat, 2048) + ReLU + Dropout(0.5) -> Linear(2048, S*S*CELL_SIZE).

    Returns (N, S, S, CELL_SIZE) final values: softmax over the class scores, sigmoid over the
    confidences and box coordinates, so training, export and every backend see the same numbers.
    """

    def __init__(self, backbone: str = "resnet50", hidden: int = 2048, dropout: float = 0.5):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = resnet(backbone)
        self.backbone.fc = nn.Identity()  # the ImageNet classifier is not used; see load_backbone
        self.head = nn.Sequential(
            nn.Linear(self.backbone.feature_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, OUTPUT_SIZE),
        )

    def forward(self, images: Tensor) -> Tensor:
        raw = self.head(self.backbone.features(images)).view(-1, GRID, GRID, CELL_SIZE)
        class_end = CLASS_OFFSET + CLASSES
        classes = torch.softmax(raw[..., CLASS_OFFSET:class_end], dim=-1)
        rest = torch.sigmoid(raw[..., class_end:])
        # CLASS_OFFSET is 0: class scores first, then confidences and boxes, as in layout.py.
        return torch.cat([classes, rest], dim=-1)

    def load_backbone(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a torchvision ResNet ImageNet state dict (its fc.* entries are dropped)."""
        weights = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
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
