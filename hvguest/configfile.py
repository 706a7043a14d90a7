"""Reading the configuration file within bounds, before anything is built from it.

Only a regular file is read (a FIFO or a device would block or never end), at most
MAX_CONFIG_BYTES of it, strict UTF-8; every failure is a ``ConfigError`` naming the
file. The bounds on the YAML inside (depth, aliases, expansion) are
``hvguest.configbounds``: reading needs no parser.
"""

from __future__ import annotations

import os
import stat

from hvguest.errors import ConfigError

# The packaged file is ~6 KiB.
MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path: str) -> str | None:
    """The file's text; None if absent. Only a regular file is read (a FIFO or a
    device would block or never end), and at most MAX_CONFIG_BYTES of it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=path) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("not a regular file", where=path)
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes ({st.st_size})", where=path)
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_CONFIG_BYTES:  # grew while being read
            raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", where=path)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=path) from exc
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}",
            where=path,
        ) from exc
