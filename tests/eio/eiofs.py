#!/usr/bin/python3
"""A passthrough FUSE filesystem whose reads of the named files fail with EIO.

    eiofs.py BACKING MOUNTPOINT NAME...

Used by tests/hardening_eio.rs, always inside a private mount namespace.
"""
import errno
import os
import sys

try:
    from fusepy import FUSE, FuseOSError, Operations  # Debian: python3-fusepy
except ImportError:
    from fuse import FUSE, FuseOSError, Operations  # PyPI: fusepy


class EioFs(Operations):
    def __init__(self, backing, bad):
        self.backing = backing
        self.bad = set(bad)

    def _path(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size",
                "st_atime", "st_mtime", "st_ctime")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._path(path))

    def open(self, path, flags):
        return os.open(self._path(path), os.O_RDONLY)

    def read(self, path, size, offset, fh):
        if os.path.basename(path) in self.bad:
            raise FuseOSError(errno.EIO)
        return os.pread(fh, size, offset)

    def release(self, path, fh):
        os.close(fh)


if __name__ == "__main__":
    backing, mountpoint, *bad = sys.argv[1:]
    FUSE(EioFs(backing, bad), mountpoint, foreground=True, nothreads=True, ro=True)
