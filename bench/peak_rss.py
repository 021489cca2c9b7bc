"""Peak resident memory of the calling process, for benchmark workers.

``getrusage().ru_maxrss`` is not it on Linux: the value survives ``exec``, so a worker started by a large
parent reports the parent's peak (a 485 MiB worker read 1,574 MiB under pytest). ``VmHWM`` in
``/proc/self/status`` belongs to the process's own address space, which ``exec`` replaces.
"""

from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """This process's own peak RSS in MiB (VmHWM; ``ru_maxrss`` where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
