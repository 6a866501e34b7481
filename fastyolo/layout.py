"""The one source of truth for the network's input and output layout.

The network maps a 224x224 RGB image to an (N, S, S, CELL_SIZE) tensor. Per grid cell:

    [CLASS_OFFSET : CLASS_OFFSET + C]     class probabilities (softmax over C)
    [CONF_OFFSET  : CONF_OFFSET + B]      box confidences (sigmoid)
    [BOX_OFFSET   : BOX_OFFSET + 4 * B]   B boxes as (x, y, w, h) (sigmoid), box b at BOX_OFFSET + 4 b

x and y are the box centre relative to the cell (0..1 across the cell), w and h are relative to
the whole image. Every other module takes its numbers from here.
"""

from __future__ import annotations

GRID = 11  # S: cells per side
BOXES = 2  # B: boxes per cell
CLASS_NAMES: tuple[str, ...] = ("Car", "Truck", "Pedestrian")
CLASSES = len(CLASS_NAMES)  # C

CLASS_OFFSET = 0
CONF_OFFSET = CLASS_OFFSET + CLASSES
BOX_OFFSET = CONF_OFFSET + BOXES
BOX_VALUES = 4  # x, y, w, h
CELL_SIZE = BOX_OFFSET + BOX_VALUES * BOXES  # 13
OUTPUT_SIZE = GRID * GRID * CELL_SIZE  # flat length of one image's output
MAX_BOXES = GRID * GRID * BOXES  # candidate boxes per image

INPUT_SIZE = 224  # square network input, pixels
# Preprocessing: the frame is resized (squashed, no letterbox) to INPUT_SIZE x INPUT_SIZE,
# converted BGR -> RGB, scaled to [0, 1], then normalised with ImageNet statistics so that
# torchvision's ImageNet weights fit.
CHANNEL_ORDER = "RGB"
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

INPUT_NAME = "images"
OUTPUT_NAME = "grid"


def output_shape(batch: int) -> tuple[int, int, int, int]:
    """Shape of the network's output for a batch of `batch` images."""
    return (batch, GRID, GRID, CELL_SIZE)


def describe() -> dict[str, str]:
    """The layout as string key/values, written into exported models' metadata."""
    return {
        "fastyolo.grid": str(GRID),
        "fastyolo.boxes": str(BOXES),
        "fastyolo.classes": ",".join(CLASS_NAMES),
        "fastyolo.cell_layout": (
            f"class[{CLASS_OFFSET}:{CONF_OFFSET}] conf[{CONF_OFFSET}:{BOX_OFFSET}] "
            f"box[{BOX_OFFSET}:{CELL_SIZE}] as {BOXES}x(x,y,w,h)"
        ),
        "fastyolo.input_size": str(INPUT_SIZE),
        "fastyolo.channel_order": CHANNEL_ORDER,
        "fastyolo.mean": ",".join(str(m) for m in MEAN),
        "fastyolo.std": ",".join(str(s) for s in STD),
    }
