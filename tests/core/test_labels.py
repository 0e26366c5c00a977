

from flarecli.core.labels import (
    CLASSES,
    LABELS,
    NSD_TOLERANCE_MM,
    ORGANS,
    TUMOR,
)


def test_schema():
    assert len(ORGANS) == 13 and TUMOR == 14 and CLASSES == tuple(range(1, 15))
    assert LABELS[1] == "liver" and LABELS[13] == "left_kidney" and LABELS[14] == "tumor"
    assert NSD_TOLERANCE_MM[12] == 7 and NSD_TOLERANCE_MM[5] == 2 and set(NSD_TOLERANCE_MM) == \
        set(CLASSES)
