"""What each daemon publishes for ``hvguestctl status``: <run>/<service>.json.

The file is replaced atomically (``hvguest.files.atomic_write``: temporary file +
rename, mode 0644 in a 0755 directory whatever the umask, no fsync: /run is a tmpfs)
so a reader never sees half a document. While held (VSS: filesystems frozen) nothing
is written; ``release()`` writes the accumulated state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hvguest.files import atomic_write
from hvguest.paths import Paths

log = logging.getLogger(__name__)

HISTORY = 10
_SUFFIX = ".json"


def utc_now() -> str:
    """Now, to the second, as ISO 8601 in UTC: "2026-01-01T00:00:00Z". From time, not
    datetime: a module (and 0.2 MB) fewer in a daemon that needs nothing else of it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _package_version() -> str:
    # The package's own constant: importlib.metadata would cost every daemon
    # about 1.5 MB of resident memory for the same answer.
    from hvguest import __version__

    return __version__


class StatePublisher:
    """Keeps one daemon's state document and writes it on ``publish()``."""

    def __init__(
        self,
        service: str,
        paths: Paths,
        *,
        history: int = HISTORY,
        now: Callable[[], str] = utc_now,
    ) -> None:
        self.service = service
        self.paths = paths
        self.now = now
        # held: the filesystems are frozen (write nothing); dirty: changed since written
        self._held = self._dirty = False
        self._recent: deque[dict[str, str]] = deque(maxlen=history)
        self.doc: dict[str, Any] = {
            "service": service,
            "pid": os.getpid(),
            "started": now(),
            "updated": now(),
            "version": _package_version(),
            "device": None,
            "state": "starting",
            "last_op": None,
            "recent": [],
            "last_error": None,
            "details": {},
        }

    @property
    def path(self) -> str:
        return state_file(self.paths, self.service)

    @property
    def held(self) -> bool:
        """Between ``hold()`` and ``release()``: nothing is written."""
        return self._held

    # -- changes -----------------------------------------------------------

    def update(self, **fields: Any) -> None:
        """Set top-level fields (state=, device=, ...); ``details=`` merges into
        the service-specific details."""
        details = fields.pop("details", None)
        self.doc.update(fields)
        if details:
            self.doc["details"].update(details)
        self._dirty = True

    def record_op(self, op: str, result: str, detail: str = "") -> None:
        entry = {"op": op, "result": result, "detail": detail, "time": self.now()}
        self.doc["last_op"] = entry
        self._recent.append(entry)
        self.doc["recent"] = list(self._recent)
        self._dirty = True

    def record_error(self, message: str, remedy: str = "") -> None:
        self.doc["last_error"] = {"message": message, "remedy": remedy, "time": self.now()}
        self._dirty = True

    def clear_error(self) -> None:
        if self.doc["last_error"] is not None:
            self.doc["last_error"] = None
            self._dirty = True

    # -- writing -----------------------------------------------------------

    def hold(self) -> None:
        """Write nothing until ``release()`` (VSS: writing could block on a frozen
        filesystem); changes keep accumulating."""
        self._held = True

    def release(self) -> None:
        """Write what accumulated while held."""
        self._held = False
        self.publish()

    def publish(self) -> bool:
        """Write the document; False when held or the write failed (logged)."""
        if self._held:
            self._dirty = True
            return False
        self.doc["updated"] = self.now()
        try:
            text = json.dumps(self.doc, indent=2) + "\n"
            atomic_write(self.path, text, mode=0o644, fsync=False, dir_mode=0o755)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)
            return False
        self._dirty = False
        return True

    def remove(self) -> None:
        """Delete the state file (orderly exit of a daemon that is not needed)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def state_file(paths: Paths, service: str) -> str:
    return os.path.join(paths.run, service + _SUFFIX)


def read_state(paths: Paths, service: str) -> dict[str, Any] | None:
    """The published document, or None when absent or unreadable."""
    try:
        with open(state_file(paths, service), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_all_states(paths: Paths) -> dict[str, dict[str, Any]]:
    """Every published document under <run>, keyed by service name."""
    try:
        names = sorted(os.listdir(paths.run))
    except OSError:
        return {}
    result: dict[str, dict[str, Any]] = {}
    for name in names:
        if name.startswith(".") or not name.endswith(_SUFFIX):
            continue
        service = name[: -len(_SUFFIX)]
        doc = read_state(paths, service)
        if doc is not None:
            result[service] = doc
    return result


def pid_alive(paths: Paths, pid: object) -> bool:
    """The published pid still runs an hvguest program (guards against pid reuse)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    pdir = os.path.join(paths.proc, str(pid))
    if not os.path.isdir(pdir):
        return False
    try:
        with open(os.path.join(pdir, "cmdline"), "rb") as f:
            cmdline = f.read()
    except OSError:
        return True  # exists but unreadable: believe it
    return not cmdline or b"hvguest" in cmdline
