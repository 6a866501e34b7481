"""The torch Dataset: read a frame, augment it when training, preprocess it exactly as inference does, build targets.

Preprocessing is `fastyolo.preprocess.resize_rgb` + `normalize` (the latter on the training
device), the functions every inference backend uses, so a trained network sees the same numbers
at training and detection time. With a frame cache (train/cache.py) an un-augmented frame is
that same array, read instead of decoded, and an augmented one is `augment_square` of the cached
square copy: the same boxes as without the cache, the pixels from a 384-pixel copy of the frame.
With `augment_on_device` the item carries that augmentation's draw (train/device_augment.py
WARP_FIELDS) instead of pixels, and the training device makes the pixels for the whole batch.
Augmentation draws from a generator seeded by (seed, epoch, index): the same epoch gives the same
images in any worker process, which is what makes `--resume` exact. With sampling weights
(`sampling_weights`: --source-weights, --class-balance) a frame can come twice in an epoch; its
second copy draws from (seed, epoch, index, 1), and so on, so the copies are augmented differently.
A mosaic (--mosaic) draws whether to make one, its three other frames and its layout from
(seed, epoch, index, copy, MOSAIC_STREAM).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from fastyolo.train.augment import augment, augment_mosaic, augment_mosaic_square, augment_square, draw_square
from fastyolo.train.cache import FrameCache
from fastyolo.train.config import CELL_ORDER, TrainConfig
from fastyolo.train.device_augment import no_warp, warp_row
from fastyolo.train.targets import build_targets
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from fastyolo.datasets import Sample
from fastyolo.errors import FastYoloError, UsageError
from fastyolo.layout import CLASS_NAMES, CLASSES, INPUT_SIZE
from fastyolo.preprocess import resize_rgb

MOSAIC_STREAM = 1  # the last seed word of a mosaic's generator: another stream than the augmentation's


def _seed(seed: int, epoch: int, index: int, copy: int) -> list[int]:
    """The augmentation generator's seed words; a frame's first copy in an epoch keeps the words of before copies."""
    return [seed, epoch, index] if copy == 0 else [seed, epoch, index, copy]


class YoloDataset(Dataset):
    """Items: image (INPUT_SIZE, INPUT_SIZE, 3) uint8 RGB, target boxes, mask, classes, sample index, dropped
    objects, warp (device_augment.WARP_FIELDS float32; row NO_WARP unless the device makes the pixels).

    The image is the network input before `normalize` (engine.to_network_input does that on the
    training device, the same float32 arithmetic): a quarter of the bytes through the DataLoader.
    An item augmented on the device has an empty image (0 bytes) and its draw in `warp`.
    """

    def __init__(self, samples: Sequence[Sample], *, augment: bool = False, seed: int = 0, aspect: float = 1.0,
                 cache: FrameCache | None = None, rows: Sequence[int] | None = None,
                 augment_on_device: bool = False, mosaic: float = 0.0, zoom: float = 1.0,
                 partners: np.ndarray | None = None, cell_order: str = CELL_ORDER):
        """cache: the samples' frames decoded once (rows[i]: sample i's row in it, default i).
        augment_on_device: augmented items carry their draw, not pixels (engine.DeviceAugmenter makes them).
        mosaic: probability that an augmented item is a 2x2 mosaic of its frame and three drawn with `partners`
        (sampling weights, default uniform); zoom: the largest zoom-in of the augmentation (augment.draw_params);
        cell_order: which object a shared grid cell keeps (targets.build_targets)."""
        self.samples = list(samples)
        self.cache = cache
        self.rows = list(range(len(self.samples))) if rows is None else list(rows)
        if cache is not None and augment and cache.large is None:
            raise ValueError("an augmenting YoloDataset needs a cache with the large copies")
        if augment_on_device and cache is None:
            raise ValueError("augmenting on the device needs the frame cache's square copies")
        if not (0.0 <= mosaic <= 1.0 and zoom >= 1.0):
            raise ValueError(f"YoloDataset: need 0 <= mosaic <= 1 and zoom >= 1, got {mosaic} and {zoom}")
        if augment and augment_on_device and mosaic > 0:
            # The device warps one square copy per item (WARP_FIELDS); a mosaic is four.
            raise UsageError("--mosaic needs --augment-on workers (the device warps one frame per item)")
        self.augment_on_device = augment_on_device
        self.augment = augment
        self.aspect = aspect
        self.seed = seed
        self.mosaic, self.zoom = mosaic, zoom
        self.cell_order = cell_order
        self.partners = None if partners is None else np.asarray(partners, np.float64) / np.sum(partners)

    def __len__(self) -> int:
        return len(self.samples)

    def _mosaic(self, epoch: int, index: int, copy: int) -> tuple[list[int], np.random.Generator] | None:
        """The four frames of this item's mosaic (its own first) and the generator of its layout, or None."""
        rng = np.random.default_rng([self.seed, epoch, index, copy, MOSAIC_STREAM])
        if not rng.random() < self.mosaic:
            return None
        n = len(self.samples)
        others = rng.choice(n, 3, p=self.partners) if self.partners is not None else rng.integers(0, n, 3)
        return [index, *(int(j) for j in others)], rng

    def __getitem__(self, item: int | tuple[int, ...]):
        # (index, epoch, augment[, copy]) from EpochBatches: persistent workers hold their own copy of the
        # dataset, so the epoch and whether it augments travel with each index (a plain index: epoch 0).
        index, epoch, augmented, copy = (*item, 0)[:4] if isinstance(item, tuple) else (item, 0, self.augment, 0)
        sample = self.samples[index]
        boxes, class_ids = sample.boxes, sample.class_ids
        augmented = augmented and self.augment
        rng = np.random.default_rng(_seed(self.seed, epoch, index, copy)) if augmented else None
        mosaic = self._mosaic(epoch, index, copy) if augmented and self.mosaic > 0 else None
        warp = no_warp()
        if self.cache is None:
            image = sample.load_image()
            if mosaic is not None:
                images = [image] + [self.samples[j].load_image() for j in mosaic[0][1:]]
                frames = [(im.shape[1], im.shape[0], self.samples[j].boxes, self.samples[j].class_ids)
                          for im, j in zip(images, mosaic[0], strict=True)]
                image, boxes, class_ids = augment_mosaic(images, frames, mosaic[1], aspect=self.aspect, zoom=self.zoom)
            elif augmented:
                image, boxes, class_ids = augment(image, boxes, class_ids, rng, aspect=self.aspect, zoom=self.zoom)
            height, width = image.shape[:2]
            rgb = resize_rgb(image)
        else:
            row, width, height = self.rows[index], sample.width, sample.height
            if mosaic is not None:
                frames = [(self.samples[j].width, self.samples[j].height, self.samples[j].boxes,
                           self.samples[j].class_ids) for j in mosaic[0]]
                squares = [self.cache.large[self.rows[j]] for j in mosaic[0]]
                bgr, boxes, class_ids = augment_mosaic_square(squares, frames, mosaic[1], INPUT_SIZE,
                                                              aspect=self.aspect, zoom=self.zoom)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            elif augmented and self.augment_on_device:
                draw = draw_square(self.cache.large.shape[1], width, height, boxes, class_ids, rng, INPUT_SIZE,
                                   aspect=self.aspect, zoom=self.zoom)
                boxes, class_ids, warp = draw.boxes, draw.class_ids, warp_row(row, draw)
                rgb = np.empty(0, np.uint8)
            elif augmented:
                bgr, boxes, class_ids = augment_square(self.cache.large[row], width, height, boxes, class_ids, rng,
                                                       INPUT_SIZE, aspect=self.aspect, zoom=self.zoom)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            else:
                rgb = self.cache.exact[row]
        targets = build_targets(boxes, class_ids, width, height, self.cell_order)
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


