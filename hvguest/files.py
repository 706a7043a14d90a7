"""Whole-file replacement: readers see the old file or the new one, never a part."""

from __future__ import annotations

import contextlib
import os
import tempfile


def atomic_write(
    path: str,
    data: str | bytes,
    *,
    mode: int = 0o644,
    fsync: bool = True,
    dir_mode: int = 0o755,
) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    The directory is created when missing, with ``dir_mode`` whatever the umask (the
    state directory must stay readable by ``hvguestctl`` as any user). ``fsync``:
    the data reaches the disk before the rename, so a crash leaves the old file
    or the new one; state files in /run skip it (tmpfs).
    """
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=dir_mode, exist_ok=True)
        os.chmod(directory, dir_mode)
    fd, tmp = tempfile.mkstemp(prefix=".hvguest-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
