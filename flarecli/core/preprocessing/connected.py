"""Connected components of boolean masks (pure NumPy/SciPy): the neighbourhoods, the largest
component, and the main components of a mask that came out in pieces.

Shared below the stages that use them: preprocessing finds the patient's body with them,
inference the region of interest, post-processing the organs' largest parts.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from flarecli.core.errors import InputError

CONNECTIVITY: dict[int, int] = {6: 1, 18: 2, 26: 3}


def structure(connectivity: int) -> np.ndarray:
    """3-D neighbourhood for 6-, 18- or 26-connectivity. Raises InputError otherwise."""
    if connectivity not in CONNECTIVITY:
        raise InputError(f"connectivity {connectivity}: choose 6, 18 or 26")
    return ndimage.generate_binary_structure(3, CONNECTIVITY[connectivity])


def labelled_components(mask: np.ndarray, connectivity: int = 26
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(component id per voxel, voxels per component id); id 0 = outside the mask, size 0."""
    components, _ = ndimage.label(mask, structure=structure(connectivity))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components, sizes


def largest_component(mask: np.ndarray, connectivity: int = 26) -> np.ndarray | None:
    """The largest connected component of a boolean mask (None when the mask is empty)."""
    components, sizes = labelled_components(mask, connectivity)
    if len(sizes) == 1:
        return None
    return components == int(np.argmax(sizes))


def main_components(mask: np.ndarray, fraction: float, connectivity: int = 26
                    ) -> np.ndarray | None:
    """Union of the components holding at least ``fraction`` of the largest one's voxels
    (None when the mask is empty): drops specks, keeps a region that came out in pieces."""
    components, sizes = labelled_components(mask, connectivity)
    if len(sizes) == 1:
        return None
    return (sizes >= fraction * sizes.max())[components]
