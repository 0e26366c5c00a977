"""Canonical orientation: every network sees anatomy the same way round, whatever the storage.

Scans are stored with any direction (identity/LPS, RAS, flipped slices, permuted axes). A
network trained in voxel space would see left and right swapped between an LPS- and a
RAS-stored scan, which makes the left/right organ pairs (kidneys, adrenals) ambiguous. So
training and inference reorient every array to the canonical order of an identity-direction
scan -- array axis 0 towards superior, 1 towards posterior, 2 towards the patient's left --
with a transpose and flips only (no resampling), and inference undoes it exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: Array axis of the canonical order that runs along the patient's left-right direction.
LEFT_RIGHT_AXIS = 2


@dataclass(frozen=True)
class Reorientation:
    """``canonical = flip(transpose(array, perm), flips)``; ``invert`` goes back."""

    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flips)

    def apply(self, array):
        if self.identity:
            return array
        out = _transpose(array, self.perm)
        axes = [a for a in range(3) if self.flips[a]]
        return _flip(out, axes) if axes else out

    def view(self, array: np.ndarray) -> np.ndarray:
        """``apply`` without its copy: a strided NumPy view in canonical order, through which
        writes reach ``array`` (a 512 x 512 x 300 scan's 150 MB copy saved, and the labels
        written straight into the scan's own orientation)."""
        if self.identity:
            return array
        out = np.transpose(array, self.perm)
        axes = [a for a in range(3) if self.flips[a]]
        return np.flip(out, axes) if axes else out

    def invert(self, array):
        if self.identity:
            return array
        axes = [a for a in range(3) if self.flips[a]]
        out = _flip(array, axes) if axes else array
        return _transpose(out, tuple(int(i) for i in np.argsort(self.perm)))

    def shape(self, shape_zyx) -> tuple[int, int, int]:
        return tuple(int(shape_zyx[p]) for p in self.perm)  # type: ignore[return-value]

    def spacing(self, spacing_zyx) -> tuple[float, float, float]:
        return tuple(float(spacing_zyx[p]) for p in self.perm)  # type: ignore[return-value]


def _transpose(array, perm):
    if isinstance(array, np.ndarray):
        return np.ascontiguousarray(np.transpose(array, perm))
    return array.permute(*perm).contiguous()


def _flip(array, axes):
    if isinstance(array, np.ndarray):
        return np.ascontiguousarray(np.flip(array, axes))
    import torch

    return torch.flip(array, axes)


def to_canonical(direction) -> Reorientation:
    """The transpose + flips that bring an array with this ITK direction to canonical order.

    Oblique directions use the closest axis assignment (the permutation with the largest
    total |cosine|; a tie is broken by the directions, never by the storage order); the
    residual rotation is left as is.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    # array axis a is voxel axis 2 - a; its physical direction is column 2 - a of d
    cos = np.stack([d[:, 2 - a] for a in range(3)])  # cos[a, p]: array axis a . physical p
    # a tie (an axis exactly 45 degrees between two physical ones) goes to the assignment
    # whose axes point most along the physical ones (signed), then whose physical axes come
    # first: a choice made by the directions alone, so that the same scan stored with its
    # axes in another order reaches the same canonical array
    best = max(itertools.permutations(range(3)),
               key=lambda phys: (round(sum(abs(cos[a, phys[a]]) for a in range(3)), 9),
                                 round(sum(cos[a, phys[a]] for a in range(3)), 9)))
    # canonical axis c holds physical axis 2 - c
    perm = tuple(best.index(2 - c) for c in range(3))
    flips = tuple(bool(cos[perm[c], 2 - c] < 0) for c in range(3))
    return Reorientation(perm, flips)  # type: ignore[arg-type]


#: The letters of each anatomical axis in ITK/DICOM orientation codes.
_AXIS_LETTERS: dict[str, str] = {"LR": "LR", "AP": "AP", "SI": "SI"}

#: The orientation of the canonical order above: an identity-direction scan.
CANONICAL = "LPS"


def check_orientation_code(code: str) -> str:
    """Validate a three-letter ITK/DICOM orientation code ('LPS', 'RAS', 'LPI', ...): one
    letter of each anatomical axis. Raises ValueError."""
    if not isinstance(code, str) or len(code) != 3 or sorted(
            _axis_name(c) for c in code.upper()) != ["AP", "LR", "SI"]:
        raise ValueError(f"orientation '{code}' is not a code like LPS, RAS or LPI "
                         "(one of L/R, one of A/P, one of S/I)")
    return code.upper()


def _axis_name(letter: str) -> str:
    for name, letters in _AXIS_LETTERS.items():
        if letter in letters:
            return name
    return "?"


def direction_of(code: str) -> np.ndarray:
    """The ITK direction matrix (3x3) of a scan stored in orientation ``code``."""
    import SimpleITK as sitk

    check_orientation_code(code)
    return np.asarray(sitk.DICOMOrientImageFilter.GetDirectionCosinesFromOrientation(
        code.upper()), dtype=np.float64).reshape(3, 3)


def to_orientation(direction, code: str = CANONICAL) -> Reorientation:
    """The transpose + flips that bring an array with this ITK direction to the array order of
    a scan stored in orientation ``code`` (``to_canonical`` is ``code='LPS'``)."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    return to_canonical(direction_of(code).T @ d)


def array_axis(code: str, axis: str) -> int:
    """The array axis (0 = z ... 2 = x) along anatomical axis 'SI', 'AP' or 'LR' of an array
    in orientation ``code``."""
    voxel_axis = [_axis_name(c) for c in check_orientation_code(code)].index(axis)
    return 2 - voxel_axis
