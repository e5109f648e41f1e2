"""The errors the SFTP client raises, and the ones after which a reconnect may help."""

from __future__ import annotations

import paramiko


class SFTPError(Exception):
    """Base class for the errors this package raises itself."""


class HostKeyRejected(SFTPError, paramiko.SSHException):
    """The server's host key is not the one in known_hosts (or there is none)."""


class SFTPAuthError(SFTPError, paramiko.AuthenticationException):
    """The server refused our key."""


class DownloadError(SFTPError):
    """A download did not produce the file the server announced."""


# Errors that mean "the connection went away", after which a reconnect may help.
_CONNECTION_LOST = (EOFError, OSError, paramiko.SSHException)
