"""SFTP download throughput: OpenSSH's own ``sftp`` client against ours, same server, file and cipher.

Starts a real sshd on loopback (see ``crm_pipelines/sandbox/openssh_server.py``; needs
openssh-server and, for the chroot, root), writes random files of the given sizes, and downloads
each with ``sftp -b`` and with :class:`crm_pipelines.files.sftp.SFTPSession` (single stream and
parallel ranges), best of ``--repeat`` runs each. Prints MB/s and our ratio to OpenSSH.

    uv run python bench/sftp_download.py --sizes 100,1000
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crm_pipelines.files.sftp import connect_sftp
from crm_pipelines.sandbox.openssh_server import OpenSSHServer, sshd_unavailable_reason
from crm_pipelines.sandbox.sftp_server import make_keys, write_known_hosts

MB = 1024 * 1024


def write_random(path: Path, size: int) -> None:
    block = 16 * MB
    with open(path, "wb") as out:
        for start in range(0, size, block):
            out.write(os.urandom(min(block, size - start)))


def client_cpu() -> float:
    """CPU seconds used so far by this process and its finished children (OpenSSH's sftp and ssh)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_of(repeat: int, run: callable, local: Path) -> tuple[float, float]:  # type: ignore[valid-type]
    """Best wall time of ``repeat`` runs and the client CPU seconds of that run.

    Each run starts without the local copy and with clean pages: writing 1 GB leaves the page
    cache full of dirty pages, and without a sync the next download pays for the previous one's
    writeback, which made whichever client ran second look slower. The CPU seconds tell what a
    client costs even when other work on a shared machine blurs the wall times.
    """
    runs = []
    for _ in range(repeat):
        local.unlink(missing_ok=True)
        os.sync()
        cpu = client_cpu()
        started = time.perf_counter()
        run()
        runs.append((time.perf_counter() - started, client_cpu() - cpu))
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000", help="file sizes in MB, comma-separated")
    parser.add_argument("--cipher", default="aes128-ctr", help="cipher pinned on both clients")
    parser.add_argument("--connections", type=int, default=4, help="parallel ranges for our client")
    parser.add_argument("--repeat", type=int, default=2)
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
                "ciphers": (args.cipher,),
            }
            with connect_sftp(**common) as probe:
                transport = probe.ssh.get_transport()
                assert transport is not None
                mac = transport.remote_mac  # pin OpenSSH to the MAC paramiko negotiated
            print(f"sshd {sshd.port}, cipher {args.cipher}, mac {mac}, {os.cpu_count()} CPUs")
            print(
                f"{'size':>8} {'openssh MB/s':>13} {'ours x1 MB/s':>13} {'ours xN MB/s':>13} {'ratio':>7}"
                f"   client CPU s/GB: openssh, ours x1"
            )
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
                            "-b",
                            "-",
                            "-i",
                            str(keys.client_key_path),
                            "-P",
                            str(sshd.port),
                            "-o",
                            f"UserKnownHostsFile={keys.known_hosts_path}",
                            "-o",
                            "StrictHostKeyChecking=yes",
                            "-o",
                            f"Ciphers={args.cipher}",
                            "-o",
                            f"MACs={mac}",
                            "-o",
                            "Compression=no",
                            f"{sshd.username}@{sshd.host}",
                        ],
                        input=f"get {remote} {local}\n".encode(),
                        check=True,
                        capture_output=True,
                    )

                def ours(connections: int, remote: str = remote, local: Path = local) -> None:
                    with connect_sftp(**common, parallel_connections=connections) as session:
                        session.download(remote, local)

                openssh, openssh_cpu = best_of(args.repeat, openssh_get, local)
                print(f"  {size_mb} MB: openssh sftp {size_mb / openssh:.0f} MB/s", flush=True)
                single, single_cpu = best_of(args.repeat, lambda: ours(1), local)
                print(f"  {size_mb} MB: ours, one stream {size_mb / single:.0f} MB/s", flush=True)
                parallel, _ = best_of(args.repeat, lambda: ours(args.connections), local)
                rate = {k: size_mb / t for k, t in (("o", openssh), ("1", single), ("n", parallel))}
                gb = size_mb / 1024
                print(
                    f"{size_mb:>6}MB {rate['o']:>13.0f} {rate['1']:>13.0f} {rate['n']:>13.0f} "
                    f"{max(rate['1'], rate['n']) / rate['o']:>7.0%}   {openssh_cpu / gb:.2f}, {single_cpu / gb:.2f}"
                )
                (folder / name).unlink()
                local.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
