"""Head lookups between FLARE ids and head classes."""

import numpy as np

from flarecli.core.recipes import heads as H


def test_head_luts():
    ids = np.arange(15, dtype=np.uint8)
    abdomen = [list(range(1, 15))]
    assert H.head_lut(abdomen)[ids].tolist() == [0] + [1] * 14
    assert H.head_lut(list(range(1, 14)))[ids].tolist() == list(range(14)) + [0]
    assert H.head_lut([14])[ids].tolist() == [0] * 14 + [1]
    assert H.head_lut([2, [7, 8], 13])[ids].tolist() == [0, 0, 1, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0,
                                                         3, 0]
    assert H.head_ids([2, [7, 8], 13])[:4].tolist() == [0, 2, 0, 13]
    assert H.plain_classes([2, [7, 8], 13]) == {2, 13}
