"""``hvguest-sim serve``: kernel models + host + the daemon under test, one select loop.

The loop watches the FUSE device server, the control socket and its clients, the
daemon's pidfd and the timer queue. Control requests are JSON lines
(``{"id": 1, "op": "kvp_get", "pool": 0, "key": "k"}``); a reply
(``{"id": 1, "ok": true, "result": ...}``) may come much later, when the daemon has
answered, so nothing here ever blocks on the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hvguest.sim import ops
from hvguest.sim.host import HostReply, HostService
from hvguest.sim.kernel.fcopy import FcopyKernel
from hvguest.sim.kernel.kvp import KvpKernel
from hvguest.sim.kernel.service import State, UtilService
from hvguest.sim.kernel.timers import TimerQueue
from hvguest.sim.kernel.vss import VssKernel

log = logging.getLogger(__name__)

Reply = Callable[[Any], None]


@dataclass
class ServeOptions:
    command: list[str]
    control: str
    services: tuple[str, ...] = ("kvp",)
    fcopy: str = "legacy"
    loop_filesystems: list[tuple[str, str, str]] = field(default_factory=list)
    network: bool = True
    timeout_scale: float = 1.0
    uio_ring_size: int = 0x5000
    uio_prebound: bool = True
    dev_root: str | None = None  # rootless: SOCK_SEQPACKET devices here, no sandbox
    # "cuse": serve the devices as real character devices (/dev/vmbus/hv_*) through
    # CUSE, with no sandbox and no daemon command: the system's service manager
    # starts the daemons when the devices appear (a test VM).
    frontend: str = "fuse"
    # CUSE only: let the installed daemons take the devices (hvguest.sim.udev_drive).
    drive_installed: bool = False
    udev_rules_dir: str = "/run/udev/rules.d"


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.closed = False

    def send(self, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        data = (json.dumps(obj) + "\n").encode()
        try:
            self.sock.setblocking(True)
            self.sock.sendall(data)
            self.sock.setblocking(False)
        except OSError:
            self.closed = True


class SimServer:
    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        self._drive_rule: str | None = None
        self.timers = TimerQueue(time.monotonic, scale=opts.timeout_scale)
        self.transcript: list[HostReply] = []
        self.kernels: dict[str, UtilService] = {}
        self.hosts: dict[str, HostService] = {}
        self.uio: Any = None
        self._wakes: set[str] = set()
        self._conns: dict[int, _Conn] = {}
        self._stopping = False
        self.sandbox: Any = None
        self.sockets: Any = None
        self.fuse_mounts: list[tuple[Any, str]] = []
        self._fuse_by_id: dict[str, Any] = {}
        self._daemon: subprocess.Popen[bytes] | None = None  # a restarted daemon
        self._pidfd: int | None = None
        self.daemon_exits: list[int | None] = []
        self.waiters: list[Callable[[], bool]] = []  # polled each turn; True = done
        self._build_models()

    # -- models ----------------------------------------------------------------------
    def _build_models(self) -> None:
        classes = {"kvp": KvpKernel, "vss": VssKernel, "fcopy": FcopyKernel}
        for svc in self.opts.services:
            if svc not in classes:
                raise ValueError(f"unknown service {svc!r} (kvp, vss, fcopy)")
            if svc == "fcopy" and self.opts.fcopy == "uio":
                from hvguest.sim.kernel.uio import UioFcopy

                self.uio = UioFcopy(self.timers, ring_size=self.opts.uio_ring_size,
                                    prebound=self.opts.uio_prebound)
                host = HostService("fcopy", self.uio.host_send, self.timers,
                                   transcript=self.transcript,
                                   timeout=60.0)
                self.uio.on_response = host.deliver
                self.uio.on_connect = host.reopen
                self.uio.on_disconnect = lambda h=host: h.abort("channel_closed")
                self.hosts[svc] = host
                continue
            kernel = classes[svc](self.timers)
            host = HostService(svc, kernel.channel.host_send, self.timers,
                               transcript=self.transcript)
            kernel.channel.on_response = host.deliver
            self.kernels[svc] = kernel
            self.hosts[svc] = host

    def devices(self) -> dict[str, Any]:
        devs: dict[str, Any] = {k.driver.device_name: k.transport for k in self.kernels.values()}
        return devs

    # -- sandbox ---------------------------------------------------------------------
    def _new_fuse(self) -> Any:
        from hvguest.sim.fuse import FuseDeviceServer

        servers = []
        groups: list[tuple[Any, dict[str, Any]]] = []
        devs = self.devices()
        if devs:
            vmbus = FuseDeviceServer(devs)
            servers.append((vmbus, "/dev/vmbus"))
            groups.append((vmbus, devs))
        if self.uio is not None:
            uio_devs = {"uio0": self.uio.device}
            uio = FuseDeviceServer(uio_devs, passthrough={"uio0": self.uio.ring_path})
            servers.append((uio, "/dev/uio0"))
            groups.append((uio, uio_devs))
        # The FUSE server wakes synchronously; the models call back into themselves from
        # a read, so defer every wake to the loop (no re-entry into a model mid-update).
        for server, group in groups:
            for name, dev in group.items():
                dev.set_waker(self._deferred_waker(f"{id(server)}:{name}"))
        self._fuse_by_id = {str(id(s)): s for s, _p in servers}
        return servers

    def _deferred_waker(self, key: str) -> Callable[[], None]:
        return lambda: self._wakes.add(key)

    @property
    def rootless(self) -> bool:
        return self.opts.dev_root is not None

    def _start_rootless(self) -> None:
        from hvguest.sim.sockets import PlainProcess, SocketDeviceServer

        if self.uio is not None or self.opts.loop_filesystems:
            raise ValueError("--dev-root serves char devices only (no --fcopy uio, no "
                             "--loop-fs): use the FUSE mode as root")
        assert self.opts.dev_root is not None
        devs = self.devices()
        self.sockets = SocketDeviceServer(devs, os.path.join(self.opts.dev_root, "vmbus"))
        for name, dev in devs.items():
            dev.set_waker(self._deferred_waker(f"sock:{name}"))
        self.sandbox = PlainProcess(list(self.opts.command))
        self.sandbox.start()
        self._watch(self.sandbox.pid)
        for host in self.hosts.values():
            host.start()

    def start_daemon(self) -> None:
        if self.rootless:
            self._start_rootless()
            return
        from hvguest.sim.sandbox import LoopFs, Sandbox, SandboxSpec

        self.fuse_mounts = self._new_fuse()
        spec = SandboxSpec(
            command=list(self.opts.command),
            fuse_mounts=self.fuse_mounts,
            fake_sys=self.uio.fake_sys() if self.uio is not None else {},
            loop_filesystems=[LoopFs(i, t, m) for i, t, m in self.opts.loop_filesystems],
            network=self.opts.network,
        )
        self.sandbox = Sandbox(spec)
        self.sandbox.start()
        self._watch(self.sandbox.pid)
        for name, host in self.hosts.items():
            if name == "fcopy" and self.uio is not None:
                self.uio.start_binding_watch(self.sandbox.root)
                continue  # the host talks once the daemon opened /dev/uio0
            host.start()

    def start_cuse_devices(self) -> None:
        """Create /dev/vmbus/<name> for every simulated device through CUSE, then let
        the host start talking. No sandbox, no daemon: whoever opens the devices is
        the daemon (in a test VM, the units udev starts)."""
        from hvguest.sim.cuse import CuseDeviceServer

        if self.uio is not None:
            raise ValueError("the CUSE front end serves character devices only (--fcopy legacy)")
        if self.opts.drive_installed:
            from hvguest.sim import udev_drive

            self._drive_rule = udev_drive.install(self.opts.udev_rules_dir)
        servers = []
        for name, dev in self.devices().items():
            server = CuseDeviceServer(name, dev, devname=f"vmbus/{name}")
            dev.set_waker(self._deferred_waker(f"{id(server)}:{name}"))
            servers.append((server, f"/dev/vmbus/{name}"))
        self.fuse_mounts = servers
        self._fuse_by_id = {str(id(s)): s for s, _p in servers}
        for host in self.hosts.values():
            host.start()

    def _watch(self, pid: int) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._pidfd = os.pidfd_open(pid)

    @property
    def daemon_pid(self) -> int:
        if self._daemon is not None:
            return self._daemon.pid
        if self.sandbox is None:
            return 0  # CUSE front end: the daemons are not ours
        return int(self.sandbox.pid)

    def daemon_alive(self) -> bool:
        if self._daemon is not None:
            return self._daemon.poll() is None
        if self.sandbox is None:
            return False
        return bool(self.sandbox.alive())

    def _reap(self) -> None:
        if self._daemon is not None:
            rc = self._daemon.poll()
        else:
            rc = self.sandbox.poll()
        if rc is not None or not self.daemon_alive():
            self.daemon_exits.append(rc)
            log.info("daemon exited with %s", rc)
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    def restart_daemon(self, timeout: float = 10.0) -> int:
        """Stop the daemon and start the command again in the same sandbox (same
        namespaces and files), as a service manager would."""
        self._kill_daemon(timeout)
        self._daemon = self.sandbox.spawn(list(self.opts.command))
        self._watch(self._daemon.pid)
        return self._daemon.pid

    def _kill_daemon(self, timeout: float) -> None:
        if not self.daemon_alive():
            return
        os.kill(self.daemon_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.daemon_alive() and time.monotonic() < deadline:
            self._serve_once(0.02)
        if self.daemon_alive():
            os.kill(self.daemon_pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self.daemon_alive() and time.monotonic() < deadline:
                self._serve_once(0.02)
        if self._pidfd is not None:
            self._reap()

    # -- loop ------------------------------------------------------------------------
    def serve_forever(self) -> None:
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(self.opts.control):
            os.unlink(self.opts.control)
        lsock.bind(self.opts.control)
        lsock.listen(8)
        lsock.setblocking(False)
        self._lsock = lsock
        try:
            if self.opts.frontend == "cuse":
                self.start_cuse_devices()
            else:
                self.start_daemon()
            while not self._stopping:
                self._serve_once(1.0)
        finally:
            self.shutdown()
            lsock.close()
            try:
                os.unlink(self.opts.control)
            except OSError:
                pass

    def _serve_once(self, max_wait: float) -> None:
        fds: dict[int, Callable[[], None]] = {}
        for server, _path in self.fuse_mounts:
            # A disconnected server's fd stays readable: select() would spin on it.
            if server.disconnected:
                continue
            try:
                fds[server.fileno()] = server.process
            except OSError:
                continue
        if self.sockets is not None:
            fds.update(self.sockets.filenos())
        if hasattr(self, "_lsock"):
            fds[self._lsock.fileno()] = self._accept
            for fd, conn in list(self._conns.items()):
                fds[fd] = self._conn_reader(conn)
        if self._pidfd is not None:
            fds[self._pidfd] = self._reap
        # Drain the daemon's /dev/log as messages arrive: an unread datagram queue (10
        # messages) would block the daemon's syslog() calls and stall it.
        log_fd = self.sandbox.syslog_fileno() if self.sandbox is not None else None
        if log_fd is not None:
            fds[log_fd] = self.sandbox.drain_syslog
        if self.uio is not None:
            ufd = self.uio.host_fileno()
            if ufd is not None:
                fds[ufd] = self.uio.on_host_event
        deadline = self.timers.next_deadline()
        wait = max_wait
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        if self._wakes:
            wait = 0.0
        elif self.waiters:
            wait = min(wait, 0.05)
        try:
            ready, _, _ = select.select(list(fds), [], [], wait)
        except (OSError, ValueError):
            ready = []
        for fd in ready:
            handler = fds.get(fd)
            if handler is not None:
                self._guarded(handler)
        self._guarded(self.timers.run_due)
        self._guarded(self._flush_wakes)
        if self.waiters:
            self.waiters = [w for w in self.waiters if not w()]

    def all_registered(self) -> bool:
        done = all(k.state >= State.READY for k in self.kernels.values())
        if self.uio is not None:
            done = done and self.uio.connected
        return done

    @staticmethod
    def _guarded(fn: Callable[[], object]) -> None:
        """A bug in one model or front end must not take every test down with it."""
        try:
            fn()
        except Exception:  # noqa: BLE001
            log.exception("simulator event handler failed")

    def _conn_reader(self, conn: _Conn) -> Callable[[], None]:
        return lambda: self._read_conn(conn)

    def _flush_wakes(self) -> None:
        for _ in range(100):
            if not self._wakes:
                return
            wakes, self._wakes = self._wakes, set()
            for key in wakes:
                sid, name = key.split(":", 1)
                if sid == "sock":
                    self.sockets.flush(name)
                    continue
                server = self._fuse_by_id.get(sid)
                if server is not None:
                    server.wake(name)

    def _accept(self) -> None:
        try:
            sock, _ = self._lsock.accept()
        except OSError:
            return
        sock.setblocking(False)
        self._conns[sock.fileno()] = _Conn(sock)

    def _read_conn(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            conn.closed = True
            self._conns.pop(conn.sock.fileno(), None)
            conn.sock.close()
            return
        conn.buf += data
        while b"\n" in conn.buf:
            line, conn.buf = conn.buf.split(b"\n", 1)
            if line.strip():
                self._dispatch(conn, line)

    def _dispatch(self, conn: _Conn, line: bytes) -> None:
        try:
            req = json.loads(line)
            rid = req.get("id")
        except (ValueError, AttributeError):
            conn.send({"id": None, "ok": False, "error": "bad JSON request"})
            return

        def reply(result: Any) -> None:
            conn.send({"id": rid, "ok": True, "result": result})

        try:
            ops.dispatch(self, req, reply)
        except Exception as exc:  # noqa: BLE001 - report to the client, keep serving
            log.exception("control request %r failed", req.get("op"))
            conn.send({"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def stop(self) -> None:
        self._stopping = True

    def shutdown(self) -> None:
        if self._daemon is not None and self.daemon_alive():
            self._kill_daemon(5)
        if self.sandbox is not None:
            try:
                self.sandbox.stop()
            except Exception:  # noqa: BLE001
                log.exception("sandbox stop failed")
        for server, _path in self.fuse_mounts:
            server.close()
        if self._drive_rule is not None:
            from hvguest.sim import udev_drive

            udev_drive.remove(self._drive_rule)
            self._drive_rule = None
        if self.sockets is not None:
            self.sockets.close()
        if self.uio is not None:
            self.uio.close()
        for conn in self._conns.values():
            conn.sock.close()
        self._conns.clear()
