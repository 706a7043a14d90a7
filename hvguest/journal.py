"""Log records to the systemd journal over its native protocol (systemd.journal-fields(7),
"Native Journal Protocol" of systemd's documentation), without libsystemd.

The fields are those python-systemd's ``JournalHandler`` sends and journald keeps:
MESSAGE (the formatted record), PRIORITY, LOGGER, THREAD_NAME, PROCESS_NAME, CODE_FILE,
CODE_LINE, CODE_FUNC, SYSLOG_IDENTIFIER, CODE_ARGS, EXCEPTION_TEXT/EXCEPTION_INFO when
set, and every upper-case attribute of the record (``extra={"HVGUEST_POOL": 1}``);
journald drops any other name, so none is sent. Why not python-systemd: its module and
libsystemd with the libraries it links cost every daemon about 1.2 MB of resident
memory for one datagram per record.

One datagram per record; a record too large for a datagram goes in a sealed memfd
whose descriptor is passed instead, as libsystemd does.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import threading
from typing import Any

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# libsystemd's send buffer: records up to this size go as one datagram, larger ones
# in a memfd.
SEND_BUFFER = 8 << 20

# journald keeps a field whose name is upper-case letters, digits and "_", not starting
# with "_" (trusted fields) or a digit, at most 64 characters.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def priority(levelno: int) -> int:
    """syslog priority of a logging level (python-systemd's mapping)."""
    for limit, value in ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4),
                         (logging.ERROR, 3), (logging.CRITICAL, 2)):
        if levelno <= limit:
            return value
    return 1


def encode_field(name: str, value: object) -> bytes:
    """One field: ``NAME=value\\n``, or the length-prefixed form when the value holds
    a newline."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def _journal_socket() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    # SO_SNDBUFFORCE passes net.core.wmem_max (root); SO_SNDBUF is capped by it.
    for option in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SEND_BUFFER)
            break
        except OSError:
            continue
    return sock


class JournalHandler(logging.Handler):
    """A logging handler writing to journald; ``fields`` go with every record."""

    def __init__(self, address: str = JOURNAL_SOCKET, **fields: Any) -> None:
        super().__init__(logging.NOTSET)
        for name in fields:
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"invalid journal field name: {name!r}")
        self.address = address
        self._extra = fields
        self._socket: socket.socket | None = None
        self._socket_lock = threading.Lock()

    def record_fields(self, record: logging.LogRecord) -> list[tuple[str, object]]:
        fields: list[tuple[str, object]] = [("MESSAGE", self.format(record))]
        code = (("CODE_FILE", record.pathname), ("CODE_LINE", record.lineno),
                ("CODE_FUNC", record.funcName))
        fields += [(k, v) for k, v in code if v is not None]  # a record made by hand
        fields += [
            ("PRIORITY", priority(record.levelno)),
            ("LOGGER", record.name),
            ("THREAD_NAME", record.threadName),
            ("PROCESS_NAME", record.processName),
        ]
        extra: dict[str, object] = dict(self._extra)
        if record.exc_text:
            extra["EXCEPTION_TEXT"] = record.exc_text
        if record.exc_info:
            extra["EXCEPTION_INFO"] = record.exc_info
        if record.args:
            extra["CODE_ARGS"] = str(record.args)
        extra.update(record.__dict__)
        message_id = extra.pop("MESSAGE_ID", None)
        if message_id is not None:  # a uuid.UUID as its 32 hex digits
            fields.insert(1, ("MESSAGE_ID", getattr(message_id, "hex", message_id)))
        fields += [(k, v) for k, v in extra.items() if _FIELD_NAME.fullmatch(k)]
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = b"".join(encode_field(k, v) for k, v in self.record_fields(record))
            self._send(data)
        except Exception:
            self.handleError(record)

    def _send(self, data: bytes) -> None:
        with self._socket_lock:
            if self._socket is None:
                self._socket = _journal_socket()
            sock = self._socket
        try:
            sock.sendto(data, self.address)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(sock, data)

    def _send_memfd(self, sock: socket.socket, data: bytes) -> None:
        fd = os.memfd_create("journal-message", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # journald accepts sealed ones only
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            sock.sendmsg([], rights, 0, self.address)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._socket_lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
        super().close()
