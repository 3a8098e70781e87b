"""The allocator setting keeps freed memory in the process (and only then)."""

import subprocess
import sys

import pytest

_PROBE = """
import sys, torch
from featurenerf_ns.utils.allocator import retain_freed_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "retain":
    assert retain_freed_memory() and retain_freed_memory()  # idempotent
before = rss_mb()
block = torch.ones(64 * 2**20)  # 256 MB, touched
del block
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")
@pytest.mark.parametrize("mode", ["retain", "default"])
def test_freed_blocks_stay_in_the_process_only_when_retained(mode):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    kept_mb = float(out.stdout.strip().splitlines()[-1])
    if mode == "retain":
        assert kept_mb > 200  # the 256 MB block is kept for the next allocation
    else:
        assert kept_mb < 50  # returned to the kernel on free
