"""What goes into and out of the fcopy role (``hvguest.roles.fcopy``): the messages
beside the decoded requests, the outcomes the daemon reports, the file actions, and
the record of one transfer. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from hvguest.errors import WireError
from hvguest.roles.step import Log, Step
from hvguest.wire.fcopy import FcopyRequest
from hvguest.wire.fcopy_names import escape
from hvguest.wire.status import HvStatus

# -- messages besides the decoded requests, and outcomes -------------------------------


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message that does not decode."""

    error: WireError


@dataclass(frozen=True, slots=True)
class Done:
    """The actions of the last Step ran: HV_S_OK, or the first failure's status."""

    status: int = HvStatus.HV_S_OK
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FragmentFailed:
    """The data of a WRITE ``accept_write`` took could not be written."""

    offset: int
    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class ChannelLost:
    """The channel is gone (daemon stop, device re-opened)."""

    reason: str


Message = FcopyRequest | Malformed
Outcome = Done | FragmentFailed | ChannelLost


# -- actions for the writer ----------------------------------------------------


@dataclass(frozen=True)
class OpenTarget:
    """Check the target against the policy and open a temporary file for it."""

    path_name: str
    file_name: str
    overwrite: bool
    create_path: bool
    file_size: int


@dataclass(frozen=True)
class WriteData:
    offset: int
    data: bytes


@dataclass(frozen=True)
class CommitTarget:
    """fsync and move the temporary file to its final name."""


@dataclass(frozen=True)
class DiscardTarget:
    """Drop the temporary file; nothing appears at the final name."""

    reason: str


Action = OpenTarget | WriteData | CommitTarget | DiscardTarget | Log
FcopyStep = Step[Action]


@dataclass
class Transfer:
    """The copy in progress (or the last one, once finished)."""

    path_name: str
    file_name: str
    file_size: int
    flags: int
    started: float
    bytes_done: int = 0  # the highest end written so far
    gaps: int = 0  # WRITEs that started beyond bytes_done
    overlaps: int = 0  # WRITEs that started before it (resends)
    result: str = "in progress"
    finished: float | None = None
    detail: str = ""

    @property
    def target(self) -> str:
        """The target for logs and records, control characters escaped."""
        return escape(self.path_name.rstrip("/") + "/" + self.file_name)

    def duration(self, now: float) -> float:
        return (self.finished if self.finished is not None else now) - self.started


