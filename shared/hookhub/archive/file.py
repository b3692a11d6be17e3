"""The archive in a local directory (`file://PATH`): the local shape's, and the tests'.

A write goes to a hidden temporary file that is fsynced, renamed into place and followed by an
fsync of its directory: after `write` returns the object survives a power cut, and a reader sees
either the whole object or none of it. Directories are created (and their parents fsynced) on
the first write, so opening an archive touches no disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import IO

from hookhub.archive.codec import ROOT, SUFFIX
from hookhub.archive.objects import ObjectArchive


class FileArchive(ObjectArchive):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileArchive({str(self.root)!r})"

    def _children(self, prefix: str) -> list[str]:
        try:
            with os.scandir(self.root / prefix) as entries:
                return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _keys(self, prefix: str) -> list[str]:
        try:
            names = os.listdir(self.root / prefix)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [f"{prefix}/{n}" for n in names if n.endswith(SUFFIX) and not n.startswith(".")]

    def _put(self, key: str, body: bytes) -> None:
        path = self.root / key
        self._make_dirs(path.parent)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with open(fd, "wb", closefd=True) as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_dir(path.parent)

    def _make_dirs(self, directory: Path) -> None:
        """Create `directory` and its missing parents, each new entry made durable."""
        if directory.is_dir():
            return
        self._make_dirs(directory.parent)
        try:
            directory.mkdir()
        except FileExistsError:  # another writer made it meanwhile
            return
        _fsync_dir(directory.parent)

    def _open(self, key: str) -> IO[bytes] | None:
        try:
            return open(self.root / key, "rb")
        except FileNotFoundError:
            return None

    def _drop(self, prefix: str) -> int:
        hour = self.root / prefix
        count = len(self._keys(prefix))
        shutil.rmtree(hour, ignore_errors=True)
        # then the day, month and year directories that this left empty
        stop = self.root / ROOT
        parent = hour.parent
        while parent != stop and stop in parent.parents:
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone): the levels above are not empty either
                break
            parent = parent.parent
        return count

    async def close(self) -> None:
        return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
