"""Which integration services the host offers, and what changed between two scans.

The host adds or withdraws a service when an administrator toggles it in the VM's
settings (Enable-/Disable-VMIntegrationService); the guest sees the VMBus channel
appear or be rescinded. Pure functions: the daemon logs what they return.
"""

from __future__ import annotations

from collections.abc import Set

from hvguest.vmbus.inventory import SERVICE_CLASS, Inventory

# Names as the host's management tools show them, with the guest-side name added where
# they differ, so a log line is found from either side.
SERVICE_TITLES = {
    "heartbeat": "Heartbeat",
    "shutdown": "Shutdown",
    "timesync": "Time Synchronization",
    "kvp": "Key-Value Pair Exchange (KVP)",
    "vss": "Backup (VSS)",
    "fcopy": "Guest Service Interface (fcopy)",
}


def offered_services(inv: Inventory) -> frozenset[str]:
    """Service keys ("kvp", "vss", ...) with a VMBus device, bound to a driver or not."""
    return frozenset(name for name in SERVICE_CLASS if inv.service_device(name) is not None)


def offer_changes(before: Set[str], after: Set[str]) -> list[str]:
    """One line per service the host started or stopped offering, in a stable order."""
    lines = []
    for name in SERVICE_TITLES:
        if name in after and name not in before:
            lines.append(f"host now offers {SERVICE_TITLES[name]}")
        elif name in before and name not in after:
            lines.append(f"host withdrew {SERVICE_TITLES[name]}")
    return lines
