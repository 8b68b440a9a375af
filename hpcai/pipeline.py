"""Training on one device (chapter 11): an input pipeline that costs real work, the
largest batch that fits, and the simple model of a pipeline's throughput.

:class:`EncodedImages` stores its images the way a data set on disk does, encoded as PNG
bytes (Pillow, [pillow]); they are made once, in memory, when the data set is built.
Every ``__getitem__`` pays what a real loader pays per sample: it decodes the PNG, then
augments the image (a random crop of a padded copy, resized back, and a random
horizontal flip) and converts it to a normalised float tensor. The random choices of
sample ``i`` in epoch ``e`` come from a generator seeded with ``(seed, e, i)``, so a
sample is the same whichever DataLoader worker decodes it, and the same on every run.

:func:`predict_throughput` is the model of a two-stage pipeline (load, then compute):
without workers the main process does both in turn, so their times add; with ``w``
workers loading in parallel with the compute, the slower stage sets the pace,
``min(w * loader_rate, model_rate)``, and no more workers than cores can load at once.

:func:`largest_batch` doubles a batch until it stops fitting, then bisects between the
last size that fitted and the first that did not. What "fits" means is the caller's
``fits(batch)``: on a GPU, that a training step runs without
``torch.cuda.OutOfMemoryError`` (:func:`cuda_step_fits`); on a CPU, which never refuses
an allocation but pages to disk instead, that the measured peak stays under a budget
(:func:`budget_fits`).
"""

from __future__ import annotations

import io
import math
import multiprocessing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

MEAN, STD = 0.5, 0.25  # of the pixel values in [0, 1], for the normalised tensor


def make_images(n: int, size: int, classes: int = 10, seed: int = 0,
                noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeded RGB images ``(n, size, size, 3)`` as uint8, and their labels.

    Class ``c`` is a colour grating of its own orientation and frequency, plus noise
    (the same idea as :func:`hpcai.resnet.synthetic_images`, in bytes)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    r = np.arange(size, dtype=np.float32) / size
    yy, xx = np.meshgrid(r, r, indexing="ij")
    ang = y * math.pi / classes
    freq = 2.0 + (y % 3)
    phase = np.cos(ang)[:, None, None] * xx + np.sin(ang)[:, None, None] * yy
    base = np.sin(2 * math.pi * freq[:, None, None] * phase)  # (n, size, size)
    tint = np.stack([np.ones(n), 0.5 + 0.5 * np.cos(ang), 0.5 + 0.5 * np.sin(ang)], 1)
    img = 0.5 + 0.4 * base[..., None] * tint[:, None, None, :]
    img = img + noise * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), y.astype(np.int64)


def encode_png(img: np.ndarray) -> bytes:
    """One uint8 ``(h, w, 3)`` image as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes back to a uint8 ``(h, w, 3)`` array (lossless: the image encoded)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class EncodedImages:
    """A map-style data set of PNG-encoded images, decoded and augmented per sample.

    ``augment=False`` returns the decoded image unchanged (as a normalised tensor);
    ``set_epoch(e)`` changes the random crops and flips, as a new epoch does."""

    def __init__(self, n: int, size: int = 32, classes: int = 10, seed: int = 0,
                 augment: bool = True, pad: int = 4) -> None:
        if n < 1 or size < 4:
            raise ValueError("n must be at least 1 and size at least 4")
        images, self.labels = make_images(n, size, classes, seed)
        self.encoded = [encode_png(im) for im in images]
        self.size, self.seed, self.augment, self.pad = size, seed, augment, pad
        # shared memory: persistent DataLoader workers (forked) see set_epoch too
        self._epoch = multiprocessing.RawValue("i", 0)

    def __len__(self) -> int:
        return len(self.encoded)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Call before ``iter(loader)``: the workers read it when they decode."""
        self._epoch.value = int(epoch)

    @property
    def encoded_bytes(self) -> int:
        return sum(len(b) for b in self.encoded)

    def augment_image(self, img: np.ndarray, index: int) -> np.ndarray:
        """Random crop of the reflect-padded image, scaled to ``size``, random flip."""
        from PIL import Image

        rng = np.random.default_rng((self.seed, self.epoch, index))
        p, s = self.pad, self.size
        padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="reflect")
        side = int(rng.integers(s * 3 // 4, s + 1))
        top, left = rng.integers(0, s + 2 * p - side + 1, 2)
        crop = Image.fromarray(padded[top:top + side, left:left + side])
        crop = crop.resize((s, s), Image.Resampling.BILINEAR)
        out = np.asarray(crop)
        return out[:, ::-1] if rng.random() < 0.5 else out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        import torch

        img = decode_png(self.encoded[index])
        if self.augment:
            img = self.augment_image(img, index)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()  # writable copy
        return (x / 255.0 - MEAN) / STD, int(self.labels[index])


def predict_throughput(loader_rate: float, model_rate: float, workers: int,
                       cores: int | None = None) -> float:
    """Samples/s of a load-then-compute pipeline with ``workers`` DataLoader workers.

    ``workers == 0``: one process does both, ``1 / (1/L + 1/M)``. Otherwise the stages
    overlap and the slower sets the pace: ``min(w' * L, M)`` with ``w' = min(w, cores)``
    (a worker without a core of its own loads nothing more)."""
    if loader_rate <= 0 or model_rate <= 0 or workers < 0:
        raise ValueError("rates must be positive and workers >= 0")
    if workers == 0:
        return 1.0 / (1.0 / loader_rate + 1.0 / model_rate)
    w = workers if cores is None else min(workers, cores)
    return min(w * loader_rate, model_rate)


def largest_batch(fits: Callable[[int], bool], start: int = 1, limit: int = 1 << 16
                  ) -> tuple[int, list[tuple[int, bool]]]:
    """The largest batch ``b <= limit`` with ``fits(b)``, by doubling then bisection.

    Returns it (0 if not even ``start`` fits) and every ``(batch, fitted)`` tried, in
    order. Assumes that a batch that fits has every smaller batch fitting too."""
    tried: list[tuple[int, bool]] = []

    def probe(b: int) -> bool:
        ok = bool(fits(b))
        tried.append((b, ok))
        return ok

    if not probe(start):
        return 0, tried
    good, bad = start, None
    while bad is None:
        nxt = min(good * 2, limit)
        if nxt == good:
            return good, tried
        if probe(nxt):
            good = nxt
        else:
            bad = nxt
    while bad - good > 1:
        mid = (good + bad) // 2
        if probe(mid):
            good = mid
        else:
            bad = mid
    return good, tried


def budget_fits(peak_of: Callable[[int], int], budget_bytes: int,
                peaks: dict[int, int] | None = None) -> Callable[[int], bool]:
    """``fits(b)``: the measured peak of one step at batch ``b`` is within the budget.

    ``peaks``, if given, collects every measured peak by batch."""
    def fits(b: int) -> bool:
        peak = int(peak_of(b))
        if peaks is not None:
            peaks[b] = peak
        return peak <= budget_bytes

    return fits


def cuda_step_fits(step: Callable[[int], Any],
                   peaks: dict[int, int] | None = None) -> Callable[[int], bool]:
    """``fits(b)`` on a GPU: one training step at batch ``b`` runs without running out
    of memory. The out-of-memory error is caught, the cache emptied, and ``False``
    returned; ``peaks`` collects ``torch.cuda.max_memory_allocated`` of each step."""
    import torch

    def fits(b: int) -> bool:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            step(b)
            torch.cuda.synchronize()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return False
        if peaks is not None:
            peaks[b] = int(torch.cuda.max_memory_allocated())
        return True

    return fits
