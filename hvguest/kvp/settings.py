"""Config section "kvp" (hvguest-kvpd, ``hvguestctl kvp``)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from hvguest.configschema import config_section, setting
from hvguest.validators import nonempty_globs

DEFAULT_EXCLUDE_NICS = ["lo", "veth*", "docker*", "virbr*", "cali*", "flannel*", "cni*"]
NETWORK_STACKS = ("auto", "networkmanager", "networkd", "netplan", "ifupdown", "none")


@config_section("kvp", help="Key-value pair exchange with the host (Data Exchange)")
@dataclass(frozen=True)
class KvpSettings:
    exclude_nics: list[str] = setting(
        DEFAULT_EXCLUDE_NICS,
        help=(
            "globs on interface names whose addresses are never reported to the host\n"
            "(NetworkAddressIPv4/IPv6, GET_IP_INFO)"
        ),
        validate=nonempty_globs,
    )
    primary_nics: list[str] = setting(
        [],
        help=(
            "globs on interface names listed first in NetworkAddressIPv4/IPv6, in this\n"
            "order; empty: kernel order"
        ),
        validate=nonempty_globs,
    )
    unsafe_sizes: bool = setting(
        False,
        help=(
            "let hvguestctl kvp set store keys up to 511 and values up to 2047 bytes;\n"
            "the host cuts what it reads at 254/1022"
        ),
    )
    publish_version: bool = setting(
        True,
        help="keep the key hvguest.version (hvguest's version) in pool 1 for the host",
    )
    republish_interval: float = setting(
        5.0,
        help="seconds between checks that hvguest's own keys are still in pool 1",
        min=1,
        max=86400,
    )
    fqdn_timeout: float = setting(
        2.0, help="seconds the fully qualified host name lookup may take", min=0.1, max=30
    )
    fqdn_refresh: float = setting(
        300.0, help="seconds between refreshes of the host name and FQDN", min=10, max=86400
    )
    network_stack: str = setting(
        "auto",
        help=(
            "how host-pushed IP settings (SET_IP_INFO) are applied: auto-detect, or one of\n"
            "networkmanager, networkd, netplan, ifupdown; 'none' refuses them"
        ),
        choices=NETWORK_STACKS,
    )
    max_records: int = setting(
        10_000,
        help=(
            "records a pool may hold; a new key past it is refused (the host gets\n"
            "HV_E_FAIL) so that nobody can fill the disk through KVP. cloud-init writes\n"
            "a few hundred per boot to pool 1, azure-init at most 1024"
        ),
        min=100,
        max=1_000_000,
    )
    lock_timeout: float = setting(
        1.0,
        help=(
            "seconds hvguest-kvpd waits for another writer's lock on a pool file before\n"
            "failing the host's request (the holder's pid and user are logged); other\n"
            "writers hold it for milliseconds"
        ),
        min=0.05,
        max=10,
    )
    apply_timeout: float = setting(
        20.0,
        help="seconds SET_IP_INFO may take in total (the kernel gives up after 30)",
        min=1,
        max=28,
    )


def nic_excluded(settings: KvpSettings, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in settings.exclude_nics)


def nic_rank(settings: KvpSettings, name: str) -> int:
    """Sort key: position of the first primary_nics glob matching, else after all."""
    for i, pattern in enumerate(settings.primary_nics):
        if fnmatch.fnmatchcase(name, pattern):
            return i
    return len(settings.primary_nics)
