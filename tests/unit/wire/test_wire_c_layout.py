"""Compare the codecs' sizes and offsets with what gcc computes from the UAPI header.

hv_kvp_msg, hv_vss_msg and the fcopy structs come from /usr/include/linux/hyperv.h;
the kernel-internal IC and VMBus structs are declared here as replicas (protocol.md
§1.4, §5.4), and test_wire_kernel_btf checks the same codecs against a real kernel
build's own layouts of those structs. Skipped when gcc or the header is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hvguest.wire import fcopy, icmsg, kvp, pool, vmbus, vss

HEADER = "/usr/include/linux/hyperv.h"

# name -> C expression (printed with %zu)
MEASURES: dict[str, str] = {
    "kvp_msg": "sizeof(struct hv_kvp_msg)",
    "kvp_ip_msg": "sizeof(struct hv_kvp_ip_msg)",
    "kvp_op": "offsetof(struct hv_kvp_msg, kvp_hdr.operation)",
    "kvp_pool": "offsetof(struct hv_kvp_msg, kvp_hdr.pool)",
    "kvp_error": "offsetof(struct hv_kvp_msg, error)",
    "kvp_body": "offsetof(struct hv_kvp_msg, body)",
    "get_value_type": "offsetof(struct hv_kvp_msg, body.kvp_get.data.value_type)",
    "get_key_size": "offsetof(struct hv_kvp_msg, body.kvp_get.data.key_size)",
    "get_value_size": "offsetof(struct hv_kvp_msg, body.kvp_get.data.value_size)",
    "get_key": "offsetof(struct hv_kvp_msg, body.kvp_get.data.key)",
    "get_value": "offsetof(struct hv_kvp_msg, body.kvp_get.data.value)",
    "set_key": "offsetof(struct hv_kvp_msg, body.kvp_set.data.key)",
    "set_value": "offsetof(struct hv_kvp_msg, body.kvp_set.data.value)",
    "set_value_u32": "offsetof(struct hv_kvp_msg, body.kvp_set.data.value_u32)",
    "enum_index": "offsetof(struct hv_kvp_msg, body.kvp_enum_data.index)",
    "enum_value_type": "offsetof(struct hv_kvp_msg, body.kvp_enum_data.data.value_type)",
    "enum_key_size": "offsetof(struct hv_kvp_msg, body.kvp_enum_data.data.key_size)",
    "enum_value_size": "offsetof(struct hv_kvp_msg, body.kvp_enum_data.data.value_size)",
    "enum_key": "offsetof(struct hv_kvp_msg, body.kvp_enum_data.data.key)",
    "enum_value": "offsetof(struct hv_kvp_msg, body.kvp_enum_data.data.value)",
    "delete_key_size": "offsetof(struct hv_kvp_msg, body.kvp_delete.key_size)",
    "delete_key": "offsetof(struct hv_kvp_msg, body.kvp_delete.key)",
    "register_version": "offsetof(struct hv_kvp_msg, body.kvp_register.version)",
    "ip_adapter_id": "offsetof(struct hv_kvp_msg, body.kvp_ip_val.adapter_id)",
    "ip_addr_family": "offsetof(struct hv_kvp_msg, body.kvp_ip_val.addr_family)",
    "ip_dhcp_enabled": "offsetof(struct hv_kvp_msg, body.kvp_ip_val.dhcp_enabled)",
    "ip_ip_addr": "offsetof(struct hv_kvp_msg, body.kvp_ip_val.ip_addr)",
    "ip_sub_net": "offsetof(struct hv_kvp_msg, body.kvp_ip_val.sub_net)",
    "ip_gate_way": "offsetof(struct hv_kvp_msg, body.kvp_ip_val.gate_way)",
    "ip_dns_addr": "offsetof(struct hv_kvp_msg, body.kvp_ip_val.dns_addr)",
    "ipmsg_adapter_id": "offsetof(struct hv_kvp_ip_msg, kvp_ip_val.adapter_id)",
    "ipmsg_addr_family": "offsetof(struct hv_kvp_ip_msg, kvp_ip_val.addr_family)",
    "ipmsg_dhcp_enabled": "offsetof(struct hv_kvp_ip_msg, kvp_ip_val.dhcp_enabled)",
    "ipmsg_ip_addr": "offsetof(struct hv_kvp_ip_msg, kvp_ip_val.ip_addr)",
    "ipmsg_sub_net": "offsetof(struct hv_kvp_ip_msg, kvp_ip_val.sub_net)",
    "ipmsg_gate_way": "offsetof(struct hv_kvp_ip_msg, kvp_ip_val.gate_way)",
    "ipmsg_dns_addr": "offsetof(struct hv_kvp_ip_msg, kvp_ip_val.dns_addr)",
    "sz_adapter_id": "sizeof(((struct hv_kvp_ipaddr_value *)0)->adapter_id)",
    "sz_ip_addr": "sizeof(((struct hv_kvp_ipaddr_value *)0)->ip_addr)",
    "sz_sub_net": "sizeof(((struct hv_kvp_ipaddr_value *)0)->sub_net)",
    "sz_gate_way": "sizeof(((struct hv_kvp_ipaddr_value *)0)->gate_way)",
    "sz_dns_addr": "sizeof(((struct hv_kvp_ipaddr_value *)0)->dns_addr)",
    "vss_msg": "sizeof(struct hv_vss_msg)",
    "vss_op": "offsetof(struct hv_vss_msg, vss_hdr.operation)",
    "vss_error": "offsetof(struct hv_vss_msg, error)",
    "vss_flags": "offsetof(struct hv_vss_msg, vss_cf.flags)",
    "vss_dm_flags": "offsetof(struct hv_vss_msg, dm_info.flags)",
    "fcopy_hdr": "sizeof(struct hv_fcopy_hdr)",
    "fcopy_start": "sizeof(struct hv_start_fcopy)",
    "fcopy_do": "sizeof(struct hv_do_fcopy)",
    "start_file_name": "offsetof(struct hv_start_fcopy, file_name)",
    "start_path_name": "offsetof(struct hv_start_fcopy, path_name)",
    "start_copy_flags": "offsetof(struct hv_start_fcopy, copy_flags)",
    "start_file_size": "offsetof(struct hv_start_fcopy, file_size)",
    "do_offset": "offsetof(struct hv_do_fcopy, offset)",
    "do_size": "offsetof(struct hv_do_fcopy, size)",
    "do_data": "offsetof(struct hv_do_fcopy, data)",
    "sz_file_name": "sizeof(((struct hv_start_fcopy *)0)->file_name)",
    "sz_data": "sizeof(((struct hv_do_fcopy *)0)->data)",
    "pipe_hdr": "sizeof(struct vmbuspipe_hdr)",
    "ic_hdr": "sizeof(struct icmsg_hdr)",
    "ic_full_status": "offsetof(struct ic_full_hdr, ic.status)",
    "ic_full_icmsgsize": "offsetof(struct ic_full_hdr, ic.icmsgsize)",
    "ic_full_icmsgtype": "offsetof(struct ic_full_hdr, ic.icmsgtype)",
    "ic_full_trans": "offsetof(struct ic_full_hdr, ic.ictransaction_id)",
    "ic_full_flags": "offsetof(struct ic_full_hdr, ic.icflags)",
    "ic_full": "sizeof(struct ic_full_hdr)",
    "negotiate": "sizeof(struct icmsg_negotiate)",
    "negotiate_data": "offsetof(struct icmsg_negotiate, icversion_data)",
    "ic_version": "sizeof(struct ic_version)",
    "pkt_desc": "sizeof(struct vmpacket_descriptor)",
    "pkt_trans_id": "offsetof(struct vmpacket_descriptor, trans_id)",
    "heartbeat": "sizeof(struct heartbeat_msg_data)",
    "shutdown": "sizeof(struct shutdown_msg_data)",
    "shutdown_display": "offsetof(struct shutdown_msg_data, display_message)",
    "timesync": "sizeof(struct ictimesync_data)",
    "timesync_flags": "offsetof(struct ictimesync_data, flags)",
    "timesync_ref": "sizeof(struct ictimesync_ref_data)",
    "timesync_ref_stratum": "offsetof(struct ictimesync_ref_data, stratum)",
    "ring_feature_bits": "offsetof(struct ring_header, feature_bits)",
    "ring_header": "sizeof(struct ring_header)",
}

# Kernel-internal structures, declared from protocol.md (not in the UAPI header).
REPLICAS = """
struct vmbuspipe_hdr { __u32 flags; __u32 msgsize; } __attribute__((packed));
struct ic_version { __u16 major; __u16 minor; } __attribute__((packed));
struct icmsg_hdr {
    struct ic_version icverframe; __u16 icmsgtype; struct ic_version icvermsg;
    __u16 icmsgsize; __u32 status; __u8 ictransaction_id; __u8 icflags; __u8 reserved[2];
} __attribute__((packed));
struct ic_full_hdr { struct vmbuspipe_hdr pipe; struct icmsg_hdr ic; } __attribute__((packed));
struct icmsg_negotiate {
    __u16 icframe_vercnt; __u16 icmsg_vercnt; __u32 reserved; struct ic_version icversion_data[];
} __attribute__((packed));
struct vmpacket_descriptor {
    __u16 type; __u16 offset8; __u16 len8; __u16 flags; __u64 trans_id;
} __attribute__((packed));
struct heartbeat_msg_data { __u64 seq_num; __u32 reserved[8]; } __attribute__((packed));
struct shutdown_msg_data {
    __u32 reason_code; __u32 timeout_seconds; __u32 flags; __u8 display_message[2048];
} __attribute__((packed));
struct ictimesync_data {
    __u64 parenttime; __u64 childtime; __u64 roundtriptime; __u8 flags;
} __attribute__((packed));
struct ictimesync_ref_data {
    __u64 parenttime; __u64 vmreferencetime; __u8 flags; char leapflags; char stratum;
    __u8 reserved[3];
} __attribute__((packed));
struct ring_header {
    __u32 write_index; __u32 read_index; __u32 interrupt_mask; __u32 pending_send_sz;
    __u32 reserved1[12]; __u32 feature_bits; __u8 reserved2[4028];
} __attribute__((packed));
"""


def _program() -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <linux/types.h>",
        "#include <linux/hyperv.h>",
        REPLICAS,
        "int main(void) {",
    ]
    for name, expr in MEASURES.items():
        lines.append(f'    printf("{name} %zu\\n", (size_t)({expr}));')
    lines += ["    return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    if not os.path.exists(HEADER):
        pytest.skip(f"{HEADER} is missing (install linux-libc-dev)")
    work: Path = tmp_path_factory.mktemp("layout")
    source, binary = work / "layout.c", work / "layout"
    source.write_text(_program())
    subprocess.run([gcc, "-o", str(binary), str(source)], check=True, capture_output=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def test_kvp_layout(measured: dict[str, int]) -> None:
    assert measured["kvp_msg"] == kvp.KVP_MSG_SIZE
    assert measured["kvp_ip_msg"] == kvp.KVP_IP_MSG_SIZE
    assert measured["kvp_op"] == kvp.OP_OFFSET
    assert measured["kvp_pool"] == kvp.POOL_OFFSET
    assert measured["kvp_error"] == kvp.STATUS_OFFSET
    assert measured["get_value_type"] == kvp.GET_VALUE_TYPE_OFFSET
    assert measured["get_key_size"] == kvp.GET_KEY_SIZE_OFFSET
    assert measured["get_value_size"] == kvp.GET_VALUE_SIZE_OFFSET
    assert measured["get_key"] == measured["set_key"] == kvp.GET_KEY_OFFSET
    assert measured["get_value"] == measured["set_value"] == kvp.GET_VALUE_OFFSET
    assert measured["set_value_u32"] == kvp.GET_VALUE_OFFSET
    assert measured["enum_index"] == kvp.ENUM_INDEX_OFFSET
    assert measured["enum_value_type"] == kvp.ENUM_VALUE_TYPE_OFFSET
    assert measured["enum_key_size"] == kvp.ENUM_KEY_SIZE_OFFSET
    assert measured["enum_value_size"] == kvp.ENUM_VALUE_SIZE_OFFSET
    assert measured["enum_key"] == kvp.ENUM_KEY_OFFSET
    assert measured["enum_value"] == kvp.ENUM_VALUE_OFFSET == kvp.GET_REPLY_VALUE_OFFSET
    assert measured["delete_key_size"] == kvp.DELETE_KEY_SIZE_OFFSET
    assert measured["delete_key"] == kvp.DELETE_KEY_OFFSET
    assert measured["register_version"] == kvp.REGISTER_VERSION_OFFSET
    assert measured["ip_addr_family"] == kvp.IP_ADDR_FAMILY_OFFSET
    assert measured["ip_dhcp_enabled"] == kvp.IP_DHCP_ENABLED_OFFSET
    assert measured["ipmsg_addr_family"] == kvp.IP_ADDR_FAMILY_OFFSET - 2
    assert measured["ipmsg_dhcp_enabled"] == kvp.IP_DHCP_ENABLED_OFFSET - 2
    for spec in kvp.IP_STRING_FIELDS:
        assert measured[f"ip_{spec.name}"] == spec.daemon_offset, spec.name
        assert measured[f"ipmsg_{spec.name}"] == spec.host_offset, spec.name
        assert measured[f"sz_{spec.name}"] == spec.size, spec.name


def test_kvp_max_sizes_match_record() -> None:
    assert kvp.HV_KVP_EXCHANGE_MAX_KEY_SIZE == pool.POOL_KEY_SIZE
    assert kvp.HV_KVP_EXCHANGE_MAX_VALUE_SIZE == pool.POOL_VALUE_SIZE


def test_vss_layout(measured: dict[str, int]) -> None:
    assert measured["vss_msg"] == vss.VSS_MSG_SIZE
    assert measured["vss_op"] == measured["vss_error"] == 0
    assert measured["vss_flags"] == measured["vss_dm_flags"] == vss.VSS_FLAGS_OFFSET


def test_fcopy_layout(measured: dict[str, int]) -> None:
    assert measured["fcopy_hdr"] == fcopy.FCOPY_HDR_SIZE
    assert measured["fcopy_start"] == fcopy.FCOPY_START_SIZE
    assert measured["fcopy_do"] == fcopy.FCOPY_DO_SIZE
    assert measured["start_file_name"] == fcopy.FILE_NAME_OFFSET
    assert measured["start_path_name"] == fcopy.PATH_NAME_OFFSET
    assert measured["start_copy_flags"] == fcopy.COPY_FLAGS_OFFSET
    assert measured["start_file_size"] == fcopy.FILE_SIZE_OFFSET
    assert measured["do_offset"] == fcopy.WRITE_OFFSET_OFFSET
    assert measured["do_size"] == fcopy.WRITE_SIZE_OFFSET
    assert measured["do_data"] == fcopy.WRITE_DATA_OFFSET
    assert measured["sz_file_name"] == fcopy.NAME_FIELD_SIZE
    assert measured["sz_data"] == fcopy.DATA_FRAGMENT


def test_ic_layout(measured: dict[str, int]) -> None:
    assert measured["pipe_hdr"] + measured["ic_hdr"] == measured["ic_full"] == icmsg.ICMSG_HDR_SIZE
    assert measured["ic_full_status"] == icmsg.ICMSG_STATUS_OFFSET
    assert measured["ic_full_flags"] == icmsg.ICMSG_FLAGS_OFFSET
    assert measured["ic_full_icmsgsize"] == icmsg.ICMSG_SIZE_OFFSET
    assert measured["ic_full_icmsgtype"] == 12
    assert measured["ic_full_trans"] == 24
    assert measured["negotiate"] == measured["negotiate_data"] == icmsg.NEGOTIATE_FIXED_SIZE
    assert measured["ic_version"] == icmsg.IC_VERSION_SIZE


def test_vmbus_layout(measured: dict[str, int]) -> None:
    assert measured["pkt_desc"] == vmbus.PACKET_DESCRIPTOR_SIZE
    assert measured["pkt_trans_id"] == 8
    assert measured["heartbeat"] == vmbus.HEARTBEAT_MSG_SIZE
    assert measured["shutdown"] == vmbus.SHUTDOWN_MSG_SIZE
    assert measured["shutdown_display"] == 12
    assert measured["timesync"] == vmbus.TIMESYNC_MSG_SIZE
    assert measured["timesync_flags"] == 24
    assert measured["timesync_ref"] == vmbus.TIMESYNC_REF_MSG_SIZE
    assert measured["timesync_ref_stratum"] == 18
    assert measured["ring_feature_bits"] == vmbus.FEATURE_BITS_OFFSET
    assert measured["ring_header"] == vmbus.RING_HEADER_SIZE


def test_encoded_sizes_match_c(measured: dict[str, int]) -> None:
    assert len(kvp.KvpGet(0, "k").encode()) == measured["kvp_msg"]
    assert len(kvp.HostKvpIpMessage(4, 0).encode()) == measured["kvp_ip_msg"]
    assert len(vss.VssMessage(5).encode()) == measured["vss_msg"]
    assert len(fcopy.FcopyStart("a", "/").encode()) == measured["fcopy_start"]
    assert len(fcopy.FcopyWrite(0, b"").encode()) == measured["fcopy_do"]
    assert len(fcopy.FcopyCancel().encode()) == measured["fcopy_hdr"]
    assert len(vmbus.HeartbeatMsg(0).encode()) == measured["heartbeat"]
    assert len(vmbus.ShutdownMsg(0, 0, 0).encode()) == measured["shutdown"]
    assert len(vmbus.TimesyncMsg(0, 0, 0, 0).encode()) == measured["timesync"]
    assert len(vmbus.TimesyncRefMsg(0, 0, 0).encode()) == measured["timesync_ref"]
    assert len(vmbus.RingHeader(0, 0, 0, 0, 0).encode()) == measured["ring_header"]
