"""U-Net family (the StMt student and its relatives): 2-D or 3-D, residual or plain blocks,
InstanceNorm + LeakyReLU, strided-conv down, transposed-conv up, one or several output heads,
optional deep supervision.

Input ``(B, in_channels, *spatial)`` with ``dims`` spatial axes; every spatial size must be
divisible by the product of the strides along it (:meth:`ResUNet.divisor`).

Outputs:

* the classic single head (``num_classes``, no ``heads``): logits ``(B, C, *spatial)``, or in
  training mode with ``deep_supervision`` a list of logits, full resolution first, then each
  coarser decoder level;
* named heads (``heads={"organs": 14, "tumor": 2}``): a dict head name -> the same. With
  ``split_levels = k`` the last ``k`` decoder levels are duplicated per head (the dual-decoder
  U-Net of seed 002 splits its last two up-sampling stages into an organ and a cancer
  decoder); the rest of the network is shared. A head's own parameters live under
  ``branches.<head>.``, so a training step can freeze or train them by that prefix.

Parameter names of the single-head network do not depend on ``heads`` having been given, so
bundles written before named heads existed load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_UP = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BLOCKS = ("residual", "plain")


def _tuple(v: int | Sequence[int], dims: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * dims
    if len(v) != dims:
        raise ValueError(f"expected {dims} values, got {list(v)}")
    return tuple(int(a) for a in v)


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, dims: int = 3, stride: int | Sequence[int] = 1,
                 kernel: int | Sequence[int] = 3) -> None:
        k = _tuple(kernel, dims)
        super().__init__(
            _CONV[dims](cin, cout, k, stride=_tuple(stride, dims), padding=tuple(a // 2 for a in k),
                        bias=False),
            _NORM[dims](cout, affine=True, eps=1e-5),
            nn.LeakyReLU(0.01, inplace=True),
        )


class ResBlock(nn.Module):
    """conv-norm-act-conv-norm plus identity, then act."""

    def __init__(self, channels: int, dims: int = 3, kernel: int | Sequence[int] = 3) -> None:
        super().__init__()
        k = _tuple(kernel, dims)
        self.conv1 = ConvNormAct(channels, channels, dims, kernel=k)
        self.conv2 = _CONV[dims](channels, channels, k, padding=tuple(a // 2 for a in k),
                                 bias=False)
        self.norm2 = _NORM[dims](channels, affine=True, eps=1e-5)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.norm2(self.conv2(self.conv1(x))))


def _blocks(kind: str, n: int, channels: int, dims: int,
            kernel: int | Sequence[int] = 3) -> nn.Sequential:
    if kind == "residual":
        return nn.Sequential(*[ResBlock(channels, dims, kernel) for _ in range(n)])
    # a plain block: two conv-norm-act, no shortcut (the classic U-Net level)
    return nn.Sequential(*[layer for _ in range(n) for layer in
                           (ConvNormAct(channels, channels, dims, kernel=kernel),
                            ConvNormAct(channels, channels, dims, kernel=kernel))])


class _Level(nn.Module):
    """One decoder level: up-sample, concatenate the skip, fuse, refine."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, ...], dims: int, block: str,
                 n_blocks: int, kernel: int | Sequence[int] = 3) -> None:
        super().__init__()
        self.up = _UP[dims](cin, cout, stride, stride=stride, bias=False)
        self.fuse = ConvNormAct(2 * cout, cout, dims, kernel=kernel)
        self.blocks = _blocks(block, n_blocks, cout, dims, kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.fuse(torch.cat([self.up(x), skip], dim=1)))


class _Branch(nn.Module):
    """A head's own decoder levels (the last ``split_levels``) and its output convolutions."""

    def __init__(self, levels: list[_Level], outputs: list[nn.Module]) -> None:
        super().__init__()
        self.levels = nn.ModuleList(levels)
        self.outputs = nn.ModuleList(outputs)


