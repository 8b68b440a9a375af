"""A small ResNet-style CNN and seeded synthetic images (chapter 10).

The network follows He et al. (2016) [he2016deep]: a stem convolution, then stages of
basic residual blocks ``relu(x + norm(conv(relu(norm(conv(x))))))``; every stage after
the first halves the resolution with a stride-2 convolution and doubles the width (the
shortcut is then a 1x1 stride-2 convolution). ``width`` and ``blocks`` (per stage) are
the knobs. ``norm="batch"`` uses BatchNorm as the paper does; ``norm="group"`` uses
GroupNorm, whose statistics are per sample, so a data-parallel run on shards of a
batch computes exactly what one process computes on the whole batch (BatchNorm's
statistics are per rank's shard and would differ).

The images are made in memory: class ``c`` is a sinusoidal grating whose orientation
and frequency depend on ``c``, plus Gaussian noise, so a model can learn them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

NORMS = ("batch", "group")


def _norm(kind: str, ch: int) -> nn.Module:
    from torch import nn

    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch)
    raise ValueError(f"norm must be one of {NORMS}, not {kind!r}")


def make_block(cin: int, cout: int, stride: int, norm: str) -> nn.Module:
    """One basic residual block (two 3x3 convolutions and a shortcut)."""
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.n1 = _norm(norm, cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.n2 = _norm(norm, cout)
            self.short: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           _norm(norm, cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.n1(self.conv1(x)).relu()
            out = self.n2(self.conv2(out))
            return (out + self.short(x)).relu()

    return BasicBlock()


def build_resnet(width: int = 16, blocks: int = 1, stages: int = 3,
                 classes: int = 10, norm: str = "batch", seed: int = 0) -> nn.Module:
    """The ResNet: stem, ``stages`` stages of ``blocks`` blocks, pool, linear head."""
    import torch
    from torch import nn

    if min(width, blocks, stages, classes) < 1:
        raise ValueError("width, blocks, stages and classes must be at least 1")
    _norm(norm, 8)
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False),
                               _norm(norm, width), nn.ReLU()]
    cin = width
    for s in range(stages):
        cout = width * 2**s
        for b in range(blocks):
            layers.append(make_block(cin, cout, 2 if (s > 0 and b == 0) else 1, norm))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def synthetic_images(n: int, size: int = 32, classes: int = 10, seed: int = 0,
                     noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded images ``(n, 3, size, size)`` and labels: class gratings + noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    r = torch.arange(size, dtype=torch.float32) / size
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    ang = y.float() * math.pi / classes
    freq = 2.0 + (y % 3).float()
    phase = (torch.cos(ang)[:, None, None] * xx + torch.sin(ang)[:, None, None] * yy)
    img = torch.sin(2 * math.pi * freq[:, None, None] * phase)
    x = img[:, None].repeat(1, 3, 1, 1)
    x = x + noise * torch.randn(x.shape, generator=g)
    return x, y