def sample_sources(samples: Sequence[Sample], folders: Sequence[str | os.PathLike]) -> np.ndarray:
    """Which of the --data `folders` each sample's image came from (k: folders[k]), as an int64 array.

    load_dataset finds a folder's images in it or in a folder below it (images/, image_2/), so the
    source is the folder nearest above the image; folders are compared as files (os.stat), so a
    relative, absolute or symlinked spelling of the same folder is the same source.
    """
    identity: dict[tuple[int, int], int] = {}
    for k, folder in enumerate(folders):
        try:
            st = os.stat(folder)
        except OSError as exc:
            raise FastYoloError(f"--data folder {folder}: {exc.strerror}") from None
        identity.setdefault((st.st_dev, st.st_ino), k)
    found: dict[Path, int] = {}
    out = np.empty(len(samples), np.int64)
    for i, sample in enumerate(samples):
        parent = Path(os.path.abspath(sample.image_path)).parent
        if parent not in found:
            for above in (parent, *parent.parents):
                try:
                    st = os.stat(above)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in identity:
                    found[parent] = identity[(st.st_dev, st.st_ino)]
                    break
            else:
                raise FastYoloError(f"--source-weights: {sample.image_path} is in none of the --data folders "
                                    f"({', '.join(map(str, folders))})")
        out[i] = found[parent]
    return out


