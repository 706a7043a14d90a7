"""The ``fcopy:`` section of hvguest.yaml: where host files may go and how they land."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass

from hvguest.configschema import config_section, setting
from hvguest.fcopy.policy import DEFAULT_ROOTS

GIB = 1 << 30


def _check_roots(roots: list[str]) -> str | None:
    for root in roots:
        if not os.path.isabs(root):
            return f"allowed root {root!r} is not an absolute path"
        if ".." in root.split("/"):
            return f"allowed root {root!r} contains '..'"
    return None


def parse_mode(value: int | str) -> int:
    """0644 (YAML's octal int), "0644", "644" or "0o644" -> 0o644."""
    if isinstance(value, int):
        mode = value
    else:
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError(f"mode {value!r} is not an octal number such as '0644'") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(
            f"mode {value!r} is outside 0 to 0777 (write octal modes quoted, e.g. '0644')"
        )
    return mode


def _check_mode(value: int | str) -> str | None:
    parse_mode(value)
    return None


def _check_dir_mode(value: int | str) -> str | None:
    if parse_mode(value) & 0o022:
        return (
            f"directory mode {value!r} lets group or others write; fcopy refuses to copy "
            "into such directories, so the ones it creates must not be (use e.g. '0755')"
        )
    return None


def _known(lookup: Callable[[str], object], what: str) -> Callable[[str], str | None]:
    """A validator: empty, a number, or a name ``lookup`` knows."""

    def check(value: str) -> str | None:
        if value and not value.isdigit():
            try:
                lookup(value)
            except KeyError:
                return f"no such {what} {value!r}"
        return None

    return check


_check_owner = _known(pwd.getpwnam, "user")
_check_group = _known(grp.getgrnam, "group")


@config_section("fcopy", help="File copy from the host (Copy-VMFile)")
@dataclass(frozen=True)
class FcopySettings:
    allowed_roots: list[str] = setting(
        list(DEFAULT_ROOTS),
        help=(
            "directories the host may copy into (and below); '/' allows the whole\n"
            "filesystem and must be listed explicitly"
        ),
        min=0,
        validate=_check_roots,
    )
    file_mode: int | str = setting(
        "0644",
        help="permission bits of received files (octal, quoted: '0644')",
        validate=_check_mode,
    )
    dir_mode: int | str = setting(
        "0755",
        help="permission bits of directories made for CREATE_PATH (no group/other write)",
        validate=_check_dir_mode,
    )
    owner: str = setting(
        "",
        help="user (name or uid) owning received files; empty: the daemon's",
        validate=_check_owner,
    )
    group: str = setting(
        "", help="group (name or gid) of received files; empty: the daemon's", validate=_check_group
    )
    max_file_size: int = setting(
        64 * GIB, help="largest file accepted, in bytes", min=0, max=(1 << 63) - 1
    )
    history: int = setting(
        20, help="finished transfers kept for hvguestctl fcopy recent", min=1, max=1000
    )
    checksum: bool = setting(
        True, help="compute the sha256 of every received file (logged and shown by hvguestctl)"
    )
    create_roots: bool = setting(
        True, help="create missing allowed roots (mode dir_mode) when the daemon starts"
    )

    @property
    def file_mode_bits(self) -> int:
        return parse_mode(self.file_mode)

    @property
    def dir_mode_bits(self) -> int:
        return parse_mode(self.dir_mode)

    @property
    def uid(self) -> int:
        if not self.owner:
            return -1
        return int(self.owner) if self.owner.isdigit() else pwd.getpwnam(self.owner).pw_uid

    @property
    def gid(self) -> int:
        if not self.group:
            return -1
        return int(self.group) if self.group.isdigit() else grp.getgrnam(self.group).gr_gid
