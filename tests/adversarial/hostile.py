"""Strings a hostile host or local user plants, and the checks that they stayed inert."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable

# Terminal escapes, line forgery, Unicode line breaks, a bidi override, DEL and C1.
HOSTILE = "a\x1b]0;owned\x07b\x1b[2Jc\nFORGED d\re\tf\x7fg\x85h\u2028i\u2029j\u202ek\x9bl"
UNSAFE_CHARS = ("\x1b", "\x07", "\r", "\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\x9b")
NOBODY = 65534
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def assert_inert(text: str, lines: int | None = None) -> None:
    """No control character except the line ends; no line starts with the forged text."""
    for ch in UNSAFE_CHARS:
        assert ch not in text, f"{ch!r} reached the output: {text!r}"
    assert "\t" not in text.replace("\tRel_ID", "")
    assert not any(line.startswith("FORGED") for line in text.splitlines()), text
    if lines is not None:
        assert len(text.splitlines()) == lines, text


def hvguestctl(*argv: str, user: int | None = None, env: dict[str, str] | None = None,
               cwd: str = "/", **kw: object) -> subprocess.CompletedProcess[bytes]:
    """hvguestctl as a separate process, from /, optionally as another user."""
    environ = dict(env if env is not None else os.environ)
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    preexec: Callable[[], None] | None = None
    if user is not None:
        def preexec() -> None:
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)
        environ["HOME"] = "/"
    cmd = [sys.executable, "-B", "-m", "hvguest.cli.main", *argv]
    return subprocess.run(cmd, env=environ, cwd=cwd, preexec_fn=preexec,  # noqa: PLW1509
                          capture_output=True, timeout=60, check=False, **kw)  # type: ignore[call-overload]


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
