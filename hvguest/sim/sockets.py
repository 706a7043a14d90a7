"""Rootless front end: simulated char devices as unix SOCK_SEQPACKET sockets.

``hvguest-sim serve --dev-root DIR`` serves ``DIR/vmbus/hv_kvp`` (etc.) as listening
sockets and runs the daemon as a plain child process; hvguest's daemons accept a
socket path in place of a device node (``--dev-root DIR``). Record boundaries give the
one-message-per-read/write semantics of hv_utils_transport. What a socket cannot
carry: an errno. A refused open (EBUSY) or a refused write (e.g. EINVAL for a late
reply) ends the connection instead, and the daemon re-opens, as it would after any
read/write error. The reference C daemons need real device nodes: FUSE mode only.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping

from hvguest.sim.device import POLLIN, Device

log = logging.getLogger(__name__)
MAX_MESSAGE = 1 << 20


class SocketDeviceServer:
    """Listening SEQPACKET sockets, one per device, in ``directory``."""

    def __init__(self, devices: Mapping[str, Device], directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._devices = dict(devices)
        self._listeners: dict[int, tuple[socket.socket, str]] = {}
        self._conns: dict[int, tuple[socket.socket, str]] = {}  # fd -> (sock, device name)
        self._next_handle = 1
        self.paths: dict[str, str] = {}
        for name in self._devices:
            path = os.path.join(directory, name)
            if os.path.exists(path):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            sock.bind(path)
            sock.listen(4)
            sock.setblocking(False)
            self._listeners[sock.fileno()] = (sock, name)
            self.paths[name] = path

    def filenos(self) -> dict[int, Callable[[], None]]:
        out: dict[int, Callable[[], None]] = {}
        for fd in self._listeners:
            out[fd] = self._accepter(fd)
        for fd in self._conns:
            out[fd] = self._reader(fd)
        return out

    def _accepter(self, fd: int) -> Callable[[], None]:
        return lambda: self._accept(fd)

    def _reader(self, fd: int) -> Callable[[], None]:
        return lambda: self._read(fd)

    def _accept(self, fd: int) -> None:
        lsock, name = self._listeners[fd]
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        handle = conn.fileno()
        rc = self._devices[name].open(handle)
        if rc < 0:
            log.info("%s: open refused (%s): closing the connection", name, errno.errorcode.get(
                -rc, rc))
            conn.close()
            return
        conn.setblocking(False)
        self._conns[handle] = (conn, name)
        self.flush(name)

    def _read(self, fd: int) -> None:
        conn, name = self._conns[fd]
        try:
            data = conn.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return
        rc = self._devices[name].write(fd, data)
        if rc < 0:
            log.info("%s: write refused (%d): closing the connection", name, rc)
            self._close(fd)
            return
        self.flush(name)

    def flush(self, name: str) -> None:
        """Deliver queued messages of device ``name`` to its connection."""
        device = self._devices[name]
        for fd, (conn, dev_name) in list(self._conns.items()):
            if dev_name != name:
                continue
            while device.poll(fd) & POLLIN:
                msg = device.read(fd, MAX_MESSAGE)
                if isinstance(msg, int):
                    break
                try:
                    conn.send(msg)
                except OSError:
                    self._close(fd)
                    break

    def _close(self, fd: int) -> None:
        conn, name = self._conns.pop(fd)
        self._devices[name].release(fd)
        conn.close()

    def close(self) -> None:
        for fd in list(self._conns):
            self._close(fd)
        for sock, name in self._listeners.values():
            sock.close()
            try:
                os.unlink(self.paths[name])
            except OSError:
                pass
        self._listeners.clear()


class PlainProcess:
    """The daemon as an ordinary child process (the rootless stand-in for Sandbox)."""

    root = "/"
    loop_devices: list[str] = []

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawned: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        self._spawned.append(proc)
        return proc

    def exec(self, cmd: list[str], timeout: float = 30, input: bytes | None = None
             ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                              check=False)

    def syslog(self) -> list[str]:
        return []  # the daemon logs to its stderr here

    def syslog_fileno(self) -> int | None:
        return None  # no /dev/log to drain

    def drain_syslog(self) -> None:
        pass

    def stop(self, timeout: float = 10) -> int | None:
        procs = [p for p in [self._proc, *self._spawned] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return self.poll()
