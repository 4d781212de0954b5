"""Whether POSIX (fcntl) locks on a folder reach every host that shares it.

The spend table counts a run's spend in SQLite under rollback-journal locks, which are fcntl
byte-range locks. On NFSv4 (and NFSv3 with lockd) the server arbitrates them across hosts; a
mount with `nolock` or `local_lock=posix|all`, or Lustre without `flock`, keeps them on one
host, where two nodes could both take the budget's last calls. Such a mount is refused with a
message instead of overspending quietly.
"""

from __future__ import annotations

import os
from pathlib import Path


def mount_of(path: str | Path, table: str | None = None) -> tuple[str, str, set[str]] | None:
    """(mount point, file system type, options) of the mount holding `path`."""
    if table is None:
        try:
            table = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best = None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, fields[2], set(fields[3].split(",")))
    return best


def lock_problem(path: str | Path, table: str | None = None) -> str | None:
    """Why fcntl locks under `path` would not be shared across hosts, or None."""
    mount = mount_of(path, table)
    if mount is None:
        return None
    point, fstype, opts = mount
    local = None
    if fstype.startswith("nfs"):
        local = {"nolock", "local_lock=posix", "local_lock=all"} & opts
    elif fstype == "lustre" and "flock" not in opts:
        local = {"localflock"} & opts or {"no flock"}
    if not local:
        return None
    return (
        f"{path} is on {fstype} at {point} mounted with {', '.join(sorted(local))}: file locks "
        "there stay on one host, so jobs on other nodes could spend the same teacher budget. "
        "Put cache_dir on a file system whose locks reach the server (NFSv4, NFSv3 with lockd, "
        "Lustre with -o flock) or on a local disk for single-node runs."
    )
