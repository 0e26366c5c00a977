"""Connected components of masks."""

import numpy as np

from flarecli.core.preprocessing.connected import main_components


def test_main_components_keep_pieces_and_drop_specks():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:10, 2:10, 2:8] = True  # liver side, 384 voxels
    mask[2:10, 2:10, 12:16] = True  # spleen side, 256 voxels, not connected
    mask[18, 18, 18] = True  # a speck
    out = main_components(mask, 0.1)
    assert out.sum() == 640 and not out[18, 18, 18]
    assert main_components(mask, 0.9).sum() == 384  # only the largest
    assert main_components(np.zeros((4, 4, 4), bool), 0.1) is None
