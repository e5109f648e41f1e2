"""Transparent gzip and zip for file drops: a compressed file is unpacked (streaming) before parsing.

Detected by content, not by name: partners rename files carelessly but the magic bytes do not lie.
A zip must hold exactly one regular member with a plain name; anything else (a directory traversal,
a symbolic link, an empty archive) is refused, so a drop cannot smuggle extra files, paths (``../x``)
or links through an archive. An archive inside the archive (gzip in gzip, zip in zip) is refused
too: it would take another round of limits, and no export produces one. Corrupt data, an encrypted member,
an unsupported method and a compression bomb (more than the drop's ``max_compression_ratio`` times its
compressed size, past a floor, or more than ``max_unpacked_mb``) are refused while streaming: the
file goes to the drop's error folder with the reason, and nothing larger than the limit is written.
"""

from __future__ import annotations

import gzip
import lzma
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from crm_pipelines.files.csv_reader import FileRejected
from crm_pipelines.files.sftp import unsafe_name_reason

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
# An empty zip is only its end-of-central-directory record; a spanned one starts with this marker.
OTHER_ZIP_MAGIC = (b"PK\x05\x06", b"PK\x07\x08")
COPY_BUFFER = 1024 * 1024
# Small files may inflate more than the ratio allows (a few KB of zeros): up to this, the ratio is not applied.
RATIO_FLOOR_BYTES = 64 * 1024 * 1024
_SUPPORTED_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# What a decoder raises on data that is not what it claims to be.
_CORRUPT = (EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, gzip.BadGzipFile, ValueError)


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class UnpackLimits:
    """How far a compressed drop may inflate (a drop's ``max_unpacked_mb`` and ``max_compression_ratio``)."""

    max_bytes: int = 4096 * 1024 * 1024
    max_ratio: int = 200

    def allowed(self, compressed_size: int) -> int:
        return min(self.max_bytes, max(RATIO_FLOOR_BYTES, self.max_ratio * compressed_size))


def compression_of(path: Path) -> str | None:
    """``gzip``, ``zip`` or None (not compressed), from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith((ZIP_MAGIC, *OTHER_ZIP_MAGIC)):
        return "zip"
    return None


def unpacked(path: Path, scratch: Path, limits: UnpackLimits | None = None) -> Path:
    """``path`` itself if it is not compressed, else its content unpacked into ``scratch``.

    Raises:
        FileRejected: a corrupt archive, a zip that does not hold exactly one plain, readable file, or
            content that inflates past ``limits``.
    """
    kind = compression_of(path)
    if kind is None:
        return path
    limits = limits or UnpackLimits()
    allowed = limits.allowed(path.stat().st_size)
    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / f"{path.name}.unpacked"
    try:
        if kind == "gzip":
            with gzip.open(path, "rb") as src:
                _copy_capped(src, target, allowed, path.name, limits)
        else:
            with zipfile.ZipFile(path) as archive:
                member = _the_member(path.name, archive)
                with archive.open(member) as src:
                    _copy_capped(src, target, allowed, path.name, limits)
        inner = compression_of(target)
        if inner is not None:
            raise FileRejected(
                f"{path.name}: the {kind} holds another compressed file ({inner}); send it compressed once"
            )
        return target
    except FileRejected:
        target.unlink(missing_ok=True)
        raise
    except (*_CORRUPT, OSError) as exc:
        target.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, gzip.BadGzipFile):
            raise  # the disk or the file system failed (no space, no permission), not the data
        raise FileRejected(f"{path.name}: corrupt {kind} data: {exc}") from exc


def _the_member(name: str, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) != 1:
        raise FileRejected(f"{name}: a zip drop must hold exactly one file, it holds {len(members)}")
    member = members[0]
    reason = unsafe_name_reason(member.filename)
    if reason is not None:
        raise FileRejected(f"{name}: refusing zip member {member.filename!r}: {reason}")
    mode = member.external_attr >> 16
    if member.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        # Unix mode bits: a symbolic link (its "content" is a path on someone's machine), a device...
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise FileRejected(f"{name}: refusing zip member {member.filename!r}: {kind}")
    if member.flag_bits & 0x1:
        raise FileRejected(f"{name}: zip member {member.filename!r} is encrypted; send it without a password")
    if member.compress_type not in _SUPPORTED_ZIP_METHODS:
        raise FileRejected(
            f"{name}: zip member {member.filename!r} uses compression method {member.compress_type}, "
            "which is not supported (stored, deflate, bzip2 and lzma are)"
        )
    return member


def _copy_capped(src: _Readable, target: Path, allowed: int, name: str, limits: UnpackLimits) -> None:
    """Copy in chunks and stop, refusing the file, as soon as more than ``allowed`` bytes come out."""
    written = 0
    with open(target, "wb") as out:
        while chunk := src.read(COPY_BUFFER):
            written += len(chunk)
            if written > allowed:
                raise FileRejected(
                    f"{name}: inflates past {allowed // (1024 * 1024):,} MiB (limits: "
                    f"{limits.max_ratio}x its compressed size, {limits.max_bytes // (1024 * 1024):,} MiB); "
                    "refused as a compression bomb"
                )
            out.write(chunk)
