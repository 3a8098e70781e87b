"""Locking: portable (nothing platform-specific imported by the entry-point modules) and exclusive across
processes; the temporary files of killed writes."""

from __future__ import annotations

import subprocess
import sys
import time

from featurenerf_ns.utils.io import exclusive_lock, remove_temporaries

HOLD_S = 1.5


def test_entry_point_modules_import_without_fcntl():
    """nerfstudio imports our method configs (and through them every dataparser) for every ns-* command: on a
    platform without fcntl they must still import."""
    code = "import sys; sys.modules['fcntl'] = None; import featurenerf_ns.method_configs; print('imported')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr[-2000:]


def test_exclusive_lock_makes_a_second_process_wait(tmp_path):
    lock, marker = tmp_path / "x.lock", tmp_path / "holder.txt"
    holder = (
        "import sys, time\n"
        "from featurenerf_ns.utils.io import exclusive_lock, remove_temporaries\n"
        f"with exclusive_lock({str(lock)!r}):\n"
        f"    open({str(marker)!r}, 'w').write('held')\n"
        f"    time.sleep({HOLD_S})\n"
        f"    open({str(marker)!r}, 'w').write('released')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder])
    try:
        deadline = time.monotonic() + 120
        while not marker.is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.is_file(), "the holder never took the lock"
        with exclusive_lock(lock):
            # Only once the holder has left its block.
            assert marker.read_text() == "released"
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0


def test_remove_temporaries_clears_a_killed_write_of_the_named_files_only(tmp_path):
    # a process killed inside atomic_path's block leaves its real temporary file behind
    killed = (
        "import os, sys\n"
        "from featurenerf_ns.utils.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    os._exit(9)\n"
    )
    for name in ("obj.npy", "other.npy"):
        assert subprocess.run([sys.executable, "-c", killed, str(tmp_path / name)], timeout=120).returncode == 9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.startswith((".obj.npy.", ".other.npy.")) and ".tmp" in n for n in left)
    (tmp_path / "obj.npy.json").write_text("{}")  # a file whose name starts like one: not a temporary
    remove_temporaries([tmp_path / "obj.npy", tmp_path / "absent" / "x.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["obj.npy.json", *(n for n in left if "other" in n)])
