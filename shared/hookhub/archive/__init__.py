"""The event archive: every accepted event, kept by hour for interval resends (`hookhub.replay`).

`open_archive` picks the backend from the config's `archive` URL. The backends are imported only
when opened, so importing this package (the broker and replay modules do) costs nothing.
"""

from __future__ import annotations

from hookhub.archive.base import Archive, ArchiveCorrupt
from hookhub.errors import ConfigError

__all__ = ["Archive", "ArchiveCorrupt", "check_archive_url", "open_archive"]


def check_archive_url(url: str) -> tuple[str, str, str]:
    """(scheme, location, prefix) of an archive URL: ("file", path, "") or ("s3", bucket, prefix).

    Raises `ValueError` naming the accepted forms (the config reports it against its key).
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "file" and rest:
        return "file", rest, ""
    if sep and scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if bucket:
            return "s3", bucket, prefix.strip("/")
    raise ValueError(f"archive must be file://PATH or s3://BUCKET[/PREFIX], not {url[:200]!r}")


def open_archive(url: str) -> Archive:
    """The archive `url` names: `file://PATH` (relative to the working directory unless it
    starts with `/`) or `s3://BUCKET[/PREFIX]`. `ConfigError` for anything else."""
    try:
        scheme, location, prefix = check_archive_url(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if scheme == "file":
        from hookhub.archive.file import FileArchive

        return FileArchive(location)
    from hookhub.archive.s3 import S3Archive

    return S3Archive(location, prefix)