def repeat_factors(present: np.ndarray, probability: np.ndarray, threshold: float) -> np.ndarray:
    """LVIS's repeat factor per class, r(c) = max(1, sqrt(t / f(c))), where f(c) is the chance that a drawn frame
    holds class c (`present`: (N, CLASSES) bool, `probability`: (N,) each frame's chance); a class in no frame: 1."""
    frequency = probability @ present
    with np.errstate(divide="ignore"):
        return np.where(frequency > 0, np.maximum(1.0, np.sqrt(threshold / np.maximum(frequency, 1e-300))), 1.0)


def frame_weights(samples: Sequence[Sample], sources: np.ndarray | None = None,
                  source_weights: Sequence[float] | str | None = None,
                  class_balance: float = 0.0) -> tuple[np.ndarray | None, str]:
    """Each frame's sampling weight (None: every frame once per epoch, as without) and a line saying what it does.

    source_weights (with `sources`, each frame's folder): one weight per folder, each frame of folder k
    drawn w_k times as often as without ("1 1 2": the third folder's frames twice as often), or
    "balanced": every folder the same share of each epoch. class_balance t > 0: repeat-factor sampling
    (LVIS, Gupta et al. 2019) over the frames as drawn so far: a frame's weight is multiplied by the
    largest r(c) of the classes it holds (`repeat_factors`), so Truck and Pedestrian frames come more often.
    """
    if source_weights is None and not class_balance > 0:
        return None, ""
    weights = np.ones(len(samples))
    notes = []
    if source_weights is not None:
        if sources is None:
            raise ValueError("source_weights needs each sample's source")
        counts = np.bincount(sources, minlength=1 if isinstance(source_weights, str) else len(source_weights))
        if isinstance(source_weights, str):  # "balanced"
            per_source = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        else:
            if len(source_weights) < len(counts):
                raise FastYoloError(f"--source-weights: {len(source_weights)} weights for {len(counts)} --data folders")
            per_source = np.asarray(source_weights, np.float64)
        weights = per_source[sources]
        if not weights.sum() > 0:
            raise FastYoloError("--source-weights: every training frame has weight 0")
        share = np.bincount(sources, weights=weights, minlength=len(per_source)) / weights.sum()
        notes.append("sources " + " / ".join(f"{n} frames {100 * f:.0f}%" for n, f in zip(counts, share, strict=True)))
    if class_balance > 0:
        present = np.zeros((len(samples), CLASSES), bool)
        for i, sample in enumerate(samples):
            present[i, np.asarray(sample.class_ids, np.int64)] = True
        factors = repeat_factors(present, weights / weights.sum(), class_balance)
        weights = weights * np.where(present, factors, 1.0).max(axis=1, initial=1.0)
        notes.append("class repeat factors " + ", ".join(f"{n} {r:.2f}" for n, r in zip(CLASS_NAMES, factors,
                                                                                          strict=True)))
    return weights, "sampling of each epoch: " + "; ".join(notes)


def sampling_weights(samples: Sequence[Sample], config: TrainConfig,
                     say: Callable[[str], None] = print) -> np.ndarray | None:
    """frame_weights for a run: its --source-weights (by config.extra["data"], the --data folders) and
    --class-balance; says what they do. None where both are off."""
    sources = None
    if config.source_weights is not None:
        folders = config.extra.get("data")
        folders = [folders] if isinstance(folders, str) else list(folders or [])
        if not folders:
            raise FastYoloError("--source-weights needs the --data folders (config.extra['data'])")
        if not isinstance(config.source_weights, str) and len(config.source_weights) != len(folders):
            raise FastYoloError(f"--source-weights: {len(config.source_weights)} weights for {len(folders)} "
                                f"--data folders")
        sources = np.zeros(len(samples), np.int64) if len(folders) == 1 else sample_sources(samples, folders)
    weights, note = frame_weights(samples, sources, config.source_weights, config.class_balance)
    if note:
        say(note)
    return weights


