"""KvpService with a scripted transport: readiness, re-registration, state, replies.

No simulator: the transport is a stand-in, the pools live in a temporary directory,
sd_notify goes to a socket there.
"""

from __future__ import annotations

import json
import os
import socket
import struct

import pytest

from hvguest.config import load_config_text
from hvguest.daemon import Runtime
from hvguest.daemons.kvpd import KvpService
from hvguest.errors import TransportError
from hvguest.kvp.settings import KvpSettings
from hvguest.paths import Paths
from hvguest.pool import PoolRegistry
from hvguest.roles.kvp import KvpState
from hvguest.wire.kvp import KvpGet, KvpSet

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

pytestmark = [pytest.mark.system]


class FakeTransport:
    path = "/dev/vmbus/hv_kvp"

    def __init__(self) -> None:
        self.version = "3.1"
        self.is_open = False
        self.opens = 0
        self.fail_opens = 0
        self.inbox: list[bytes | Exception] = []
        self.sent: list[bytes] = []
        self._r, self._w = os.pipe()

    def open(self) -> FakeTransport:
        self.opens += 1
        if self.fail_opens:
            self.fail_opens -= 1
            raise TransportError(f"{self.path}: device absent")
        self.is_open = True
        return self

    def fileno(self) -> int:
        return self._r

    def read_ready(self) -> bytes:
        item = self.inbox.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def write_packet(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.is_open = False


@pytest.fixture()
def env(tmp_path, monkeypatch):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    paths = Paths(pool_dir=str(tmp_path / "hyperv"), run=str(tmp_path / "run"))
    settings = load_config_text("kvp:\n  fqdn_timeout: 0.5\n").get(KvpSettings)
    runtime = Runtime("hvguest-kvpd")
    transport = FakeTransport()
    service = KvpService(paths, settings, runtime, transport=transport)
    yield service, transport, runtime, sock, paths
    runtime.close()
    sock.close()
    POOLS.close_all()


def status(reply: bytes) -> int:
    return struct.unpack_from("<I", reply)[0]


def test_start_registers_publishes_and_serves(env):
    service, transport, runtime, sock, paths = env
    service.start()
    runtime.ready("registered")
    assert b"READY=1" in sock.recv(4096)
    assert service.role.state is KvpState.READY and service.role.version == "3.1"
    assert (
        POOLS.open(paths, 1).get(
            "hvguest.version",
        )
        is not None
    )
    doc = json.load(open(os.path.join(paths.run, "kvp.json")))
    assert doc["state"] == "ready" and doc["details"]["protocol_version"] == "3.1"
    transport.inbox += [KvpSet(0, "k", "v").encode(), KvpGet(0, "k").encode()]
    service.channel._on_readable()
    service.channel._on_readable()
    assert [status(r) for r in transport.sent] == [0, 0]
    service.channel.publish()
    doc = json.load(open(os.path.join(paths.run, "kvp.json")))
    assert doc["details"]["requests"] == 2 and doc["details"]["pools"]["0"]["records"] == 1
    assert doc["last_op"]["op"] == "GET" and doc["last_op"]["result"] == "HV_S_OK"
    assert doc["last_op"]["time"].endswith("Z")
    service.stop()
    assert json.load(open(os.path.join(paths.run, "kvp.json")))["state"] == "stopped"


def test_reregisters_after_a_device_error(env, caplog):
    service, transport, runtime, _sock, _paths = env
    service.start()
    transport.inbox.append(TransportError("read failed: EINVAL"))
    service.channel._on_readable()
    # Re-registered after the first back-off step (0.1 s), not within the failure.
    assert transport.opens == 1 and service.channel._reopen_timer is not None
    while service.channel._reopen_timer is not None:
        runtime.run_once(0.2)
    assert transport.opens == 2 and transport.is_open
    assert service.role.state is KvpState.READY
    transport.inbox.append(KvpGet(0, "missing").encode())
    service.channel._on_readable()
    assert status(transport.sent[-1]) == 0x80070103
    assert "re-registering" in caplog.text


def test_keeps_retrying_while_the_device_is_gone(env, caplog):
    service, transport, runtime, _sock, _paths = env
    service.start()
    transport.fail_opens = 3
    for _ in range(3):
        transport.inbox.append(TransportError("device is going away"))
    service.channel._on_readable()
    assert service.role.state is KvpState.UNREGISTERED
    assert service.channel._reopen_timer is not None
    for _ in range(4):  # run the scheduled retries (the first waits too) without waiting
        timer = service.channel._reopen_timer
        if timer is None:
            break
        timer.cancel()
        timer.callback()
    assert transport.is_open and service.role.state is KvpState.READY
    # one error line for the repeated failure, not one per attempt
    assert caplog.text.count("cannot re-register") == 1


def test_set_ip_info_failure_inside_apply_still_replies(env, monkeypatch):
    from hvguest.wire.kvp import KvpSetIpInfo

    service, transport, _runtime, _sock, _paths = env
    service.start()

    class Broken:
        def apply(self, config):
            raise OSError("sysfs went away")

    service._netconfig = Broken()
    request = KvpSetIpInfo(0, "{a3c5e2f0-1111-2222-3333-444455556666}", 1, True, "", "", "", "")
    transport.inbox += [request.encode(), KvpGet(0, "k").encode()]
    service.channel._on_readable()
    assert status(transport.sent[-1]) == 0x80004005
    assert service.role.state is KvpState.READY
    service.channel._on_readable()  # the next request is served normally
    assert status(transport.sent[-1]) == 0x80070103


def test_unexpected_error_still_replies(env, monkeypatch):
    service, transport, _runtime, _sock, _paths = env
    service.start()

    def boom(pool, key):
        raise RuntimeError("bug")

    monkeypatch.setattr(service.role.view, "get", boom)
    transport.inbox.append(KvpGet(0, "k").encode())
    service.channel._on_readable()
    assert status(transport.sent[-1]) == 0x80004005


def test_a_bug_while_writing_replies_and_the_next_request_is_served(env, monkeypatch):
    service, transport, _runtime, _sock, _paths = env
    service.start()

    def boom(action):
        raise RuntimeError("bug")

    monkeypatch.setattr(service.actions, "write", boom)
    transport.inbox += [KvpSet(0, "k", "v").encode(), KvpGet(0, "k").encode()]
    service.channel._on_readable()
    assert status(transport.sent[-1]) == 0x80004005
    assert service.role.state is KvpState.READY and service.role.version == "3.1"
    service.channel._on_readable()  # served, not refused as a request during a write
    assert status(transport.sent[-1]) == 0x80070103


def test_unusable_pool_directory_still_serves_the_rest(tmp_path, monkeypatch):
    from hvguest.wire.kvp import KvpEnumerate

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    paths = Paths(pool_dir=str(blocker / "hyperv"), run=str(tmp_path / "run"))
    settings = load_config_text("kvp:\n  fqdn_timeout: 0.5\n").get(KvpSettings)
    runtime = Runtime("hvguest-kvpd")
    transport = FakeTransport()
    service = KvpService(paths, settings, runtime, transport=transport)
    try:
        service.start()
        transport.inbox += [KvpEnumerate(2, 0).encode(), KvpSet(0, "k", "v").encode()]
        service.channel._on_readable()
        service.channel._on_readable()
        assert [status(r) for r in transport.sent] == [0, 0x80004005]
        assert "cannot create pool directory" in service.state.doc["last_error"]["message"]
    finally:
        runtime.close()
        POOLS.close_all()


def test_writes_refused_at_once_while_the_pool_filesystem_is_frozen(env):
    from hvguest.vss.record import clear_record, write_record

    service, transport, _runtime, _sock, paths = env
    service.start()
    # vssd's record of a freeze covering the filesystem of the pool directory
    write_record(
        paths,
        {"pid": 1, "started": "now", "mounts": [{"mount_point": paths.pool_dir, "dev": "0:0"}]},
    )
    transport.inbox += [KvpSet(0, "k", "v").encode(), KvpGet(0, "k").encode()]
    service.channel._on_readable()
    service.channel._on_readable()
    assert [status(r) for r in transport.sent] == [0x80004005, 0x80070103]
    clear_record(paths)
    transport.inbox.append(KvpSet(0, "k", "v").encode())
    service.channel._on_readable()
    assert status(transport.sent[-1]) == 0
