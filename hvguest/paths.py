"""Injectable filesystem roots.

Every path a daemon touches on the machine derives from one of these roots, so
tests and the simulator can point a daemon at a private tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paths:
    dev: str = "/dev"
    sys: str = "/sys"
    proc: str = "/proc"
    pool_dir: str = "/var/lib/hyperv"
    etc: str = "/etc/hvguest"
    lib: str = "/usr/lib/hvguest"
    run: str = "/run/hvguest"
    state: str = "/var/lib/hvguest"
    os_etc: str = "/etc"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def config_file(self) -> str:
        return os.path.join(self.etc, "hvguest.yaml")

    def vmbus_device(self, name: str) -> str:
        """/dev/vmbus/<name>, e.g. hv_kvp."""
        return os.path.join(self.dev, "vmbus", name)

    @property
    def vmbus_devices(self) -> str:
        return os.path.join(self.sys, "bus", "vmbus", "devices")

    def pool_file(self, pool: int) -> str:
        return os.path.join(self.pool_dir, f".kvp_pool_{pool}")
