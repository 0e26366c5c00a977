"""Box helpers of preprocessing."""

import numpy as np


def test_label_counts_is_bincount_on_any_map():
    from flarecli.core.preprocessing.boxes import label_counts

    rng = np.random.default_rng(0)
    maps = [np.zeros((4, 5, 6), np.uint8), np.zeros((0, 3, 3), np.uint8),
            np.full((3, 3, 3), 7, np.uint8)]
    for _ in range(20):
        a = np.zeros(tuple(rng.integers(1, 20, 3)), np.uint8)
        z, y, x = (int(rng.integers(0, n)) for n in a.shape)
        a[z:, y:, x:] = rng.integers(0, 15, a[z:, y:, x:].shape)
        maps += [a, a[::-1, :, ::-1], a.transpose(2, 0, 1)]  # views: flips, transposes
    for a in maps:
        for minlength in (0, 15, 256):
            want = np.bincount(a.ravel(), minlength=minlength)
            got = label_counts(a, minlength)
            n = max(len(want), len(got))
            assert np.array_equal(np.pad(got, (0, n - len(got))),
                                  np.pad(want, (0, n - len(want)))), a.shape
