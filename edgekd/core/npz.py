"""What an npz archive would take in memory, known before a byte of it is inflated.

An npz is a zip of ``.npy`` members, each opening with a small header that declares the array's shape and dtype. A
few megabytes on disk can declare gigabytes (a zip bomb of zeros): inflated on a 4 GB Jetson, it gets the process
killed by the out-of-memory killer, without a message, before numpy could fail an allocation. Every reader of an
npz (``core/labelled.py``: training data, ``--calib-data``, ``--data``; ``core/manifest.py``: a bundle's
``calib.npz`` and ``val_sample.npz``) asks :func:`npz_problem` first: it reads only the headers (through the zip's
stream, a few hundred bytes each) and refuses an archive whose arrays declare more than half the memory this process
may still use (the machine's available memory, and its memory cgroup's limit when it has one).
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

#: The share of the memory available an archive's arrays may declare: reading an array and bringing it to the
#: input size holds about two copies at once.
MEMORY_SHARE = 0.5


def _read_int(path: str) -> Optional[int]:
    with contextlib.suppress(OSError, ValueError):
        text = Path(path).read_text().strip()
        return None if text in ("", "max") else int(text)
    return None


def _cgroup_room() -> Optional[int]:
    """Bytes this process's memory cgroup still allows (limit minus usage, v2 or v1), or None without a limit."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _id, controllers, rel = line.split(":", 2)
            rel = rel.lstrip("/")
            if controllers == "":  # cgroup v2
                base = os.path.join("/sys/fs/cgroup", rel)
                limit = _read_int(os.path.join(base, "memory.max"))
                used = _read_int(os.path.join(base, "memory.current"))
            elif "memory" in controllers.split(","):
                base = os.path.join("/sys/fs/cgroup/memory", rel)
                limit = _read_int(os.path.join(base, "memory.limit_in_bytes"))
                used = _read_int(os.path.join(base, "memory.usage_in_bytes"))
            else:
                continue
            if limit is not None and limit < 1 << 60 and used is not None:  # v1 says "no limit" with a huge number
                return max(limit - used, 0)
    return None


def memory_available() -> Optional[int]:
    """Bytes this process may still allocate: the machine's ``MemAvailable`` (Linux), lowered to what its memory
    cgroup allows; None where neither can be read (then only a failed allocation stops a reader)."""
    room = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
    cgroup = _cgroup_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    return room


def declared_bytes(path: str | os.PathLike) -> Optional[int]:
    """The bytes the ``.npy`` members of the npz at ``path`` declare (shape × item size, summed), read from their
    headers without inflating the data; None when the file is not a zip or a header cannot be read (the regular
    reader then says what is wrong)."""
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _fortran, dtype = read(f)
                total += math.prod(int(d) for d in shape) * dtype.itemsize
    except Exception:  # noqa: BLE001 - a damaged archive raises anything (zlib.error, tokenize.TokenError, …):
        return None  # the regular reader meets it again and says what is wrong in one line
    return total


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.0f} MiB"


def npz_problem(path: str | os.PathLike) -> Optional[str]:
    """Why the npz at ``path`` may not be inflated here (its arrays declare more than :data:`MEMORY_SHARE` of
    :func:`memory_available`), or None."""
    declared = declared_bytes(path)
    room = memory_available()
    if declared is None or room is None or declared <= MEMORY_SHARE * room:
        return None
    return (f"its arrays declare {_gib(declared)}, more than half the memory available here ({_gib(room)}); "
            "an archive that large (or a zip bomb) is not read")
