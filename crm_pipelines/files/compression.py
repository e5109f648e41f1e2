"""Transparent gzip and zip for file drops: a compressed file is unpacked (streaming) before parsing.

Detected by content, not by name: partners rename files carelessly but the magic bytes do not lie.
A zip must hold exactly one regular member with a plain name; anything else is refused, so a drop
cannot smuggle extra files or paths (``../x``) through an archive.
"""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

from crm_pipelines.files.csv_reader import FileRejected
from crm_pipelines.files.sftp import unsafe_name_reason

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
COPY_BUFFER = 1024 * 1024


def compression_of(path: Path) -> str | None:
    """``gzip``, ``zip`` or None (not compressed), from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    return None


def unpacked(path: Path, scratch: Path) -> Path:
    """``path`` itself if it is not compressed, else its content unpacked into ``scratch``.

    Raises:
        FileRejected: a corrupt archive, or a zip that does not hold exactly one plain file.
    """
    kind = compression_of(path)
    if kind is None:
        return path
    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / f"{path.name}.unpacked"
    try:
        if kind == "gzip":
            with gzip.open(path, "rb") as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, COPY_BUFFER)
            return target
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise FileRejected(
                    f"{path.name}: a zip drop must hold exactly one file, it holds {len(members)}"
                )
            reason = unsafe_name_reason(members[0].filename)
            if reason is not None:
                raise FileRejected(f"{path.name}: refusing zip member {members[0].filename!r}: {reason}")
            with archive.open(members[0]) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, COPY_BUFFER)
            return target
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        target.unlink(missing_ok=True)
        raise FileRejected(f"{path.name}: corrupt {kind} data: {exc}") from exc