def systematic_draw(weights: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` indices drawn in proportion to `weights` by systematic sampling: index i comes floor or ceil of
    count * w_i / sum(w) times (the expected count exactly, far less spread than independent draws), in index order."""
    cdf = np.cumsum(weights, dtype=np.float64)
    positions = (rng.random() + np.arange(count)) * (cdf[-1] / count)
    return np.minimum(np.searchsorted(cdf, positions, side="right"), len(weights) - 1)


def copy_numbers(order: np.ndarray) -> np.ndarray:
    """For each position of `order`, how many times its index came before (0 for the first copy)."""
    by_index = np.argsort(order, kind="stable")
    ranked = order[by_index]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    out = np.empty(len(order), np.int64)
    out[by_index] = np.arange(len(order)) - first
    return out


class EpochBatches(Sampler[list[tuple[int, int, bool, int]]]):
    """The batches of a run's epochs as one stream of lists of (index, epoch, augment, copy).

    A DataLoader iterates it once for the whole run: its workers go on to the next epoch's first
    batches while the main process runs the epoch's BatchNorm pass, validation and checkpoint. (A new
    iteration per epoch, even with persistent workers, left the step waiting at every epoch's start
    for the first batch to be made.) Each epoch is a DistributedSampler's seeded shuffle (seed +
    epoch; this rank's share with several processes) cut into batches, the last one short; the first
    planned epoch can start `skip` batches in, where an interrupted run stopped. The epoch and whether
    it augments travel with each index, so persistent workers need no per-epoch state.

    With `weights` (sampling_weights) an epoch is as many frames as without, drawn in proportion to
    them (`systematic_draw`, seeded by seed and epoch) and shuffled, then padded and shared between
    ranks as DistributedSampler does; `copy` numbers a frame's repeats within the epoch (0 without).
    """

    def __init__(self, size: int, batch: int, *, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, weights: np.ndarray | None = None):
        self._order = DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        if weights is not None:
            weights = np.asarray(weights, np.float64)
            if weights.shape != (size,) or not (weights >= 0).all() or not weights.sum() > 0:
                raise ValueError(f"EpochBatches: need {size} non-negative weights, not all 0")
        self.weights, self.seed, self.size, self.shuffle = weights, seed, size, shuffle
        self.rank, self.world_size = rank, world_size
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

    def _weighted(self, epoch: int) -> tuple[list[int], list[int]]:
        """This rank's share of a weighted epoch: indices and their copy numbers."""
        rng = np.random.default_rng([self.seed, epoch])
        drawn = systematic_draw(self.weights, self.size, rng)
        if self.shuffle:
            drawn = rng.permutation(drawn)
        total = math.ceil(self.size / self.world_size) * self.world_size
        drawn = np.resize(drawn, total)  # padded with its start, as DistributedSampler pads
        copies = copy_numbers(drawn)
        return drawn[self.rank::self.world_size].tolist(), copies[self.rank::self.world_size].tolist()

    def epoch(self, epoch: int, augmented: bool, skip: int = 0) -> list[list[tuple[int, int, bool, int]]]:
        """The batches of one epoch, from batch `skip` on."""
        if self.weights is None:
            self._order.set_epoch(epoch)
            order = list(self._order)
            copies = [0] * len(order)
        else:
            order, copies = self._weighted(epoch)
        return [[(i, epoch, augmented, c) for i, c in zip(order[start : start + self.batch],
                                                           copies[start : start + self.batch], strict=True)]
                for start in range(skip * self.batch, len(order), self.batch)]

    def __iter__(self) -> Iterator[list[tuple[int, int, bool]]]:
        for n, (epoch, augmented) in enumerate(self._plan):
            yield from self.epoch(epoch, augmented, self._skip if n == 0 else 0)

    def __len__(self) -> int:
        return max(0, len(self._plan) * self.per_epoch - (self._skip if self._plan else 0))
