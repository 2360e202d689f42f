"""SimMIM pre-training pieces: the random masks and the model a pre-training run starts from.

SimMIM (Xie et al., 2022, the pre-training of Swin V2) masks square blocks of `mask_patch_size` pixels
(32 in the paper) at a ratio of 0.6, replaces the masked patches' tokens by a learned mask token, and
regresses the raw pixels of the masked area with an L1 loss (`Swinv2ForMaskedImageModeling` computes
it from `bool_masked_pos`). The mask of a sample is drawn from (seed, epoch, index), like its
augmentation, so resumed and multi-process runs see the same masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from swinv2.io.errors import InputError, quote
from swinv2.models import Swinv2ForImageClassification, Swinv2ForMaskedImageModeling, Swinv2Model
from swinv2.preprocess import Swinv2ImageProcessor
from swinv2.train.data import stable_seed
from swinv2.train.setup import ModelChoice, load_source, resize_processor


@dataclass(frozen=True)
class MaskGenerator:
    """Random block masks for an `image_size` input of a model with `patch_size` patches.

    `mask_patch_size` must be a multiple of `patch_size` and divide the image; `ratio` of the blocks are
    masked (rounded up). `__call__(generator)` gives the (H/patch * W/patch,) boolean patch mask the
    model takes as `bool_masked_pos`, row-major.
    """

    image_size: tuple[int, int]
    patch_size: int
    mask_patch_size: int = 32
    ratio: float = 0.6

    def __post_init__(self) -> None:
        (height, width), block = self.image_size, self.mask_patch_size
        if block % self.patch_size or height % block or width % block:
            raise InputError(
                f"mask_patch_size {quote(block)} must be a multiple of the patch size ({self.patch_size}) and "
                f"divide the image size {height} x {width}"
            )
        if not 0 < self.ratio < 1:
            raise InputError(f"mask ratio must be in (0, 1); got {quote(self.ratio)}")

    @property
    def blocks(self) -> tuple[int, int]:
        return self.image_size[0] // self.mask_patch_size, self.image_size[1] // self.mask_patch_size

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        rows, columns = self.blocks
        count = math.ceil(rows * columns * self.ratio)
        chosen = torch.randperm(rows * columns, generator=generator)[:count]
        blocks = torch.zeros(rows * columns, dtype=torch.bool)
        blocks[chosen] = True
        scale = self.mask_patch_size // self.patch_size
        grid = blocks.view(rows, columns).repeat_interleave(scale, 0).repeat_interleave(scale, 1)  # patch grid
        return grid.flatten()  # (L,)


class MaskedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """`dataset`'s images (labels dropped) with a SimMIM mask each, drawn from (seed, epoch, index)."""

    def __init__(self, dataset: Any, masks: MaskGenerator, seed: int) -> None:
        self.dataset, self.masks, self.seed = dataset, masks, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, _ = self.dataset[index]
        generator = torch.Generator().manual_seed(stable_seed("mask", self.seed, self.epoch, index))
        return pixels, self.masks(generator)


def default_mask_patch_size(image_size: tuple[int, int], patch_size: int) -> int:
    """The paper's 32 pixels where the image allows it, else the largest block that divides the image
    into at least 4 x 4 blocks (small inputs, like the 32-pixel digits)."""
    for block in (32, 16, 8, 4, 2, 1):
        size = block * patch_size if block * patch_size <= 32 else 32
        if size % patch_size == 0 and all(side % size == 0 and side // size >= 4 for side in image_size):
            return size
    return patch_size


def prepare_masked_image_model(choice: ModelChoice) -> tuple[Swinv2ForMaskedImageModeling, Swinv2ImageProcessor]:
    """A SimMIM model with the source's encoder (a fresh decoder where the source has none).

    The config's `encoder_stride` is set to the encoder's total stride, as the decoder needs.
    """
    source, processor = load_source(choice)
    config = source.config
    stride = config.patch_hw[0] * 2 ** (config.num_layers - 1)
    config = config.replace(encoder_stride=stride, architectures=["Swinv2ForMaskedImageModeling"])
    if choice.drop_path is not None:
        config = config.replace(drop_path_rate=choice.drop_path)
    model = Swinv2ForMaskedImageModeling(config)
    if isinstance(source, (Swinv2ForImageClassification, Swinv2ForMaskedImageModeling)):
        state = source.state_dict()
    elif isinstance(source, Swinv2Model):
        state = {f"swinv2.{k}": v for k, v in source.state_dict().items()}
    else:
        raise InputError(f"cannot pre-train a {type(source).__name__}; give a classifier or encoder checkpoint")
    keep = {k: v for k, v in state.items() if k.startswith("swinv2.") or k.startswith("decoder.")}
    missing, unexpected = model.load_state_dict(keep, strict=False)
    if unexpected or any(not (k.startswith("decoder.") or k.endswith("mask_token")) for k in missing):
        raise InputError(f"the source's encoder does not fit: missing {missing}, unexpected {unexpected}")
    return model, resize_processor(processor, model)


@torch.no_grad()
def reconstruction_loss(model: torch.nn.Module, dataset: MaskedImages, batch_size: int, device: torch.device) -> float:
    """Mean SimMIM loss (L1 on the masked pixels) of `model` over `dataset`, weighted by images."""
    from torch.utils.data import DataLoader

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for pixels, mask in DataLoader(dataset, batch_size=batch_size):
        loss = model(pixels.to(device), bool_masked_pos=mask.to(device)).loss
        total += float(loss) * len(pixels)
        count += len(pixels)
    model.train(was_training)
    return total / max(count, 1)
