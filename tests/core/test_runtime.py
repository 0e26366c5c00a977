import platform
import subprocess
import sys

import pytest

#: In a process of its own (glibc's malloc state is per process): a 30 MB block freed raises
#: glibc's mmap threshold to 30 MB; then a 20 MB block is made behind a small one and freed.
#: Prints how many MB the resident memory fell by.
FREED = """
import sys
import numpy as np
from flarecli.core.runtime import return_large_frees
from flarecli.core.inference.profiling import rss_mb
big = np.ones(30 << 20, np.uint8); del big
if sys.argv[1] == "on":
    assert return_large_frees()
block = np.ones(20 << 20, np.uint8)
after = np.ones(1 << 16, np.uint8)  # keeps the heap's top above the block
before = rss_mb()
del block
print(before - rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_freed_box_sized_arrays_are_given_back_to_the_system():
    def fell(mode):
        out = subprocess.run([sys.executable, "-c", FREED, mode], capture_output=True,
                             text=True, check=True)
        return float(out.stdout)

    assert fell("off") < 5  # glibc kept the 20 MB in its heap
    assert fell("on") > 18
