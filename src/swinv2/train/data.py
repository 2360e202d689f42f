"""The data side of `swinv2 train`: image folders or scikit-learn's digits, augmentation, deterministic batches.

`DATA` is an image folder laid out as `DATA/train/<class>/*` (and optionally `DATA/val/<class>/*`), or
the word `digits` for scikit-learn's bundled handwritten digits. `load_classification_data` turns it
into a training and a validation `ImageClassificationDataset` plus the class names.

Three properties drive the design:

- Distributed equivalence. `torchrun --nproc_per_node=K` at per-process batch b must see, at every
  step, exactly the samples one process sees at batch K*b, augmented identically. So the order of an
  epoch is a pure function of (seed, epoch) (`epoch_order`), each rank takes a fixed slice of each
  global batch (`rank_batches`, `DeterministicSampler`), and every sample's augmentation is drawn
  from a generator seeded by (seed, epoch, index) (`sample_generator`), never from a per-process
  stream. The seeds come from a cryptographic hash, stable across runs, processes and machines.
- Exact resume. The data position is (epoch, step): `DeterministicSampler.set_epoch(epoch, start_step)`
  yields the remaining batches of that epoch, identical to those an uninterrupted run would have seen.
- Bad input gets one clear message and loses nothing. A missing folder, no classes, a class without
  images or an empty split raise `DataError` naming the folder. Unreadable images are found once, when
  the data is built (every file is decoded; see `load_classification_data` for the cost), skipped and
  listed in `ClassificationData.skipped` for the end-of-run report, so DataLoader workers never meet
  them and every process agrees on the sample list.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from swinv2.io.errors import InputError, quote
from swinv2.preprocess import _RESAMPLE, Swinv2ImageProcessor, _as_chw_tensor, open_image, resize

logger = logging.getLogger(__name__)

#: File suffixes read as images (compared case-insensitively); other files are listed as ignored.
IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"})

#: The `source` that selects scikit-learn's digits instead of a folder.
DIGITS = "digits"

#: A sample key as the dataset accepts it: an index (augmented for the epoch set by `set_epoch`) or
#: (epoch, index), which carries the epoch to DataLoader workers that never see `set_epoch`.
SampleKey = int | tuple[int, int]


class DataError(InputError):
    """Training data that cannot be used: the message names the folder or file, the value and what is accepted."""


# ------------------------------------------------------------------------------ randomness
def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a pure function of `parts` (ints and strings), the same in every process.

    Python's `hash` is salted per process, so it cannot be used; BLAKE2b of the parts' `repr` can.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _permutation(count: int, seed: int) -> list[int]:
    """A permutation of range(count), a pure function of (count, seed) on every Python version.

    Fisher-Yates driven by `random.Random(seed).random()`, whose sequence Python guarantees to keep
    (unlike `shuffle`'s or numpy's algorithms). One to two seconds per million samples, once an epoch
    (`DeterministicSampler` keeps the current epoch's order).
    """
    order = list(range(count))
    draw = random.Random(seed).random
    for i in range(count - 1, 0, -1):
        j = int(draw() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    """The order in which epoch `epoch` visits the samples: a permutation, a pure function of its arguments."""
    return _permutation(num_samples, stable_seed("order", seed, epoch))


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator that draws sample `index`'s augmentation in epoch `epoch`: the same in every process."""
    return torch.Generator().manual_seed(stable_seed("augment", seed, epoch, index))


# ------------------------------------------------------------------------------ batching
def steps_per_epoch(num_samples: int, world_size: int, per_process_batch: int, drop_last: bool = True) -> int:
    """Optimiser steps in one epoch of `num_samples` at global batch `world_size * per_process_batch`."""
    global_batch = world_size * per_process_batch
    return num_samples // global_batch if drop_last else math.ceil(num_samples / global_batch)


def rank_batches(
    order: Sequence[int], rank: int, world_size: int, per_process_batch: int, drop_last: bool = True
) -> list[list[int]]:
    """The batches process `rank` of `world_size` takes from an epoch's `order`, one per step.

    Step s's global batch is `order[s*B:(s+1)*B]` with B = world_size * per_process_batch, and rank r
    takes its slice `[r*b:(r+1)*b]`, so the union over ranks of the step-s batches is the step-s batch
    of one process at batch B. With `drop_last` a final partial global batch is dropped (in every
    setting alike, so equality holds); without it the final slices are shorter, possibly empty, and
    empty ones are not yielded (for evaluation, where counts are summed over ranks).
    """
    global_batch = world_size * per_process_batch
    batches = []
    for step in range(steps_per_epoch(len(order), world_size, per_process_batch, drop_last)):
        start = step * global_batch + rank * per_process_batch
        batch = list(order[start : min(start + per_process_batch, (step + 1) * global_batch)])
        if batch:
            batches.append(batch)
    return batches


class DeterministicSampler(Sampler[list[Any]]):
    """A batch sampler (for `DataLoader(batch_sampler=...)`) whose batches depend only on (seed, epoch, rank).

    Every rank computes the same `epoch_order` and takes its slice of each global batch (`rank_batches`),
    so K processes at batch b see together what one process sees at batch K*b. `set_epoch(epoch,
    start_step)` selects the epoch and resumes it mid-way: the batches yielded are exactly steps
    `start_step, start_step + 1, ...` of that epoch (`start_step` may also be assigned directly).

    Args:
        num_samples: Length of the dataset.
        seed: Seed of the run.
        rank / world_size: This process and the number of processes.
        batch_size: Samples per step in this process (the per-process batch; the global batch is
            `world_size * batch_size`).
        drop_last: Drop a final partial global batch (training: needed for exact equivalence, see
            `rank_batches`); keep it for evaluation.
        shuffle: Visit in `epoch_order` (training) or in index order (evaluation).
        tag_epoch: Yield (epoch, index) keys instead of indices, so the dataset augments for the epoch
            even in persistent DataLoader workers (which never see `dataset.set_epoch`).

    Raises:
        DataError: `drop_last` and fewer samples than one global batch (an epoch would have no step).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        shuffle: bool = True,
        tag_epoch: bool = False,
    ) -> None:
        if not (world_size >= 1 and 0 <= rank < world_size):
            raise DataError(
                f"rank must be in [0, world_size) with world_size >= 1; got rank {rank}, world_size {world_size}"
            )
        if batch_size < 1:
            raise DataError(f"the per-process batch size must be positive; got {quote(batch_size)}")
        if num_samples < 1:
            raise DataError("there are no samples to draw batches from")
        if drop_last and num_samples < world_size * batch_size:
            raise DataError(
                f"the training split has {num_samples} images, fewer than one global batch of "
                f"{world_size * batch_size} ({batch_size} per process x {world_size} processes); "
                f"lower the batch size or add images"
            )
        self.num_samples, self.seed, self.rank, self.world_size = num_samples, seed, rank, world_size
        self.batch_size, self.drop_last, self.shuffle, self.tag_epoch = (
            batch_size,
            drop_last,
            shuffle,
            tag_epoch,
        )
        self.epoch, self.start_step = 0, 0
        self._order: tuple[int, Sequence[int]] | None = None  # (epoch, order): computed once per epoch

    @property
    def steps_per_epoch(self) -> int:
        """Global steps in a whole epoch (the same on every rank when `drop_last`)."""
        return steps_per_epoch(self.num_samples, self.world_size, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Iterate epoch `epoch` from step `start_step` (0 for a whole epoch; a resumed run passes its step)."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise DataError(f"start_step must be in [0, {self.steps_per_epoch}]; got {quote(start_step)}")
        self.epoch, self.start_step = epoch, start_step

    def _batches(self) -> list[list[int]]:
        if self._order is None or self._order[0] != self.epoch:
            shuffled = self.shuffle
            order = epoch_order(self.num_samples, self.seed, self.epoch) if shuffled else range(self.num_samples)
            self._order = (self.epoch, order)
        batches = rank_batches(self._order[1], self.rank, self.world_size, self.batch_size, self.drop_last)
        return batches[self.start_step :]

    def __iter__(self) -> Iterator[list[Any]]:
        for batch in self._batches():
            yield [(self.epoch, i) for i in batch] if self.tag_epoch else batch

    def __len__(self) -> int:
        return len(self._batches())


# ------------------------------------------------------------------------------ augmentation
@dataclass(frozen=True)
class Augmentation:
    """The training view: a random-resized crop, then a horizontal flip with probability 1/2.

    `scale` bounds the crop's area as a fraction of the image's and `ratio` its width / height (log-
    uniform), timm's and torchvision's defaults. The crop is resized to the model size by the processor.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise DataError(f"crop scale must be 0 < low <= high <= 1; got {quote(self.scale)}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise DataError(f"crop ratio must be 0 < low <= high; got {quote(self.ratio)}")


#: Digits are not flipped (a mirrored 2 or 7 is no longer that digit) and keep at least half their area.
DIGITS_AUGMENTATION = Augmentation(scale=(0.5, 1.0), flip=False)


def crop_box(
    height: int, width: int, augmentation: Augmentation, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of a random-resized crop: torchvision's rule, our generator.

    Ten tries at an area in `scale` and a log-uniform aspect ratio in `ratio`; if none fits, the
    largest central crop whose ratio is within `ratio`.
    """
    area = height * width
    log_low, log_high = math.log(augmentation.ratio[0]), math.log(augmentation.ratio[1])
    for _ in range(10):
        u_area, u_ratio = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target = area * (augmentation.scale[0] + u_area * (augmentation.scale[1] - augmentation.scale[0]))
        aspect = math.exp(log_low + u_ratio * (log_high - log_low))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < augmentation.ratio[0]:
        w, h = width, max(1, round(width / augmentation.ratio[0]))
    elif in_ratio > augmentation.ratio[1]:
        h, w = height, max(1, round(height * augmentation.ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


# ------------------------------------------------------------------------------ datasets
class ImageClassificationDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images and labels; item i is `(pixel_values (3, H, W) float32 normalised, label)`.

    The evaluation view (`augmentation=None`) is `processor(image)` as is: resize to the model size,
    no crop. The training view crops (`crop_box`) with the generator of (seed, epoch, index), flips
    with it, and passes the crop through the same processor. Keys are indices (augmented for the epoch
    given to `set_epoch`) or (epoch, index) pairs (see `DeterministicSampler.tag_epoch`).

    Args:
        sources: Image paths, or in-memory images (uint8 arrays, (H, W) or (H, W, 3)).
        labels: Class index of each source.
        processor: Resizes to the model size and normalises.
        augmentation: The training view's randomness; None for the evaluation view.
        seed: Seed of the run (the augmentation depends on it).
        upscale_first: Resize sources to the model size before cropping (small in-memory images such
            as the 8x8 digits, so crops are taken in model pixels rather than in 8x8 pixels).
    """

    def __init__(
        self,
        sources: Sequence[Path | np.ndarray],
        labels: Sequence[int],
        processor: Swinv2ImageProcessor,
        *,
        augmentation: Augmentation | None = None,
        seed: int = 0,
        upscale_first: bool = False,
    ) -> None:
        if len(sources) != len(labels):
            raise DataError(f"{len(sources)} images but {len(labels)} labels")
        self.sources, self.labels = list(sources), [int(label) for label in labels]
        self.processor, self.augmentation, self.seed = processor, augmentation, seed
        self.upscale_first = upscale_first
        self.epoch = 0
        #: Images that failed after the build-time check (changed on disk since): (path, reason). Only
        #: this process's list; the build-time `ClassificationData.skipped` is the complete report.
        self.late_skipped: list[tuple[Path, str]] = []

    def __len__(self) -> int:
        return len(self.sources)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation plain-index keys get."""
        self.epoch = epoch

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the pixel values."""
        return self.processor.size["height"], self.processor.size["width"]

    def _name(self, index: int) -> str:
        source = self.sources[index]
        return f"'{source}'" if isinstance(source, Path) else f"image {index}"

    def _pixels(self, index: int, epoch: int) -> torch.Tensor:
        source = self.sources[index]
        image: Any = open_image(source) if isinstance(source, Path) else source
        if self.augmentation is None:
            return self.processor(image).pixel_values[0]
        mode = _RESAMPLE[self.processor.resample]
        tensor = _as_chw_tensor(image, self._name(index))
        if self.upscale_first:
            tensor = resize(tensor, self.size, mode, self._name(index))
        generator = sample_generator(self.seed, epoch, index)
        top, left, h, w = crop_box(tensor.shape[-2], tensor.shape[-1], self.augmentation, generator)
        tensor = tensor[:, top : top + h, left : left + w]
        flip = bool(torch.rand(1, generator=generator).item() < 0.5)  # drawn always: one stream shape
        if self.augmentation.flip and flip:
            tensor = tensor.flip(-1)
        return self.processor(tensor.contiguous()).pixel_values[0]

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        # A file that broke after the build-time check is replaced by the next readable one: the same
        # choice in every process, so no step loses a sample and no run dies on one file.
        for offset in range(len(self.sources)):
            current = (index + offset) % len(self.sources)
            try:
                return self._pixels(current, epoch), self.labels[current]
            except InputError as err:
                path = self.sources[current]
                if not isinstance(path, Path):
                    raise
                logger.warning("skipping %s (%s); using the next image instead", path, err)
                self.late_skipped.append((path, str(err)))
        raise DataError(f"none of the {len(self.sources)} images of this dataset can be read any more")


@dataclass
class ClassificationData:
    """Training and validation datasets, the class names, and what was skipped or ignored.

    `skipped` lists (path, reason) of image files that could not be read (excluded, not fatal); report
    them at the end of a run. `ignored` lists files whose suffix is not an image suffix.
    """

    train: ImageClassificationDataset
    val: ImageClassificationDataset
    class_names: list[str]
    source: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are 0 .. num_classes - 1)."""
        return len(self.class_names)

    @property
    def train_eval(self) -> ImageClassificationDataset:
        """The training images in the evaluation view (no augmentation), e.g. to measure training accuracy."""
        train = self.train
        return ImageClassificationDataset(train.sources, train.labels, train.processor, seed=train.seed)

    def check_head(self, num_labels: int) -> None:
        """Raise `DataError` if some label would fall outside a classification head of `num_labels` outputs."""
        if self.num_classes > num_labels:
            raise DataError(
                f"'{self.source}' has {self.num_classes} classes ({_names(self.class_names)}) but the model's head has "
                f"{num_labels} outputs; use a model with at least {self.num_classes} labels (a new head)"
            )

    def summary(self) -> str:
        """One line: classes, split sizes, skipped and ignored counts."""
        line = f"{self.source}: {self.num_classes} classes, {len(self.train)} training and {len(self.val)} validation"
        line += " images"
        if self.skipped:
            line += f", {len(self.skipped)} unreadable skipped"
        if self.ignored:
            line += f", {len(self.ignored)} non-image files ignored"
        return line

    def skipped_report(self) -> str:
        """The unreadable files, one per line with the reason (empty when none); for the end of a run."""
        late = self.train.late_skipped + self.val.late_skipped
        entries = self.skipped + [entry for entry in late if entry not in self.skipped]
        if not entries:
            return ""
        lines = [f"{len(entries)} unreadable image(s) skipped:"]
        lines += [f"  {path}: {reason}" for path, reason in entries]
        return "\n".join(lines)


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(quote(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# ------------------------------------------------------------------------------ building
def _model_processor(processor: Swinv2ImageProcessor, image_size: int | None) -> Swinv2ImageProcessor:
    if image_size is not None:
        if not (isinstance(image_size, int) and not isinstance(image_size, bool) and image_size > 0):
            raise DataError(f"image_size must be a positive int; got {quote(image_size)}")
        processor = replace(processor, size={"height": image_size, "width": image_size})
    if not processor.do_resize:
        raise DataError("training needs images of one size: the image processor must resize (do_resize true)")
    return processor


def load_classification_data(
    source: str | os.PathLike[str],
    *,
    processor: Swinv2ImageProcessor,
    seed: int,
    val_fraction: float = 0.1,
    image_size: int | None = None,
    augmentation: Augmentation | None = None,
    verify: bool = True,
    workers: int | None = None,
) -> ClassificationData:
    """Build the training and validation datasets of `source`: an image folder or "digits".

    Folder layout: `source/train/<class>/...` and optionally `source/val/<class>/...`. Classes are the
    sorted names of train/'s subfolders (hidden ones ignored); images are found by suffix
    (`IMAGE_SUFFIXES`, any case) in each class folder and its subfolders, hidden files ignored. val/'s
    classes must be a subset of train/'s (a class the model cannot learn is an error; a class missing
    from val/ is fine). Without val/, each class of train/ is split with the seed: `val_fraction` of
    its images (rounded, at least one left for training) go to validation.

    "digits": scikit-learn's 1,797 8x8 grey digits, upscaled to the model size by the processor (the
    demo's look), split as the demo splits them (a seeded permutation, the last `val_fraction` held
    out); not flipped in training (`DIGITS_AUGMENTATION`).

    Args:
        source: The folder, or "digits".
        processor: Resizing and normalisation (the evaluation view is exactly this processor).
        seed: Seeds the split and every augmentation.
        val_fraction: Share of each class held out when there is no val/ folder, in (0, 1).
        image_size: Model input side; None keeps the processor's size.
        augmentation: The training view; None for the default (`Augmentation()`, or
            `DIGITS_AUGMENTATION` for digits).
        verify: Decode every image once now and skip the unreadable ones. This costs one full decode
            per file (roughly a minute per 100,000 ImageNet-sized JPEGs per core; `workers` threads run
            in parallel) and makes the sample list the same in every process and every DataLoader
            worker. Without it, a file that fails later is replaced by the next one and logged.
        workers: Threads for the check; None for up to 8 (the CPU count).

    Raises:
        DataError: The folder or a split is missing or empty, a class has no readable images, val/ has
            classes train/ lacks, or scikit-learn is missing for "digits".
    """
    if not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 1):
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive); got {quote(val_fraction)}")
    processor = _model_processor(processor, image_size)
    if isinstance(source, str) and source == DIGITS:
        return _digits_data(processor, seed, val_fraction, augmentation or DIGITS_AUGMENTATION)
    return _folder_data(Path(source), processor, seed, val_fraction, augmentation or Augmentation(), verify, workers)


def digits_arrays() -> tuple[list[np.ndarray], list[int]]:
    """scikit-learn's digits as 8x8 uint8 grey arrays (values 0..16 scaled to 0..255) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the 'digits' data set comes with scikit-learn: pip install 'swinv2[demo]'") from None
    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    return list(pixels), [int(t) for t in digits.target]


