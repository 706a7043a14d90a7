"""Compare the codecs' sizes and offsets with a real kernel build's own layouts.

The IC, VMBus, heartbeat, shutdown, time-sync and ring structures are kernel-internal:
``test_wire_c_layout`` can only compile replicas of them. Here they come from the BTF
(the compiler's type information) of Debian's cloud kernel modules hv_utils.ko and
hv_vmbus.ko, extracted by ``scripts/kernel-btf`` (run by ``scripts/setup``). The one
structure the modules carry no type information for is ``vmbuspipe_hdr`` (8 bytes: the
kernel only takes its sizeof); its size is checked here as the difference between the
full IC header and ``icmsg_hdr``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from hvguest.wire import fcopy, icmsg, kvp, vmbus, vss

LAYOUTS = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", ".cache", "kernel-btf", "layouts.json"
)
PIPE_HDR_SIZE = 8


@pytest.fixture(scope="module")
def btf() -> dict[str, Any]:
    if not os.path.exists(LAYOUTS):
        reason = "no kernel layouts: run scripts/kernel-btf (needs apt-get and bpftool)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # scripts/setup makes them; CI must not skip silently
        pytest.skip(reason)
    with open(LAYOUTS) as f:
        structs: dict[str, Any] = json.load(f)["structs"]
    return structs


def member(btf: dict[str, Any], struct: str, name: str) -> int:
    offset: int = btf[struct]["members"][name]
    return offset


def test_ic_header(btf: dict[str, Any]) -> None:
    assert btf["ic_version"]["size"] == icmsg.IC_VERSION_SIZE
    assert PIPE_HDR_SIZE + btf["icmsg_hdr"]["size"] == icmsg.ICMSG_HDR_SIZE
    assert PIPE_HDR_SIZE + member(btf, "icmsg_hdr", "icmsgtype") == 12
    assert PIPE_HDR_SIZE + member(btf, "icmsg_hdr", "icmsgsize") == icmsg.ICMSG_SIZE_OFFSET
    assert PIPE_HDR_SIZE + member(btf, "icmsg_hdr", "status") == icmsg.ICMSG_STATUS_OFFSET
    assert PIPE_HDR_SIZE + member(btf, "icmsg_hdr", "ictransaction_id") == 24
    assert PIPE_HDR_SIZE + member(btf, "icmsg_hdr", "icflags") == icmsg.ICMSG_FLAGS_OFFSET


def test_negotiation(btf: dict[str, Any]) -> None:
    assert btf["icmsg_negotiate"]["size"] == icmsg.NEGOTIATE_FIXED_SIZE
    assert member(btf, "icmsg_negotiate", "icversion_data") == icmsg.NEGOTIATE_FIXED_SIZE


def test_packet_descriptor_and_ring_header(btf: dict[str, Any]) -> None:
    assert btf["vmpacket_descriptor"]["size"] == vmbus.PACKET_DESCRIPTOR_SIZE
    assert member(btf, "vmpacket_descriptor", "trans_id") == 8
    ring = btf["hv_ring_buffer"]
    assert member(btf, "hv_ring_buffer", "buffer") == vmbus.RING_HEADER_SIZE
    assert ring["members"]["write_index"] == vmbus.WRITE_INDEX_OFFSET
    assert ring["members"]["read_index"] == vmbus.READ_INDEX_OFFSET
    assert ring["members"]["interrupt_mask"] == vmbus.INTERRUPT_MASK_OFFSET
    assert ring["members"]["pending_send_sz"] == vmbus.PENDING_SEND_SZ_OFFSET
    assert ring["members"]["feature_bits"] == vmbus.FEATURE_BITS_OFFSET


def test_heartbeat_shutdown_timesync(btf: dict[str, Any]) -> None:
    assert btf["heartbeat_msg_data"]["size"] == vmbus.HEARTBEAT_MSG_SIZE
    assert btf["shutdown_msg_data"]["size"] == vmbus.SHUTDOWN_MSG_SIZE
    assert member(btf, "shutdown_msg_data", "display_message") == (
        vmbus.SHUTDOWN_MSG_SIZE - vmbus.SHUTDOWN_MESSAGE_SIZE
    )
    assert btf["ictimesync_data"]["size"] == vmbus.TIMESYNC_MSG_SIZE
    assert member(btf, "ictimesync_data", "flags") == 24
    assert btf["ictimesync_ref_data"]["size"] == vmbus.TIMESYNC_REF_MSG_SIZE
    assert member(btf, "ictimesync_ref_data", "stratum") == 18
    assert len(vmbus.HeartbeatMsg(0).encode()) == btf["heartbeat_msg_data"]["size"]
    assert len(vmbus.ShutdownMsg(0, 0, 0).encode()) == btf["shutdown_msg_data"]["size"]
    assert len(vmbus.TimesyncMsg(0, 0, 0, 0).encode()) == btf["ictimesync_data"]["size"]
    assert len(vmbus.TimesyncRefMsg(0, 0, 0).encode()) == btf["ictimesync_ref_data"]["size"]


def test_user_space_messages_as_the_kernel_was_built(btf: dict[str, Any]) -> None:
    assert btf["hv_kvp_msg"]["size"] == kvp.KVP_MSG_SIZE
    assert btf["hv_kvp_ip_msg"]["size"] == kvp.KVP_IP_MSG_SIZE
    assert btf["hv_vss_msg"]["size"] == vss.VSS_MSG_SIZE
    assert btf["hv_fcopy_hdr"]["size"] == fcopy.FCOPY_HDR_SIZE
    assert btf["hv_start_fcopy"]["size"] == fcopy.FCOPY_START_SIZE
    assert member(btf, "hv_start_fcopy", "file_name") == fcopy.FILE_NAME_OFFSET
    assert member(btf, "hv_start_fcopy", "path_name") == fcopy.PATH_NAME_OFFSET
    assert member(btf, "hv_start_fcopy", "copy_flags") == fcopy.COPY_FLAGS_OFFSET
    assert member(btf, "hv_start_fcopy", "file_size") == fcopy.FILE_SIZE_OFFSET
