"""hvguest-uio-bind on a fake sysfs tree: what it loads and writes, and when it
does nothing (the privileged half of the UIO fcopy path)."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from hvguest.errors import TransportError
from hvguest.paths import Paths
from hvguest.transport import uio_bind
from hvguest.transport.uio import FCOPY_CLASS_ID

INSTANCE = "eb765408-105f-49b6-b4aa-c123b64d17d4"


class Kernel:
    """The driver core of a fake /sys: modprobe creates the driver directory; a write
    to new_id (or bind) attaches the device (driver link + uio0) like the kernel."""

    def __init__(self, root: str, *, attach_on_new_id: bool = True) -> None:
        self.paths = Paths(sys=os.path.join(root, "sys"), dev=os.path.join(root, "dev"))
        os.makedirs(self.paths.dev)
        self.device = os.path.join(self.paths.vmbus_devices, INSTANCE)
        os.makedirs(self.device)
        with open(os.path.join(self.device, "class_id"), "w") as f:
            f.write("{" + FCOPY_CLASS_ID + "}\n")
        self.driver = uio_bind.driver_dir(self.paths)
        self.modprobed: list[str] = []
        self.attach_on_new_id = attach_on_new_id

    def modprobe(self, module: str) -> None:
        self.modprobed.append(module)
        os.makedirs(self.driver, exist_ok=True)

    def attach(self) -> None:
        os.symlink(self.driver, os.path.join(self.device, "driver"))
        os.makedirs(os.path.join(self.device, "uio", "uio0"))

    def written(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.driver, name)) as f:
                return f.read()
        except FileNotFoundError:
            return None


@pytest.fixture
def kernel(tmp_path: os.PathLike[str]) -> Kernel:
    return Kernel(str(tmp_path))


def test_loads_the_module_writes_new_id_and_binds(kernel: Kernel) -> None:
    timer = threading.Timer(0.1, kernel.attach)  # the driver core attaches later
    timer.start()
    try:
        done = uio_bind.bind_fcopy(kernel.paths, modprobe=kernel.modprobe, timeout=5)
    finally:
        timer.join()
    assert done.endswith("bound to uio_hv_generic")
    assert kernel.modprobed == ["uio_hv_generic"]
    assert kernel.written("new_id") == FCOPY_CLASS_ID
    # new_id attached nothing yet (fake kernel): the instance was bound explicitly.
    assert kernel.written("bind") == INSTANCE


def test_already_bound_touches_nothing(kernel: Kernel) -> None:
    os.makedirs(kernel.driver)
    kernel.attach()
    done = uio_bind.bind_fcopy(kernel.paths, modprobe=kernel.modprobe)
    assert "already bound" in done
    assert kernel.modprobed == [] and kernel.written("new_id") is None


def test_legacy_kernel_and_no_device_need_nothing(kernel: Kernel, tmp_path: str) -> None:
    os.makedirs(os.path.join(kernel.paths.dev, "vmbus"))
    open(kernel.paths.vmbus_device("hv_fcopy"), "w").close()
    assert "hv_utils serves fcopy" in uio_bind.bind_fcopy(kernel.paths, modprobe=kernel.modprobe)
    empty = Paths(sys=os.path.join(str(tmp_path), "nosys"), dev=os.path.join(str(tmp_path), "x"))
    assert "no fcopy device" in uio_bind.bind_fcopy(empty, modprobe=kernel.modprobe)
    assert kernel.modprobed == []


def test_new_id_eexist_is_fine(kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    os.makedirs(kernel.driver)
    real_open = open

    def fake_open(path: str, mode: str = "r", **kw: object):  # type: ignore[no-untyped-def]
        if path.endswith("new_id"):
            raise OSError(errno.EEXIST, "File exists", path)
        return real_open(path, mode, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", fake_open)
    uio_bind.bind(kernel.paths, kernel.device, modprobe=kernel.modprobe)
    assert kernel.modprobed == []


def test_modprobe_failure_is_a_clear_error(kernel: Kernel) -> None:
    def fail(module: str) -> None:
        raise TransportError(f"cannot load {module}: Module uio_hv_generic not found")

    with pytest.raises(TransportError, match="cannot load uio_hv_generic"):
        uio_bind.bind_fcopy(kernel.paths, modprobe=fail)


def test_bound_to_another_driver(kernel: Kernel) -> None:
    other = os.path.join(kernel.paths.sys, "bus", "vmbus", "drivers", "hv_netvsc")
    os.makedirs(other)
    os.symlink(other, os.path.join(kernel.device, "driver"))
    with pytest.raises(TransportError, match="bound to hv_netvsc"):
        uio_bind.bind_fcopy(kernel.paths, modprobe=kernel.modprobe)


def test_nothing_attaches_within_the_timeout(kernel: Kernel) -> None:
    with pytest.raises(TransportError, match="no uio device appeared within 0.1 s"):
        uio_bind.bind_fcopy(kernel.paths, modprobe=kernel.modprobe, timeout=0.1)


def test_main_exit_status(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    # No device at this root: nothing to do, status 0.
    nowhere = ["--sys-root", kernel.paths.sys + "-none", "--dev-root", "/nonexistent"]
    assert uio_bind.main(nowhere) == 0
    assert "nothing to bind" in capsys.readouterr().out
    # A device bound elsewhere: status 1 and the reason on stderr.
    other = os.path.join(kernel.paths.sys, "bus", "vmbus", "drivers", "hv_netvsc")
    os.makedirs(other)
    os.symlink(other, os.path.join(kernel.device, "driver"))
    assert uio_bind.main(["--sys-root", kernel.paths.sys, "--dev-root", kernel.paths.dev]) == 1
    assert "bound to hv_netvsc" in capsys.readouterr().err