def _folder_class_names(root: Path) -> list[str]:
    """The sorted class folder names of `root/train`, or `DataError` naming what is missing."""
    if not root.is_dir():
        raise DataError(
            f"training data '{root}' is not a folder; expected a folder with train/<class>/<images> "
            f"(and optionally val/<class>/<images>), or '{DIGITS}'"
        )
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"'{root}' has no train/ folder; expected {train_dir}/<class>/<images>")
    class_names = sorted(_class_folders(train_dir))
    if not class_names:
        raise DataError(f"'{train_dir}' has no class folders; expected {train_dir}/<class>/<images>")
    return class_names


def data_class_names(source: str | os.PathLike[str]) -> list[str]:
    """The class names `load_classification_data(source, ...)` will give, without reading any image.

    For building a model head before the (slower) data build: "0" .. "9" for digits, else the sorted
    class folder names of `source/train`.
    """
    if isinstance(source, str) and source == DIGITS:
        return [str(d) for d in range(10)]
    return _folder_class_names(Path(source))


def _digits_data(
    processor: Swinv2ImageProcessor, seed: int, val_fraction: float, augmentation: Augmentation
) -> ClassificationData:
    images, labels = digits_arrays()
    order = np.random.default_rng(seed).permutation(len(images))  # the demo's split
    cut = int(len(images) * (1 - val_fraction))
    train_idx, val_idx = order[:cut].tolist(), order[cut:].tolist()

    def dataset(indices: list[int], aug: Augmentation | None) -> ImageClassificationDataset:
        return ImageClassificationDataset(
            [images[i] for i in indices],
            [labels[i] for i in indices],
            processor,
            augmentation=aug,
            seed=seed,
            upscale_first=True,
        )

    return ClassificationData(
        train=dataset(train_idx, augmentation),
        val=dataset(val_idx, None),
        class_names=[str(d) for d in range(10)],
        source=DIGITS,
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _class_folders(split: Path) -> dict[str, Path]:
    if not split.is_dir():
        raise DataError(f"'{split}' is not a folder; expected {split}/<class>/<images>")
    return {p.name: p for p in sorted(split.iterdir()) if p.is_dir() and not _is_hidden(p.name)}


def _class_files(folder: Path, ignored: list[Path]) -> list[Path]:
    """Image files under `folder` (recursively, sorted, hidden entries skipped); others go to `ignored`."""
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(names):
            if _is_hidden(name):
                continue
            path = Path(root) / name
            (files if path.suffix.lower() in IMAGE_SUFFIXES else ignored).append(path)
    return files


def _check_image(path: Path) -> str | None:
    """None if `path` decodes, else the reason it cannot be used."""
    try:
        open_image(path).close()
    except InputError as err:  # ImageError, or LimitError for an image too large to decode
        return str(err)
    return None


def _collect(
    split: Path,
    class_names: list[str],
    verify: bool,
    workers: int | None,
    skipped: list[tuple[Path, str]],
    ignored: list[Path],
) -> tuple[list[Path], list[int]]:
    """The readable images of each class folder of `split` and their labels (index in `class_names`)."""
    folders = _class_folders(split)
    found = {name: _class_files(folder, ignored) for name, folder in folders.items()}
    for name, files in found.items():
        if not files:
            raise DataError(
                f"class folder '{folders[name]}' has no image files (accepted suffixes: "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder"
            )
    if verify:
        every = [path for files in found.values() for path in files]
        threads = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # decoding releases the GIL
            reasons = dict(zip(every, pool.map(_check_image, every), strict=True))
        for name, files in found.items():
            bad = [(path, reasons[path]) for path in files if reasons[path] is not None]
            skipped.extend((path, str(reason)) for path, reason in bad)
            if len(bad) == len(files):
                raise DataError(
                    f"class folder '{folders[name]}' has no readable images ({len(files)} file(s), all unreadable; "
                    f"first: {bad[0][1]})"
                )
            found[name] = [path for path in files if reasons[path] is None]
    label_of = {name: i for i, name in enumerate(class_names)}
    paths = [path for name in folders for path in found[name]]
    labels = [label_of[name] for name in folders for _ in found[name]]
    return paths, labels


def _folder_data(
    root: Path,
    processor: Swinv2ImageProcessor,
    seed: int,
    val_fraction: float,
    augmentation: Augmentation,
    verify: bool,
    workers: int | None,
) -> ClassificationData:
    class_names = _folder_class_names(root)
    train_dir, val_dir = root / "train", root / "val"
    skipped: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    paths, labels = _collect(train_dir, class_names, verify, workers, skipped, ignored)
    if val_dir.exists():
        extra = sorted(set(_class_folders(val_dir)) - set(class_names))
        if extra:
            raise DataError(
                f"'{val_dir}' has classes that '{train_dir}' lacks: {_names(extra)}; "
                f"val/ may hold only train/'s classes ({_names(class_names)})"
            )
        if not _class_folders(val_dir):
            raise DataError(f"'{val_dir}' has no class folders; remove it to split train/ instead, or add val/<class>/")
        val_paths, val_labels = _collect(val_dir, class_names, verify, workers, skipped, ignored)
        train_paths, train_labels = paths, labels
    else:
        train_idx, val_idx = stratified_split(labels, val_fraction, seed, class_names)
        if not val_idx:
            raise DataError(
                f"splitting '{train_dir}' ({len(paths)} images) with val_fraction {val_fraction} leaves no "
                f"validation images; raise val_fraction or add a val/ folder"
            )
        train_paths, train_labels = [paths[i] for i in train_idx], [labels[i] for i in train_idx]
        val_paths, val_labels = [paths[i] for i in val_idx], [labels[i] for i in val_idx]
    for path, reason in skipped:
        logger.warning("skipping unreadable image %s: %s", path, reason)
    return ClassificationData(
        train=ImageClassificationDataset(train_paths, train_labels, processor, augmentation=augmentation, seed=seed),
        val=ImageClassificationDataset(val_paths, val_labels, processor, seed=seed),
        class_names=class_names,
        source=str(root),
        skipped=skipped,
        ignored=ignored,
    )


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int, class_names: Sequence[str]
) -> tuple[list[int], list[int]]:
    """(train indices, val indices): per class, `round(n * val_fraction)` held out, at least one kept.

    Each class is permuted by a seed of (seed, class name), so adding a class leaves the others' split
    unchanged. Indices are returned in ascending order.
    """
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train, val = [], []
    for label, members in by_class.items():
        order = _permutation(len(members), stable_seed("split", seed, class_names[label]))
        held = min(len(members) - 1, math.floor(len(members) * val_fraction + 0.5))
        val += [members[j] for j in order[:held]]
        train += [members[j] for j in order[held:]]
    return sorted(train), sorted(val)
