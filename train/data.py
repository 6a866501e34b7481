"""The torch Dataset: read a frame, augment it when training, preprocess it exactly as inference does, build targets.

Preprocessing is `fastyolo.preprocess.resize_rgb` + `normalize` (the latter on the training
device), the functions every inference backend uses, so a trained network sees the same numbers
at training and detection time. With a frame cache (train/cache.py) an un-augmented frame is
that same array, read instead of decoded, and an augmented one is `augment_square` of the cached
square copy: the same boxes as without the cache, the pixels from a 384-pixel copy of the frame.
With `augment_on_device` the item carries that augmentation's draw (train/device_augment.py
WARP_FIELDS) instead of pixels, and the training device makes the pixels for the whole batch.
Augmentation draws from a generator seeded by (seed, epoch, index): the same epoch gives the same
images in any worker process, which is what makes `--resume` exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from fastyolo.train.augment import augment, augment_square, draw_square
from fastyolo.train.cache import FrameCache
from fastyolo.train.device_augment import no_warp, warp_row
from fastyolo.train.targets import build_targets
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from fastyolo.datasets import Sample
from fastyolo.layout import INPUT_SIZE
from fastyolo.preprocess import resize_rgb


class YoloDataset(Dataset):
    """Items: image (INPUT_SIZE, INPUT_SIZE, 3) uint8 RGB, target boxes, mask, classes, sample index, dropped
    objects, warp (device_augment.WARP_FIELDS float32; row NO_WARP unless the device makes the pixels).

    The image is the network input before `normalize` (engine.to_network_input does that on the
    training device, the same float32 arithmetic): a quarter of the bytes through the DataLoader.
    An item augmented on the device has an empty image (0 bytes) and its draw in `warp`.
    """

    def __init__(self, samples: Sequence[Sample], *, augment: bool = False, seed: int = 0, aspect: float = 1.0,
                 cache: FrameCache | None = None, rows: Sequence[int] | None = None,
                 augment_on_device: bool = False):
        """cache: the samples' frames decoded once (rows[i]: sample i's row in it, default i).
        augment_on_device: augmented items carry their draw, not pixels (engine.DeviceAugmenter makes them)."""
        self.samples = list(samples)
        self.cache = cache
        self.rows = list(range(len(self.samples))) if rows is None else list(rows)
        if cache is not None and augment and cache.large is None:
            raise ValueError("an augmenting YoloDataset needs a cache with the large copies")
        if augment_on_device and cache is None:
            raise ValueError("augmenting on the device needs the frame cache's square copies")
        self.augment_on_device = augment_on_device
        self.augment = augment
        self.aspect = aspect
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int, bool]):
        # (index, epoch, augment) from EpochBatches: persistent workers hold their own copy of the
        # dataset, so the epoch and whether it augments travel with each index (a plain index: epoch 0).
        index, epoch, augmented = item if isinstance(item, tuple) else (item, 0, self.augment)
        sample = self.samples[index]
        boxes, class_ids = sample.boxes, sample.class_ids
        augmented = augmented and self.augment
        rng = np.random.default_rng([self.seed, epoch, index]) if augmented else None
        warp = no_warp()
        if self.cache is None:
            image = sample.load_image()
            if augmented:
                image, boxes, class_ids = augment(image, boxes, class_ids, rng, aspect=self.aspect)
            height, width = image.shape[:2]
            rgb = resize_rgb(image)
        else:
            row, width, height = self.rows[index], sample.width, sample.height
            if augmented and self.augment_on_device:
                draw = draw_square(self.cache.large.shape[1], width, height, boxes, class_ids, rng, INPUT_SIZE,
                                   aspect=self.aspect)
                boxes, class_ids, warp = draw.boxes, draw.class_ids, warp_row(row, draw)
                rgb = np.empty(0, np.uint8)
            elif augmented:
                bgr, boxes, class_ids = augment_square(self.cache.large[row], width, height, boxes, class_ids, rng,
                                                       INPUT_SIZE, aspect=self.aspect)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            else:
                rgb = self.cache.exact[row]
        targets = build_targets(boxes, class_ids, width, height)
        pixels = torch.from_numpy(np.array(rgb, np.uint8, copy=True))  # a cache row may be a read-only memmap
        return (
            pixels,
            torch.from_numpy(targets.boxes),
            torch.from_numpy(targets.mask),
            torch.from_numpy(targets.classes),
            index,
            targets.dropped,
            torch.from_numpy(warp),
        )


class EpochBatches(Sampler[list[tuple[int, int, bool]]]):
    """The batches of a run's epochs as one stream of lists of (index, epoch, augment).

    A DataLoader iterates it once for the whole run: its workers go on to the next epoch's first
    batches while the main process runs the epoch's BatchNorm pass, validation and checkpoint. (A new
    iteration per epoch, even with persistent workers, left the step waiting at every epoch's start
    for the first batch to be made.) Each epoch is a DistributedSampler's seeded shuffle (seed +
    epoch; this rank's share with several processes) cut into batches, the last one short; the first
    planned epoch can start `skip` batches in, where an interrupted run stopped. The epoch and whether
    it augments travel with each index, so persistent workers need no per-epoch state.
    """

    def __init__(self, size: int, batch: int, *, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        self._order = DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.batch = batch
        self._plan: list[tuple[int, bool]] = []
        self._skip = 0

    @property
    def per_epoch(self) -> int:
        """Batches in a whole epoch (of this rank)."""
        return math.ceil(len(self._order) / self.batch)

    def plan(self, epochs: Iterable[tuple[int, bool]], skip: int = 0) -> None:
        """Yield these (epoch, augment) in order; the first starts after `skip` batches."""
        self._plan, self._skip = list(epochs), skip

    def epoch(self, epoch: int, augmented: bool, skip: int = 0) -> list[list[tuple[int, int, bool]]]:
        """The batches of one epoch, from batch `skip` on."""
        self._order.set_epoch(epoch)
        order = list(self._order)
        return [[(i, epoch, augmented) for i in order[start : start + self.batch]]
                for start in range(skip * self.batch, len(order), self.batch)]

    def __iter__(self) -> Iterator[list[tuple[int, int, bool]]]:
        for n, (epoch, augmented) in enumerate(self._plan):
            yield from self.epoch(epoch, augmented, self._skip if n == 0 else 0)

    def __len__(self) -> int:
        return max(0, len(self._plan) * self.per_epoch - (self._skip if self._plan else 0))
