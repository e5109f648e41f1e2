"""SFTP client for file drops: verified host keys, safe listings, resumable hashed downloads.

The Dagster resource wraps :class:`SFTPClient`; everything here is plain paramiko so it can be
used and tested without Dagster.

- :mod:`.client`: :class:`SFTPClient`, :func:`open_sftp`, :func:`connect_sftp`, where callers start.
- :mod:`.connection`: one connection: host key policy, authentication, ciphers, keepalive.
- :mod:`.session`: :class:`SFTPSession`, one connection's listing, downloads and moves.
- :mod:`.listing`: listing a folder (refused names, in-progress uploads), the completeness rules.
- :mod:`.download`: resumable hashed downloads, byte ranges over parallel connections, checksums.
- :mod:`.errors`: the errors raised here.
- :mod:`._fastpath`: the fast download path and the paramiko internals it relies on.
"""

from crm_pipelines.files.sftp.client import SFTPClient, connect_sftp, open_sftp
from crm_pipelines.files.sftp.connection import (
    KEEPALIVE_SECONDS,
    PARALLEL_CONNECTIONS,
    PREFERRED_CIPHERS,
    ConnectSettings,
)
from crm_pipelines.files.sftp.download import (
    DOWNLOAD_RETRIES,
    PARALLEL_MIN_BYTES,
    DownloadResult,
    PartialChecksum,
    parallel_ranges,
)
from crm_pipelines.files.sftp.errors import DownloadError, HostKeyRejected, SFTPAuthError, SFTPError
from crm_pipelines.files.sftp.listing import (
    DEFAULT_MARKERS,
    TEMP_SUFFIXES,
    CompletenessRule,
    FileListing,
    RejectedName,
    RemoteFile,
    find_complete_files,
    unsafe_name_reason,
)
from crm_pipelines.files.sftp.session import SFTPSession

__all__ = [
    "DEFAULT_MARKERS",
    "DOWNLOAD_RETRIES",
    "KEEPALIVE_SECONDS",
    "PARALLEL_CONNECTIONS",
    "PARALLEL_MIN_BYTES",
    "PREFERRED_CIPHERS",
    "TEMP_SUFFIXES",
    "CompletenessRule",
    "ConnectSettings",
    "DownloadError",
    "DownloadResult",
    "FileListing",
    "HostKeyRejected",
    "PartialChecksum",
    "RejectedName",
    "RemoteFile",
    "SFTPAuthError",
    "SFTPClient",
    "SFTPError",
    "SFTPSession",
    "connect_sftp",
    "find_complete_files",
    "open_sftp",
    "parallel_ranges",
    "unsafe_name_reason",
]
