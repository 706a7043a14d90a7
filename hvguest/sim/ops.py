"""The control operations of ``hvguest-sim serve`` (one function per JSON ``op``).

Every operation gets the server, the decoded request and ``reply(result)``; it calls
``reply`` once, possibly later (when the daemon has answered the host request).
"""

from __future__ import annotations

import signal
import struct
from collections.abc import Callable
from typing import Any, Protocol

from hvguest.sim import host as h
from hvguest.sim.kernel.service import UtilService
from hvguest.sim.kernel.timers import TimerQueue
from hvguest.wire.status import HvStatus


class ServerView(Protocol):
    """What the operations use of the server (``hvguest.sim.server.SimServer``), named
    here so that this module does not import the server that dispatches to it."""

    timers: TimerQueue
    transcript: list[h.HostReply]
    kernels: dict[str, UtilService]
    hosts: dict[str, h.HostService]
    uio: Any
    sandbox: Any
    daemon_exits: list[int | None]
    waiters: list[Callable[[], bool]]

    @property
    def daemon_pid(self) -> int: ...

    @property
    def rootless(self) -> bool: ...

    def daemon_alive(self) -> bool: ...

    def restart_daemon(self, timeout: float = 10.0) -> int: ...

    def all_registered(self) -> bool: ...

    def stop(self) -> None: ...


Reply = Callable[[Any], None]
Op = Callable[[ServerView, dict[str, Any], Reply], None]
OPS: dict[str, Op] = {}


