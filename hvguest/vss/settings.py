"""Config section "vss" (hvguest-vssd, ``hvguestctl vss``)."""

from __future__ import annotations

from dataclasses import dataclass

from hvguest.configschema import config_section, setting
from hvguest.validators import nonempty_globs

# hvguest-vss.service has TimeoutStopSec=150. A stop that arrives while the freeze
# hooks run waits for them, then thaws and runs the thaw hooks: two phases, plus
# FITHAW and the exit, must fit (tests/unit/runtime/test_unit_files.py holds the
# unit to it). The daemon keeps the watchdog fed while hooks run, so WatchdogSec
# does not bound them. A minute per phase leaves a database hook time for a
# checkpoint; the kernel waits up to 15 minutes for the FREEZE reply.
UNIT_TIMEOUT_STOP = 150.0
HOOK_PHASE_MAX = 60.0



# The agents whose freeze scripts hvguest-vssd runs (hvguest.vss.foreign).
CONVENTIONS = ("vmware", "qemu", "azure")


def check_setting(value: object) -> str | None:
    """For ``setting(validate=...)`` of vss.foreign_hooks."""
    if isinstance(value, str):
        if value in ("auto", "none"):
            return None
        return f"expected 'auto', 'none' or a list of {', '.join(CONVENTIONS)}, got {value!r}"
    if isinstance(value, list):
        for item in value:
            if item not in CONVENTIONS:
                return f"unknown convention {item!r}: expected {', '.join(CONVENTIONS)}"
        if len(set(value)) != len(value):
            return "a convention is listed twice"
        return None
    return "expected 'auto', 'none' or a list of conventions"

@config_section("vss", help="Volume snapshots: filesystem freeze and thaw for host backups")
@dataclass(frozen=True)
class VssSettings:
    exclude: list[str] = setting(
        [],
        help=(
            "globs on mount point or filesystem type never frozen,\n"
            "e.g. ['/srv/scratch', '/mnt/*', 'btrfs']"
        ),
        validate=nonempty_globs,
    )
    include: list[str] = setting(
        [],
        help=(
            "if not empty, only mounts matching one of these globs (mount point or\n"
            "filesystem type) are frozen: an allow-list"
        ),
        validate=nonempty_globs,
    )
    foreign_freeze: str = setting(
        "fail",
        help=(
            "a filesystem already frozen by another tool (fsfreeze, another agent):\n"
            "'fail' the backup, or 'skip' it; hvguest never thaws it either way"
        ),
        choices=("fail", "skip"),
    )
    auto_thaw: float = setting(
        60.0,
        help="seconds after which filesystems are thawed even if the host never sends THAW",
        min=1,
        max=900,
    )
    hook_timeout: float = setting(
        5.0,
        help=(
            "seconds each hook may run; on timeout its process group is killed\n"
            "(within hook_phase_timeout)"
        ),
        min=0.1,
        max=HOOK_PHASE_MAX,
    )
    hook_phase_timeout: float = setting(
        HOOK_PHASE_MAX,
        help=(
            "seconds all hooks of one phase together may run (the freeze hooks; then\n"
            "the thaw or freezefail hooks), kills included. At most 60: a stop during\n"
            "a backup runs both phases within the unit's TimeoutStopSec=150"
        ),
        min=0.1,
        max=HOOK_PHASE_MAX,
    )
    hooks: bool = setting(
        True, help="run the hooks in /etc/hvguest/vss.d and /usr/lib/hvguest/vss.d"
    )
    foreign_hooks: str | list[str] = setting(
        "auto",
        help=(
            "the freeze scripts of other agents, run as those agents run them, after\n"
            "hvguest's own freeze hooks and before its thaw hooks: open-vm-tools\n"
            "(backupScripts.d, pre-freeze/post-thaw-script), qemu-ga (fsfreeze-hook)\n"
            "and Azure Backup (VMSnapshotPluginConfig.json). 'auto': each one found\n"
            "whose agent is not running (it would run them itself); 'none'; or a\n"
            "list of vmware, qemu, azure (run even if the agent runs)"
        ),
        validate=check_setting,
    )
    failure_hook_argument: str = setting(
        "freezefail",
        help=(
            "argument given, in reverse order, to hooks that ran 'freeze' when the\n"
            "freeze fails: 'freezefail' (open-vm-tools) or 'thaw' (qemu-ga fsfreeze-hook)"
        ),
        choices=("freezefail", "thaw"),
    )
    guard: bool = setting(
        True,
        help=(
            "run a separate guard process that thaws if the daemon dies while\n"
            "filesystems are frozen"
        ),
    )
    hot_backup_flag_in_status: bool = setting(
        False,
        help=(
            "answer HOT_BACKUP with status 0x00000002 (a success code) so that the kernel\n"
            "forwards VSS_HBU_NO_AUTO_RECOVERY to the host (it does so only when byte 0\n"
            "of the reply is 2); off: status 0, the host sees the flags it sent"
        ),
    )
