"""Loop-mounted file systems for the sandboxed VSS tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence


def ext4_images(workdir: str, mounts: Sequence[str]) -> list[tuple[str, str, str]]:
    """One fresh 64 MiB ext4 image per mount point (a.img, b.img, ...), as
    ``SandboxSpec.loop_filesystems`` entries (image, type, mount point)."""
    out = []
    for i, mnt in enumerate(mounts):
        image = os.path.join(workdir, f"{chr(ord('a') + i)}.img")
        with open(image, "wb") as f:
            f.truncate(64 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, timeout=60)
        out.append((image, "ext4", mnt))
    return out