def op(name: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        OPS[name] = fn
        return fn

    return register


def dispatch(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    name = req.get("op")
    fn = OPS.get(str(name))
    if fn is None:
        raise ValueError(f"unknown op {name!r}")
    fn(server, req, reply)


def _host(server: ServerView, service: str) -> h.HostService:
    if service not in server.hosts:
        raise ValueError(f"service {service} is not simulated (--services)")
    return server.hosts[service]


def _submit(server: ServerView, service: str, name: str, req: dict[str, Any], body: bytes,
            decode: h.Decoder | None, reply: Reply) -> None:
    host = _host(server, service)
    request = {k: v for k, v in req.items() if k not in ("id", "op")}
    host.submit(name, request, host.ic_payload(body), decode,
                lambda r: reply(r.to_json()))


# -- daemon and simulator --------------------------------------------------------------
@op("ping")
def _ping(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    reply({"daemon_pid": server.daemon_pid, "root": f"/proc/{server.daemon_pid}/root",
           "alive": server.daemon_alive(), "rootless": server.rootless})


@op("daemon_alive")
def _alive(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    reply(server.daemon_alive())


@op("signal")
def _signal(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    import os

    sig = int(req.get("signal", signal.SIGTERM))
    if server.daemon_alive():
        os.kill(server.daemon_pid, sig)
    reply(None)


@op("restart")
def _restart(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    reply({"daemon_pid": server.restart_daemon()})


@op("syslog")
def _syslog(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    reply(server.sandbox.syslog())


@op("kernel_log")
def _klog(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    lines: list[str] = []
    for kernel in server.kernels.values():
        lines += kernel.log
    if server.uio is not None:
        lines += server.uio.log
    reply(lines)


@op("transcript")
def _transcript(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    reply([r.to_json() for r in server.transcript])


@op("state")
def _state(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    reply({name: {"state": int(k.state), "open": k.transport.is_open,
                  "queued": k.transport.outmsg is not None}
           for name, k in server.kernels.items()})


@op("hibernate")
def _hibernate(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Suspend and resume the guest: every simulated service goes through its driver's
    suspend hook, then the host reopens the channels (NEGOTIATE first)."""
    for name, kernel in server.kernels.items():
        kernel.suspend()
        server.hosts[name].reset_channel("suspended")
    reply(None)


@op("destroy")
def _destroy(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Remove a device as on module unload (char devices) or host rescind (UIO)."""
    service = req["service"]
    if service == "fcopy" and server.uio is not None:
        server.uio.rescind()
    else:
        kernel = server.kernels[service]
        kernel.transport.destroy()
    reply(None)


def _uio(server: ServerView) -> Any:
    if server.uio is None:
        raise ValueError("not running with --fcopy uio")
    return server.uio


@op("uio_rescind")
def _uio_rescind(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Host rescind; ``node_opens``: /dev/uio0 still opens (I/O fails with EIO)."""
    _uio(server).rescind(node_opens=bool(req.get("node_opens", False)))
    reply(None)


@op("uio_remove")
def _uio_remove(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Rescind and remove the device's directory from the sandbox's /sys."""
    _uio(server).remove()
    reply(None)


@op("uio_corrupt")
def _uio_corrupt(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    reply(_uio(server).corrupt(str(req["what"])))


@op("uio_stats")
def _uio_stats(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Opens of /dev/uio0 (attempts), channel connects, connected now."""
    reply(_uio(server).stats())


@op("daemon_exits")
def _daemon_exits(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Exit statuses of the daemon processes that ended (None: killed by a signal)."""
    reply(list(server.daemon_exits))


@op("uio_raw_packet")
def _uio_raw_packet(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Put arbitrary bytes (descriptor + payload) on the RX ring; no reply is awaited."""
    if server.uio is None:
        raise ValueError("not running with --fcopy uio")
    server.uio.host_send_raw(bytes.fromhex(req["packet"]))
    reply(None)


@op("wait_registered")
def _wait_registered(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Reply once every simulated service has a registered daemon (True), or when the
    daemon exited or ``timeout`` passed (False)."""
    deadline = server.timers.now() + float(req.get("timeout", 30))

    def check() -> bool:
        if server.all_registered():
            reply(True)
            return True
        if not server.daemon_alive() or server.timers.now() > deadline:
            reply(False)
            return True
        return False

    if not check():
        server.waiters.append(check)


@op("exec")
def _exec(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Run a short command in the sandbox (also after the daemon exited)."""
    done = server.sandbox.exec(list(req["cmd"]), timeout=float(req.get("timeout", 30)),
                               input=bytes.fromhex(req.get("input", "")) or None)
    reply({"returncode": done.returncode, "stdout": done.stdout.hex(),
           "stderr": done.stderr.hex()})


@op("trace")
def _trace(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """The last reads and writes the daemon made on each device (for debugging)."""
    reply({n: list(k.transport.trace) for n, k in server.kernels.items()})


@op("shutdown")
def _shutdown(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    reply(None)
    server.stop()


# -- KVP ---------------------------------------------------------------------------------
@op("kvp_set")
def _kvp_set(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    body = h.kvp_set_body(int(req["pool"]), req["key"], req["value"],
                          req.get("value_type", "REG_SZ"))
    _submit(server, "kvp", "set", req, body, None, reply)


@op("kvp_get")
def _kvp_get(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    body = h.kvp_get_body(int(req["pool"]), req["key"])
    _submit(server, "kvp", "get", req, body, h.decode_kvp_get, reply)


@op("kvp_delete")
def _kvp_delete(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    body = h.kvp_delete_body(int(req["pool"]), req["key"])
    _submit(server, "kvp", "delete", req, body, None, reply)


@op("kvp_enumerate")
def _kvp_enum(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    body = h.kvp_enumerate_body(int(req["pool"]), int(req["index"]))
    _submit(server, "kvp", "enumerate", req, body, h.decode_kvp_enumerate, reply)


@op("kvp_enumerate_all")
def _kvp_enum_all(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Enumerate from index 0 until a non-zero status, as the host does."""
    pool = int(req["pool"])
    limit = int(req.get("limit", 100000))
    items: list[list[str]] = []

    def step(index: int) -> None:
        body = h.kvp_enumerate_body(pool, index)
        host = _host(server, "kvp")

        def done(r: h.HostReply) -> None:
            if r.status == HvStatus.HV_S_OK and index + 1 < limit:
                items.append([r.fields["key"], r.fields["value"]])
                step(index + 1)
            else:
                if r.status == HvStatus.HV_S_OK:
                    items.append([r.fields["key"], r.fields["value"]])
                reply({"items": items, "status": r.status, "index": index})

        host.submit("enumerate", {"pool": pool, "index": index}, host.ic_payload(body),
                    h.decode_kvp_enumerate, done)

    step(0)


@op("kvp_batch")
def _kvp_batch(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """Host requests queued back to back, one reply with every status.

    The host still sends one transaction at a time; only the control round trip per
    request goes away, so a benchmark measures the daemon and the device path.
    """
    host = _host(server, "kvp")
    steps: list[dict[str, Any]] = list(req["steps"])
    prepared = [_kvp_step(step) for step in steps]  # refuse a bad batch before sending any
    statuses: list[int | None] = []  # None: the host got no answer at all
    if not prepared:
        reply({"statuses": statuses})
        return

    def done(r: h.HostReply) -> None:
        statuses.append(r.status)
        if len(statuses) == len(prepared):
            reply({"statuses": statuses})

    for step, (body, decode) in zip(steps, prepared, strict=True):
        request = {k: v for k, v in step.items() if k != "op"}
        host.submit(step["op"], request, host.ic_payload(body), decode, done)


def _kvp_step(step: dict[str, Any]) -> tuple[bytes, h.Decoder | None]:
    kind, pool = step.get("op"), int(step["pool"])
    if kind == "set":
        value_type = step.get("value_type", "REG_SZ")
        return h.kvp_set_body(pool, step["key"], step["value"], value_type), None
    if kind == "get":
        return h.kvp_get_body(pool, step["key"]), h.decode_kvp_get
    if kind == "delete":
        return h.kvp_delete_body(pool, step["key"]), None
    if kind == "enumerate":
        return h.kvp_enumerate_body(pool, int(step["index"])), h.decode_kvp_enumerate
    raise ValueError(f"kvp_batch: unknown step {kind!r} (set, get, delete, enumerate)")


@op("kvp_get_ip_info")
def _kvp_get_ip(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    body = h.kvp_ip_body(4, req["adapter_id"], addr_family=int(req.get("addr_family", 0)))
    _submit(server, "kvp", "get_ip_info", req, body, h.decode_kvp_ip, reply)


@op("kvp_set_ip_info")
def _kvp_set_ip(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    body = h.kvp_ip_body(
        5, req["adapter_id"], addr_family=int(req["addr_family"]),
        dhcp_enabled=bool(req["dhcp_enabled"]), ip_addr=req["ip_addr"], sub_net=req["sub_net"],
        gate_way=req["gate_way"], dns_addr=req["dns_addr"])
    _submit(server, "kvp", "set_ip_info", req, body, None, reply)


@op("host_raw")
def _host_raw(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """An arbitrary IC body (after the 28-byte header) from the host; full reply back."""
    service = req["service"]
    body = bytes.fromhex(req["body"])
    host = _host(server, service)

    def decode(payload: bytes) -> dict[str, Any]:
        return {"payload": payload.hex()}

    host.submit("raw", {"body_len": len(body)}, host.ic_payload(body), decode,
                lambda r: reply(r.to_json()))


def _inject(server: ServerView, service: str, data: bytes, done: Callable[[bytes | None], None]
            ) -> None:
    kernel = server.kernels.get(service)
    if kernel is None:
        raise ValueError(f"service {service} has no char-device model here")
    kernel.inject_raw(data, done)


@op("kvp_raw")
def _kvp_raw(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    _inject(server, "kvp", bytes.fromhex(req["data"]),
            lambda r: reply(None if r is None else r.hex()))


# -- VSS ---------------------------------------------------------------------------------
def unsafe_mounts(server: ServerView) -> list[str]:
    """Read-write /dev/* mounts in the daemon's view that are not the sandbox's test
    loop filesystems: a FREEZE must never reach those."""
    if not server.daemon_alive():
        return []
    loops = set(server.sandbox.loop_devices)
    bad = []
    with open(f"/proc/{server.daemon_pid}/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4 or not parts[0].startswith("/dev/"):
                continue
            if "rw" in parts[3].split(",") and parts[0] not in loops:
                bad.append(f"{parts[0]} on {parts[1]}")
    return bad


@op("vss")
def _vss(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    name = req["what"]
    if name == "freeze":
        bad = unsafe_mounts(server)
        if bad:
            raise RuntimeError(f"refusing FREEZE: non-test filesystems visible: {bad}")
    body = h.vss_body(h.VSS_OPS[name], int(req.get("flags", 0)), int(req.get("size", 12)))
    _submit(server, "vss", name, req, body, h.decode_vss, reply)


@op("vss_raw")
def _vss_raw(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    _inject(server, "vss", bytes.fromhex(req["data"]),
            lambda r: reply(None if r is None else r.hex()))


# -- FCOPY -------------------------------------------------------------------------------
@op("fcopy_send")
def _fcopy_send(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    """START, WRITEs of ``fragment`` bytes, COMPLETE (or CANCEL), like Copy-VMFile."""
    host = _host(server, "fcopy")
    src = open(req["src"], "rb")  # noqa: SIM115 - closed when the chain ends
    size = int(req.get("size", 0)) or __import__("os").fstat(src.fileno()).st_size
    fragment = int(req.get("fragment", h.DATA_FRAGMENT))
    cancel_after = req.get("cancel_after_bytes")
    steps: list[int | None] = []

    def finish(status: int | None) -> None:
        src.close()
        reply({"status": status, "steps": steps})

    def send(name: str, body: bytes, then: Callable[[h.HostReply], None]) -> None:
        host.submit(name, {}, host.ic_payload(body), None, then)

    def after_start(r: h.HostReply) -> None:
        steps.append(r.status)
        if r.status != HvStatus.HV_S_OK:
            finish(r.status)
            return
        write(0)

    def write(offset: int) -> None:
        if cancel_after is not None and offset >= int(cancel_after):
            send("cancel", h.fcopy_op_body(h.FCOPY_CANCEL), lambda r: done_final(r, True))
            return
        chunk = src.read(fragment)
        if not chunk:
            send("complete", h.fcopy_op_body(h.FCOPY_COMPLETE), lambda r: done_final(r, False))
            return

        def after_write(r: h.HostReply) -> None:
            steps.append(r.status)
            if r.status != HvStatus.HV_S_OK:

                def after_cancel(c: h.HostReply) -> None:
                    steps.append(c.status)
                    finish(r.status)

                send("cancel", h.fcopy_op_body(h.FCOPY_CANCEL), after_cancel)
                return
            write(offset + len(chunk))

        send("write", h.fcopy_write_body(offset, chunk), after_write)

    def done_final(r: h.HostReply, cancelled: bool) -> None:
        steps.append(r.status)
        finish(r.status)

    body = h.fcopy_start_body(req["name"], req["dest_dir"], int(req.get("flags", 0)), size)
    send("start", body, after_start)


@op("fcopy_raw")
def _fcopy_raw(server: ServerView, req: dict[str, Any], reply: Reply) -> None:
    data = bytes.fromhex(req["data"])
    if server.uio is not None:
        host = _host(server, "fcopy")
        host.submit("raw", {"body_len": len(data)}, host.ic_payload(data), None,
                    lambda r: reply(r.status))
        return

    def done(r: bytes | None) -> None:
        if r is None or len(r) != 4:
            reply(HvStatus.HV_E_FAIL)
        else:
            reply(struct.unpack("<I", r)[0])

    _inject(server, "fcopy", data, done)
