"""One session: list a drop folder and download from it; moves on the server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from crm_pipelines.files.sftp import SFTPSession

if TYPE_CHECKING:
    from conftest import Drop, DropServer

FOLDER = "/outbound/finance"


def test_list_and_download(drop: Drop, session: SFTPSession, tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)  # several prefetch requests and read sizes
    (drop.folder / "invoices_2026-11-25.csv").write_bytes(content)
    (drop.folder / "payments_2026-11-25.csv").write_bytes(b"payment_reference\nP-1\n")
    (drop.folder / "invoices_2026-11-26.csv.tmp").write_bytes(b"half")
    (drop.folder / "invoices_2026-11-26.csv.part").write_bytes(b"half")
    (drop.folder / "invoices_2026-11-27.csv.filepart").write_bytes(b"half")
    (drop.folder / "invoices_old.csv.d").mkdir()
    (drop.folder / "invoices_link.csv").symlink_to(drop.folder / "invoices_2026-11-25.csv")

    listing = session.list_files(FOLDER, "invoices_*.csv")
    assert [f.name for f in listing] == ["invoices_2026-11-25.csv"]
    remote = listing[0]
    assert remote.path == f"{FOLDER}/invoices_2026-11-25.csv"
    assert remote.size == len(content)
    assert remote.mtime == int((drop.folder / "invoices_2026-11-25.csv").stat().st_mtime)
    assert set(listing.ignored) == {
        "invoices_2026-11-26.csv.tmp",
        "invoices_2026-11-26.csv.part",
        "invoices_2026-11-27.csv.filepart",
        "invoices_old.csv.d",
    }
    # A link may point outside the folder: refused and reported, never followed.
    assert [r.name for r in listing.rejected] == ["invoices_link.csv"]
    assert [f.name for f in session.list_files(FOLDER, "*.csv")] == [
        "invoices_2026-11-25.csv",
        "payments_2026-11-25.csv",
    ]

    result = session.download(remote.path, tmp_path / "landing" / remote.name)
    assert result.size == len(content)
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert result.local_path.read_bytes() == content
    assert list((tmp_path / "landing").iterdir()) == [result.local_path]  # no temporary left
    assert session.stat(remote.path).size == len(content)


# ------------------------------------------------------------------------------ moves on server


def test_moves_are_idempotent_and_keep_earlier_versions(drop_server: DropServer) -> None:
    folder = drop_server.local
    remote = drop_server.remote
    (folder / "payments_2026-11-25.csv").write_text("v1")
    with drop_server.client().session() as session:
        first = session.move(f"{remote}/payments_2026-11-25.csv", f"{remote}/processed")
        assert first == f"{remote}/processed/payments_2026-11-25.csv"
        assert session.move(f"{remote}/payments_2026-11-25.csv", f"{remote}/processed") == ""  # retried step
        (folder / "payments_2026-11-25.csv").write_text("v2")  # a corrected file, same name
        second = session.move(f"{remote}/payments_2026-11-25.csv", f"{remote}/processed")
    assert second == f"{remote}/processed/payments_2026-11-25.1.csv"
    assert (folder / "processed" / "payments_2026-11-25.csv").read_text() == "v1"
    assert (folder / "processed" / "payments_2026-11-25.1.csv").read_text() == "v2"
    assert not (folder / "payments_2026-11-25.csv").exists()