class ResUNet(nn.Module):
    """U-Net with residual (default) or plain blocks.

    Args:
        in_channels: input channels (1 for CT).
        num_classes: output channels of the single classic head (background included).
        base_channels: channels at full resolution; doubled per level up to ``max_channels``.
        n_down: number of down-samplings (and up-samplings).
        blocks_down: blocks per encoder level (``n_down + 1`` entries, or one int).
        blocks_up: blocks per decoder level.
        strides: per down-sampling, an int or a per-axis tuple: anisotropic nets use (1, 2, 2)
            on the first levels.
        deep_supervision: also return the logits of the coarser decoder levels in training.
        dims: 2 (slices) or 3 (volumes).
        block: 'residual' or 'plain' (two conv-norm-act per block, no shortcut).
        heads: named heads, head name -> classes (background included); replaces
            ``num_classes``.
        split_levels: how many of the last decoder levels each named head has to itself.
        kernels: the convolution kernel of each level (``n_down + 1`` entries, full
            resolution first; an int or a per-axis tuple): anisotropic networks use (1, 3, 3)
            where the slices are thick, with strides (1, 2, 2) there (seed 004).
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
        dims: int = 3,
        block: str = "residual",
        heads: dict[str, int] | None = None,
        split_levels: int = 0,
        kernels: Sequence[int | Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if dims not in _CONV:
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got '{block}'")
        if n_down < 1:
            raise ValueError("n_down must be >= 1")
        if not 0 <= split_levels <= n_down:
            raise ValueError(f"split_levels must be within 0..{n_down}")
        if heads is not None and (not heads or any(int(c) < 2 for c in heads.values())):
            raise ValueError("heads must name at least one head, each with >= 2 classes")
        blocks = [blocks_down] * (n_down + 1) if isinstance(blocks_down, int) else list(
            blocks_down)
        if len(blocks) != n_down + 1:
            raise ValueError(f"blocks_down needs {n_down + 1} entries, got {len(blocks)}")
        strides = [2] * n_down if strides is None else list(strides)
        if len(strides) != n_down:
            raise ValueError(f"strides needs {n_down} entries, got {len(strides)}")
        kernels = [3] * (n_down + 1) if kernels is None else list(kernels)
        if len(kernels) != n_down + 1:
            raise ValueError(f"kernels needs {n_down + 1} entries, got {len(kernels)}")
        kern = [_tuple(k, dims) for k in kernels]
        if any(k % 2 == 0 or k < 1 for ks in kern for k in ks):
            raise ValueError("kernel sizes must be odd and positive")
        self.dims = dims
        self.strides = [_tuple(s, dims) for s in strides]
        self.deep_supervision = deep_supervision
        self.head_classes = dict(heads) if heads is not None else None
        ch = [min(base_channels * 2**i, max_channels) for i in range(n_down + 1)]
        self.channels = ch
        conv = _CONV[dims]

        self.stem = ConvNormAct(in_channels, ch[0], dims, kernel=kern[0])
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList([_blocks(block, blocks[0], ch[0], dims, kern[0])])
        for i in range(1, n_down + 1):
            self.down.append(ConvNormAct(ch[i - 1], ch[i], dims, stride=self.strides[i - 1],
                                         kernel=kern[i]))
            self.encoder.append(_blocks(block, blocks[i], ch[i], dims, kern[i]))

        def level(i: int) -> _Level:
            return _Level(ch[i + 1], ch[i], self.strides[i], dims, block, blocks_up, kern[i])

        order = list(range(n_down - 1, -1, -1))  # decoder levels, coarse to fine
        n_shared = n_down - split_levels
        self.n_shared = n_shared
        if heads is None or (len(heads) == 1 and split_levels == 0):
            n_out = next(iter(heads.values())) if heads else num_classes
            # the classic layout (its parameter names are those of older bundles)
            self.up, self.fuse, self.decoder = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
            self.heads = nn.ModuleList()
            for i in order:
                lv = level(i)
                self.up.append(lv.up)
                self.fuse.append(lv.fuse)
                self.decoder.append(lv.blocks)
                self.heads.append(conv(ch[i], int(n_out), 1))
            if not deep_supervision:  # only the full-resolution head is used
                self.heads = nn.ModuleList([self.heads[-1]])
            self.branches = None
            return
        self.shared = nn.ModuleList([level(i) for i in order[:n_shared]])
        self.branches = nn.ModuleDict()
        for name, n_out in heads.items():
            outs = [conv(ch[i], int(n_out), 1) for i in order]
            self.branches[name] = _Branch([level(i) for i in order[n_shared:]],
                                          outs if deep_supervision else outs[-1:])

    def divisor(self) -> tuple[int, ...]:
        """Each input size must be a multiple of this (per axis)."""
        d = [1] * self.dims
        for s in self.strides:
            d = [a * b for a, b in zip(d, s, strict=True)]
        return tuple(d)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        x = self.encoder[0](self.stem(x))
        for down, enc in zip(self.down, self.encoder[1:], strict=True):
            skips.append(x)
            x = enc(down(x))
        return x, skips

    def _ds(self) -> bool:
        return self.deep_supervision and self.training

    def forward(self, x: torch.Tensor):
        x, skips = self._encode(x)
        if self.branches is None:
            outputs = []
            n = len(self.up)
            for k, (up, fuse, dec) in enumerate(zip(self.up, self.fuse, self.decoder,
                                                    strict=True)):
                x = dec(fuse(torch.cat([up(x), skips[-1 - k]], dim=1)))
                if self._ds() and k < n - 1:
                    outputs.append(self.heads[k](x))
            full = self.heads[-1](x)
            out = [full, *outputs[::-1]] if self._ds() else full
            return {next(iter(self.head_classes)): out} if self.head_classes else out
        features = []
        for k, lv in enumerate(self.shared):
            x = lv(x, skips[-1 - k])
            features.append(x)
        result = {}
        for name, branch in self.branches.items():
            y, feats = x, list(features)
            for j, lv in enumerate(branch.levels):
                y = lv(y, skips[-1 - self.n_shared - j])
                feats.append(y)
            if self._ds():
                result[name] = [out(f) for out, f in zip(branch.outputs, feats, strict=True)
                                ][::-1]
            else:
                result[name] = branch.outputs[-1](feats[-1])
        return result
