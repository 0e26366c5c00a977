"""3-D residual U-Net (the StMt student): InstanceNorm + LeakyReLU, strided-conv down,
transposed-conv up, optional deep supervision.

Input ``(B, in_channels, D, H, W)``; every spatial size must be divisible by the product of
the strides along it (2 ** n_down for the default isotropic strides). Output: logits
``(B, num_classes, D, H, W)``, or in training mode with ``deep_supervision`` a list of logits,
full resolution first, then each coarser decoder level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else (int(v[0]), int(v[1]), int(v[2]))


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int | Sequence[int] = 1) -> None:
        stride = _triple(stride)
        super().__init__(
            nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.InstanceNorm3d(cout, affine=True, eps=1e-5),
            nn.LeakyReLU(0.01, inplace=True),
        )


class ResBlock(nn.Module):
    """conv-norm-act-conv-norm plus identity, then act."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(channels, affine=True, eps=1e-5)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.norm2(self.conv2(self.conv1(x))))


class ResUNet(nn.Module):
    """Residual U-Net.

    Args:
        in_channels: input channels (1 for CT).
        num_classes: output channels (background included).
        base_channels: channels at full resolution; doubled per level up to ``max_channels``.
        n_down: number of down-samplings (and up-samplings).
        blocks_down: residual blocks per encoder level (``n_down + 1`` entries, or one int).
        blocks_up: residual blocks per decoder level.
        strides: per down-sampling, an int or a (d, h, w) triple: anisotropic nets use
            (1, 2, 2) on the first levels.
        deep_supervision: also return the logits of the coarser decoder levels in training.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 14,
        base_channels: int = 16,
        n_down: int = 5,
        blocks_down: int | Sequence[int] = 2,
        blocks_up: int = 1,
        max_channels: int = 320,
        strides: Sequence[int | Sequence[int]] | None = None,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if n_down < 1:
            raise ValueError("n_down must be >= 1")
        blocks = [blocks_down] * (n_down + 1) if isinstance(blocks_down, int) else list(
            blocks_down)
        if len(blocks) != n_down + 1:
            raise ValueError(f"blocks_down needs {n_down + 1} entries, got {len(blocks)}")
        strides = [2] * n_down if strides is None else list(strides)
        if len(strides) != n_down:
            raise ValueError(f"strides needs {n_down} entries, got {len(strides)}")
        self.strides = [_triple(s) for s in strides]
        self.deep_supervision = deep_supervision
        ch = [min(base_channels * 2**i, max_channels) for i in range(n_down + 1)]
        self.channels = ch

        self.stem = ConvNormAct(in_channels, ch[0])
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList([nn.Sequential(*[ResBlock(ch[0]) for _ in range(blocks[0])])])
        for i in range(1, n_down + 1):
            self.down.append(ConvNormAct(ch[i - 1], ch[i], stride=self.strides[i - 1]))
            self.encoder.append(nn.Sequential(*[ResBlock(ch[i]) for _ in range(blocks[i])]))
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for i in range(n_down - 1, -1, -1):
            s = self.strides[i]
            self.up.append(nn.ConvTranspose3d(ch[i + 1], ch[i], s, stride=s, bias=False))
            self.fuse.append(ConvNormAct(2 * ch[i], ch[i]))
            self.decoder.append(nn.Sequential(*[ResBlock(ch[i]) for _ in range(blocks_up)]))
            self.heads.append(nn.Conv3d(ch[i], num_classes, 1))
        if not deep_supervision:  # only the full-resolution head is used
            self.heads = nn.ModuleList([self.heads[-1]])

    def divisor(self) -> tuple[int, int, int]:
        """Each input size must be a multiple of this (per axis)."""
        d = [1, 1, 1]
        for s in self.strides:
            d = [a * b for a, b in zip(d, s, strict=True)]
        return d[0], d[1], d[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        x = self.encoder[0](self.stem(x))
        for down, enc in zip(self.down, self.encoder[1:], strict=True):
            skips.append(x)
            x = enc(down(x))
        outputs = []
        n = len(self.up)
        for k, (up, fuse, dec) in enumerate(zip(self.up, self.fuse, self.decoder, strict=True)):
            x = dec(fuse(torch.cat([up(x), skips[-1 - k]], dim=1)))
            if self.deep_supervision and self.training and k < n - 1:
                outputs.append(self.heads[k](x))
        full = self.heads[-1](x)
        if self.deep_supervision and self.training:
            return [full, *outputs[::-1]]
        return full
