"""SFTP download throughput: OpenSSH's own ``sftp`` client against ours, same server, file and cipher.

Starts a real sshd on loopback (see ``sandbox/crm_pipelines_sandbox/openssh_server.py``; needs
openssh-server and, for the chroot, root), writes random files of the given sizes, and downloads
each with ``sftp -b`` and with :class:`crm_pipelines.files.sftp.SFTPSession`, ``--repeat`` rounds.
Each round runs both clients back to back (which one goes first alternates), so the ratio of a
round compares two downloads made under the same load; the summary is the median of the rounds.

    uv run python bench/sftp_download.py --sizes 100,1000 --repeat 5

Cipher and MAC: by default, whatever our client negotiates with this sshd when nothing is pinned
(what a drop would use in production); both clients are then pinned to it. ``--cipher`` picks
another one for both. Besides MB/s it prints the CPU seconds per GB of each client and of sshd
serving it: on a shared machine the wall times move with the neighbours, the CPU does not.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crm_pipelines.files.sftp import _fastpath, connect_sftp, parallel_ranges
from crm_pipelines.files.sftp._fastpath import _PipelinedRead
from crm_pipelines_sandbox.openssh_server import OpenSSHServer, sshd_unavailable_reason
from crm_pipelines_sandbox.sftp_server import make_keys, write_known_hosts

MB = 1024 * 1024


@dataclass(frozen=True)
class Run:
    seconds: float
    client_cpu: float  # CPU seconds of the client (for OpenSSH: sftp and its ssh)
    server_cpu: float  # CPU seconds of the sshd processes that served the connection


def write_random(path: Path, size: int) -> None:
    block = 16 * MB
    with open(path, "wb") as out:
        for start in range(0, size, block):
            out.write(os.urandom(min(block, size - start)))


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    """CPU seconds of finished children (OpenSSH's sftp and, through it, its ssh)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class ServerCpu:
    """CPU seconds of the sshd processes serving one connection, sampled while they live.

    sshd's monitor does not reap the session's processes, so their CPU never shows up in the
    listener's children times: a thread reads ``/proc/<pid>/stat`` of every process below the
    listener every 0.1 s until the connection's processes are gone (what they use in their last
    0.1 s is missed). The sampler's own CPU is kept apart so it is not charged to our client.
    """

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, sshd: OpenSSHServer) -> None:
        self._sshd = sshd
        self._seen: dict[int, float] = {}
        self._client_done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.sampler_cpu = 0.0

    def _sample(self) -> None:
        while True:
            pids = self._sshd.session_pids()
            for pid in pids:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self._seen[pid] = (int(fields[11]) + int(fields[12])) / self.TICK
            if self._client_done.is_set() and not pids:
                break
            time.sleep(0.1)
        self.sampler_cpu = time.thread_time()

    @property
    def seconds(self) -> float:
        return sum(self._seen.values())

    def __enter__(self) -> ServerCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client_done.set()
        self._thread.join(timeout=30)


def timed(run: Callable[[], None], local: Path, sshd: OpenSSHServer) -> Run:
    """One download, starting without the local copy and with no dirty pages.

    Writing 1 GB leaves the page cache full of dirty pages; without a sync the next download
    pays for the previous one's writeback, and whichever client ran second looked slower.
    """
    local.unlink(missing_ok=True)
    os.sync()
    mine, children = own_cpu(), children_cpu()
    with ServerCpu(sshd) as server:
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
        client = (own_cpu() - mine) + (children_cpu() - children)
    return Run(seconds, client - server.sampler_cpu, server.seconds)


def summary(size_mb: int, openssh: list[Run], ours: list[Run]) -> str:
    """Medians over the rounds: ratio (per round, our speed over OpenSSH's), MB/s, CPU per GB."""
    gb = size_mb / 1024
    ratios = [o.seconds / u.seconds for o, u in zip(openssh, ours, strict=True)]

    def median(runs: list[Run], of: Callable[[Run], float]) -> float:
        return statistics.median(of(r) for r in runs)

    def rate(r: Run) -> float:
        return size_mb / r.seconds

    return (
        f"{size_mb} MB, median of {len(ratios)}: ratio {statistics.median(ratios):.0%} "
        f"(rounds {', '.join(f'{r:.0%}' for r in ratios)}); "
        f"MB/s openssh {median(openssh, rate):.0f}, ours {median(ours, rate):.0f}; "
        f"client CPU s/GB openssh {median(openssh, lambda r: r.client_cpu / gb):.2f}, "
        f"ours {median(ours, lambda r: r.client_cpu / gb):.2f}; "
        f"sshd CPU s/GB serving openssh {median(openssh, lambda r: r.server_cpu / gb):.2f}, "
        f"ours {median(ours, lambda r: r.server_cpu / gb):.2f}"
    )


def read_loop(common: dict[str, Any], remote: str, local: Path, *, hashed: bool, written: bool) -> None:
    """Our download's read loop with its hashing and its writing each optional.

    Uses the client's private ``_PipelinedRead``: this measures where the download's CPU goes, it
    is not a way to download.
    """
    with connect_sftp(**common) as session, session.sftp.open(remote, "rb") as remote_file:
        end = session.stat(remote).size
        digest = hashlib.sha256()
        with open(local, "wb") as out:
            for data in _PipelinedRead(session.sftp, remote_file, start=0, end=end, where=remote):
                if hashed:
                    digest.update(data)
                if written:
                    out.write(data)


