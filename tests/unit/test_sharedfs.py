"""Whether the engine cache's locks hold between hosts, read from the mount table."""

from __future__ import annotations

from pathlib import Path

from harness.sharedfs import cache_lock_note, mount_of, parse_mounts

MOUNTS = """\
overlay / overlay rw,relatime,lowerdir=/l,upperdir=/u,workdir=/w 0 0
filer:/export/cache /mnt/cache nfs4 rw,relatime,vers=4.2,rsize=1048576,hard,proto=tcp,local_lock=none 0 0
filer:/scratch /mnt/scratch nfs rw,relatime,vers=3,nolock,proto=tcp 0 0
filer:/v3 /mnt/v3 nfs rw,relatime,vers=3,proto=tcp 0 0
filer:/ll /mnt/ll nfs4 rw,vers=4.1,local_lock=all 0 0
10.0.0.1@tcp:/lustre /lustre lustre rw,noflock 0 0
rootless /home/u/c fuse.fuse-overlayfs rw 0 0
/dev/sdb1 /mnt/my\\040disk ext4 rw 0 0
"""


def note(path):
    return cache_lock_note(Path(path), MOUNTS)


def test_local_storage_needs_no_note():
    assert note("/tmp/cache") is None and note("/mnt/my disk/cache") is None and note("/home/u/c/x") is None
    assert mount_of(Path("/mnt/my disk/cache"), parse_mounts(MOUNTS)).fstype == "ext4"  # \040 is a space


def test_nfs_as_mounted_by_default_holds_the_locks_between_hosts():
    text, warn = note("/mnt/cache/harness")
    assert not warn and "engine cache /mnt/cache/harness is on nfs4 (filer:/export/cache on /mnt/cache)" in text
    assert "hold between hosts" in text
    text, warn = note("/mnt/v3/harness")
    assert not warn and "NFSv3: rpc.statd must run here" in text


def test_nfs_with_local_locks_is_a_warning_that_says_what_to_do():
    for path, why in (("/mnt/scratch/c", "nolock"), ("/mnt/ll/c", "local_lock=all")):
        text, warn = note(path)
        assert warn and f"its file locks are local to this host (mounted {why})" in text
        assert "prebuild it (pytest -m build) on one host per GPU model" in text


def test_other_network_filesystems_depend_on_their_mount_options():
    text, warn = note("/lustre/proj/cache")
    assert warn and "is on lustre" in text and "Lustre needs -o flock" in text
