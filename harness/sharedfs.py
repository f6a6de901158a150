"""Whether the engine cache's file locks hold between hosts, when the cache lives on shared storage.

The cache (:mod:`harness.cache`) builds each entry under a lock (``filelock.FileLock``: ``flock(2)`` on
Linux) into a temporary folder that is then renamed into place, so that concurrent processes build an entry
once and a reader never sees half of one. Across hosts sharing the folder:

* the rename holds on any POSIX network filesystem (NFS renames on the server, atomically): an entry is
  whole or absent, whatever the locks do;
* the lock holds on **NFS** as mounted by default: since Linux 2.6.12 the NFS client turns ``flock`` into a
  whole-file byte-range lock that it asks the server for (NFSv4 in the protocol; NFSv3 through NLM, so
  ``rpc.statd`` must run on the client). Mounted with ``nolock``, or ``local_lock=flock`` / ``local_lock=all``,
  the lock is **local to each host** (nfs(5));
* on other network filesystems it depends on their configuration (Lustre needs the ``flock`` mount option,
  CIFS honours it unless mounted ``nobrl``, FUSE filesystems vary);
* where the lock does not hold, two hosts can build the same entry at once: the work is done twice, the last
  rename wins, and a host reading the entry the other is replacing can fail with a stale handle. Build the
  engines once first (``pytest -m build`` on one host per GPU model), then run the shards against the full
  cache: a hit takes no lock.

:func:`cache_lock_note` tells which case a folder is in, from ``/proc/mounts``; the plugin shows it in the
session header, as a warning where the lock is local.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NETWORK = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "ceph", "glusterfs", "gpfs", "beegfs", "9p",
           "afs", "ocfs2", "gfs2", "fuse.sshfs", "fuse.glusterfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs",
           "fuse.rclone", "fuse.cephfs", "fuse.weka")


@dataclass(frozen=True)
class Mount:
    source: str
    point: Path
    fstype: str
    options: tuple[str, ...]


def parse_mounts(text: str) -> list[Mount]:
    """``/proc/mounts`` lines (octal escapes such as ``\\040`` for a space undone)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        point = parts[1].encode().decode("unicode_escape")
        out.append(Mount(parts[0], Path(point), parts[2], tuple(parts[3].split(","))))
    return out


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount a path lies on: the longest mount point that contains it."""
    p = Path(os.path.realpath(path))
    best: Mount | None = None
    for m in mounts:
        if (p == m.point or m.point in p.parents) and (best is None or len(str(m.point)) > len(str(best.point))):
            best = m
    return best


def lock_verdict(m: Mount) -> tuple[str, bool] | None:
    """(what to say, whether it is a warning) for a network mount; None for a local filesystem."""
    if m.fstype not in NETWORK:  # local, or a FUSE filesystem not known to be shared (fuse-overlayfs...)
        return None
    opts = set(m.options)
    if m.fstype in ("nfs", "nfs4"):
        local = [o for o in m.options if o == "nolock" or o in ("local_lock=flock", "local_lock=all")]
        if local:
            return (f"its file locks are local to this host (mounted {', '.join(local)}): hosts sharing it can "
                    "build the same entry at once; prebuild it (pytest -m build) on one host per GPU model", True)
        return ("NFS turns its flock locks into byte-range locks held by the server, so they hold between hosts"
                + (" (NFSv3: rpc.statd must run here)" if m.fstype == "nfs" and
                   not any(o.startswith("vers=4") for o in opts) else ""), False)
    return ("whether its file locks hold between hosts depends on how it is mounted (Lustre needs -o flock, CIFS "
            "must not be mounted nobrl); if they do not, hosts can build the same entry at once; prebuild it "
            "(pytest -m build) on one host per GPU model", True)


def cache_lock_note(path: Path, mounts_text: str | None = None) -> tuple[str, bool] | None:
    """What to say about a cache folder's locks between hosts: None on local storage (or off Linux)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            return None
    m = mount_of(path, parse_mounts(mounts_text))
    if m is None:
        return None
    found = lock_verdict(m)
    if found is None:
        return None
    text, warn = found
    return f"engine cache {path} is on {m.fstype} ({m.source} on {m.point}): {text}", warn