def breakdown(
    size_mb: int, common: dict[str, Any], remote: str, local: Path, sshd: OpenSSHServer, repeat: int
) -> str:
    """Medians of the read loop alone, hashing only, writing only and both (the real download)."""
    variants = {
        "read and drop": (False, False),
        "write only": (False, True),
        "hash only": (True, False),
        "hash and write": (True, True),
    }
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, (hashed, written) in variants.items():
            runs[name].append(
                timed(
                    functools.partial(read_loop, common, remote, local, hashed=hashed, written=written),
                    local,
                    sshd,
                )
            )
    gb = size_mb / 1024
    return f"{size_mb} MB, ours broken down (median of {repeat}): " + "; ".join(
        f"{name} {statistics.median(size_mb / r.seconds for r in done):.0f} MB/s, "
        f"{statistics.median(r.client_cpu / gb for r in done):.2f} CPU-s/GB"
        for name, done in runs.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000", help="file sizes in MB, comma-separated")
    parser.add_argument(
        "--cipher", default=None, help="cipher pinned on both clients (default: what ours negotiates)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=parallel_ranges(0),
        help="parallel ranges for our client on large files (default: what it uses on this machine)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds per size (the summary is the median)")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time our read loop alone, with hashing only, with writing only (where the CPU goes)",
    )
    args = parser.parse_args()
    # `timeout` and Ctrl-C must still stop sshd and delete the files: make SIGTERM unwind the stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = sshd_unavailable_reason()
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="sftp-bench-") as scratch:
        work = Path(scratch)
        keys = make_keys(work / "keys")
        with OpenSSHServer(work / "sshd", authorized_key=keys.client_public_key_path) as sshd:
            write_known_hosts(keys.known_hosts_path, sshd.host, sshd.port, sshd.host_public_key_path)
            folder = sshd.folder("/bench")
            common = {
                "host": sshd.host,
                "port": sshd.port,
                "username": sshd.username,
                "private_key_path": keys.client_key_path,
                "known_hosts_path": keys.known_hosts_path,
                "ciphers": (args.cipher,) if args.cipher else None,
                "parallel_connections": args.connections,
            }
            with connect_sftp(**common) as probe:
                transport = probe.ssh.get_transport()
                assert transport is not None
                negotiated: Any = transport  # the stubs leave out what the handshake chose
                cipher, mac = negotiated.remote_cipher, negotiated.remote_mac
            common["ciphers"] = (cipher,)
            aead = cipher.endswith("gcm@openssh.com")
            print(
                f"sshd {sshd.port}, {os.cpu_count()} CPUs, cipher {cipher} "
                f"({'AEAD, no separate MAC' if aead else f'mac {mac}'}) on both clients; "
                f"ours with {args.connections} connection(s) for large files, fast path "
                f"{'on' if _fastpath.available() else 'OFF (paramiko prefetch; see the warning above)'}"
            )
            openssh_options = [
                *("-o", f"Ciphers={cipher}"),
                *(() if aead else ("-o", f"MACs={mac}")),
                *("-o", "Compression=no"),
            ]
            for size_mb in [int(s) for s in args.sizes.split(",")]:
                name = f"file_{size_mb}mb.bin"
                write_random(folder / name, size_mb * MB)
                remote = f"{sshd.remote_path(folder)}/{name}"
                local = work / "local.bin"

                def openssh_get(remote: str = remote, local: Path = local) -> None:
                    subprocess.run(
                        [
                            "sftp",
                            "-q",
                            *("-b", "-"),
                            *("-i", str(keys.client_key_path)),
                            *("-P", str(sshd.port)),
                            *("-o", f"UserKnownHostsFile={keys.known_hosts_path}"),
                            *("-o", "StrictHostKeyChecking=yes"),
                            *openssh_options,
                            f"{sshd.username}@{sshd.host}",
                        ],
                        input=f"get {remote} {local}\n".encode(),
                        check=True,
                        capture_output=True,
                    )

                def ours(remote: str = remote, local: Path = local) -> None:
                    with connect_sftp(**common) as session:
                        session.download(remote, local)

                clients = {"openssh": openssh_get, "ours": ours}
                # One untimed download each: the file is read from the page cache by both.
                for run in clients.values():
                    timed(run, local, sshd)
                runs: dict[str, list[Run]] = {"openssh": [], "ours": []}
                for round_ in range(args.repeat):
                    order = ["openssh", "ours"] if round_ % 2 == 0 else ["ours", "openssh"]
                    for client in order:
                        runs[client].append(timed(clients[client], local, sshd))
                    o, u = runs["openssh"][-1], runs["ours"][-1]
                    print(
                        f"  {size_mb} MB round {round_ + 1}: openssh {size_mb / o.seconds:.0f} MB/s, "
                        f"ours {size_mb / u.seconds:.0f} MB/s, ratio {o.seconds / u.seconds:.0%}",
                        flush=True,
                    )
                print(summary(size_mb, runs["openssh"], runs["ours"]), flush=True)
                if args.breakdown:
                    print(breakdown(size_mb, common, remote, local, sshd, args.repeat), flush=True)
                (folder / name).unlink()
                local.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
