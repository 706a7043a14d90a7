"""The remedy shown with a failed transfer (``hvguestctl status``, last_error)."""

from __future__ import annotations

# Words of the path policy's refusals (hvguest.fcopy.policy and .names).
_POLICY_WORDS = (
    "allowed roots",
    "symbolic link",
    "'..'",
    "absolute path",
    "CREATE_PATH",
    "other users control",
    "another user's file",
    "control character",
)


def remedy(result: str, detail: str) -> str:
    """What the administrator can do about a failed transfer (for the state's
    last_error)."""
    if result == "HV_ERROR_DISK_FULL":
        return "free space in the target filesystem, then copy again"
    if result == "HV_ERROR_ALREADY_EXISTS":
        return "the file exists: copy with Copy-VMFile -Force to replace it"
    if any(word in detail for word in _POLICY_WORDS):
        return (
            "hvguestctl fcopy check PATH explains the refusal; allowed roots are set by "
            "fcopy.allowed_roots in /etc/hvguest/hvguest.yaml"
        )
    return "journalctl -u hvguest-fcopy.service"
