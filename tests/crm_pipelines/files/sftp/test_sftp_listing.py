"""Listings (refused names, in-progress uploads) and the completeness rules (stable, marker, rename)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crm_pipelines.files.sftp import SFTPSession, find_complete_files, unsafe_name_reason

if TYPE_CHECKING:
    from conftest import Drop, DropServer

FOLDER = "/outbound/finance"


def test_unsafe_names_are_reported_not_returned(drop: Drop, session: SFTPSession) -> None:
    (drop.folder / "invoices..csv").write_bytes(b"x")
    (drop.folder / "invoices\n2026.csv").write_bytes(b"x")
    listing = session.list_files(FOLDER, "*")
    assert list(listing) == []
    assert {(r.name, r.reason) for r in listing.rejected} == {
        ("invoices..csv", "contains '..'"),
        ("invoices\n2026.csv", "contains control characters"),
    }
    # Names a hostile server could send but a local disk cannot hold.
    assert unsafe_name_reason("/etc/passwd") == "absolute path"
    assert unsafe_name_reason("../x.csv") is not None
    assert unsafe_name_reason("sub/x.csv") == "contains a path separator"
    assert unsafe_name_reason("invoices_2026-11-25.csv") is None


def test_growing_file_is_complete_only_once_stable(drop: Drop, session: SFTPSession) -> None:
    growing = drop.folder / "invoices_2026-11-25.csv"
    done = drop.folder / "payments_2026-11-25.csv"
    growing.write_bytes(b"invoice_number,amount\n" + b"BIL-1,10.00\n" * 1000)
    done.write_bytes(b"payment_reference\nP-1\n")

    def writer_keeps_writing(seconds: float) -> None:
        # The billing system appends more rows while we wait between the two listings.
        with growing.open("ab") as fh:
            fh.write(b"BIL-2,20.00\n" * 1000)

    first = find_complete_files(session, FOLDER, "*.csv", stable_seconds=5, sleep=writer_keeps_writing)
    assert [f.name for f in first] == ["payments_2026-11-25.csv"]

    # The writer has finished: a real short wait, nothing changes, the file is complete.
    second = find_complete_files(session, FOLDER, "*.csv", stable_seconds=0.2)
    assert [f.name for f in second] == ["invoices_2026-11-25.csv", "payments_2026-11-25.csv"]
    assert second[0].size == growing.stat().st_size

    def must_not_wait(seconds: float) -> None:
        raise AssertionError("no matching file, so there is nothing to wait for")

    assert find_complete_files(session, FOLDER, "nothing_*.csv", stable_seconds=5, sleep=must_not_wait) == []


# ---------------------------------------------------------------------------- complete files


def test_a_file_still_being_written_waits_for_the_stable_rule(drop_server: DropServer) -> None:
    growing = drop_server.local / "invoices_2026-11-25.csv"
    growing.write_bytes(b"invoice_number\n" + b"BIL-1\n" * 100)

    def writer_appends(seconds: float) -> None:
        with growing.open("ab") as fh:
            fh.write(b"BIL-2\n" * 100)
        # SFTP v3 mtimes have whole seconds: the size change is what shows the write here.

    with drop_server.client().session() as session:
        assert (
            find_complete_files(session, drop_server.remote, "*.csv", stable_seconds=1, sleep=writer_appends)
            == []
        )
        complete = find_complete_files(session, drop_server.remote, "*.csv", stable_seconds=0.1)
    assert [(f.name, f.size) for f in complete] == [(growing.name, growing.stat().st_size)]


def test_marker_and_rename_conventions(drop_server: DropServer) -> None:
    folder = drop_server.local
    (folder / "invoices_2026-11-24.csv").write_text("a\n1\n")
    (folder / "invoices_2026-11-24.csv.done").write_text("")
    (folder / "invoices_2026-11-25.csv").write_text("a\n1\n")  # no marker yet
    (folder / "invoices_2026-11-26.csv").write_text("a\n1\n")
    (folder / "invoices_2026-11-26.csv.ok").write_text("")
    (folder / "invoices_2026-11-27.csv.part").write_text("a\n")
    (folder / "invoices_2026-11-28.csv.filepart").write_text("a\n")
    (folder / "invoices_2026-11-29.csv.tmp").write_text("a\n")
    with drop_server.client().session() as session:
        marked = find_complete_files(
            session, drop_server.remote, "invoices_*.csv", stable_seconds=0, rule="marker"
        )
        assert [f.name for f in marked] == ["invoices_2026-11-24.csv", "invoices_2026-11-26.csv"]
        renamed = find_complete_files(
            session, drop_server.remote, "invoices_*", stable_seconds=0, rule="rename"
        )
        assert [f.name for f in renamed] == [
            "invoices_2026-11-24.csv",
            "invoices_2026-11-24.csv.done",
            "invoices_2026-11-25.csv",
            "invoices_2026-11-26.csv",
            "invoices_2026-11-26.csv.ok",
        ]
        # The writer renames its upload: now it counts.
        session.sftp.rename(
            f"{drop_server.remote}/invoices_2026-11-27.csv.part",
            f"{drop_server.remote}/invoices_2026-11-27.csv",
        )
        renamed = find_complete_files(session, drop_server.remote, "*.csv", stable_seconds=0, rule="rename")
        assert "invoices_2026-11-27.csv" in [f.name for f in renamed]


def test_names_escaping_the_folder_are_refused_and_reported(drop_server: DropServer) -> None:
    folder = drop_server.local
    (folder / "invoices_2026-11-25.csv").write_text("a\n1\n")
    (folder / "invoices..csv").write_text("x")
    # Links pointing outside the drop (and outside the chroot): never followed.
    (folder / "invoices_passwd.csv").symlink_to("/etc/passwd")
    (folder / "invoices_up.csv").symlink_to("../../secret.csv")
    with drop_server.client().session() as session:
        listing = session.list_files(drop_server.remote, "invoices*")
    assert [f.name for f in listing] == ["invoices_2026-11-25.csv"]
    reasons = {r.name: r.reason for r in listing.rejected}
    assert reasons["invoices..csv"] == "contains '..'"
    assert reasons["invoices_passwd.csv"].startswith("symbolic link")
    assert reasons["invoices_up.csv"].startswith("symbolic link")
