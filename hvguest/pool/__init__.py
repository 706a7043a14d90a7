"""KVP pool files: ``<pool_dir>/.kvp_pool_0`` .. ``.kvp_pool_4`` (protocol.md §2.4).

Same on-disk format as hv_kvp_daemon: a plain concatenation of 2560-byte records
(``key[512]`` + ``value[2048]``, NUL-terminated UTF-8), insertion order, first match
wins. Other writers share these files: the C daemon (``fcntl`` whole-file write lock),
cloud-init and azure-init (``flock``). We take **both** locks, ``flock`` first, each with
a bounded wait, so we exclude every one of them.

Writes never rewrite the whole file:

* an update is one ``pwrite`` of the whole record at its place;
* an append is one ``pwrite`` of one whole record at the end;
* a delete moves the later records up one by one (one whole-record ``pwrite`` each, in
  order) and then truncates, as hv_kvp_daemon's shift does, without touching the
  records before the deleted one.

Bounds. A pool holds at most ``max_records`` records (``kvp.max_records``, default
DEFAULT_MAX_RECORDS): a new key past it is refused with PoolFullError, which the host
sees as HV_E_FAIL, and nothing is written; updates in place and deletes always work.
Lock waits are bounded (``lock_timeout``); on giving up, the holder is looked up in
``/proc/locks`` and named (pid, user, command) in the error, kept in ``lock_holder``
for ``hvguestctl status``, and while that same process still holds the lock the next
request fails at once instead of waiting again.

File mode: 0644, whatever the umask, like hv_kvp_daemon's files. Readers need it:
``hvguestctl kvp list`` as any user, Microsoft's validation suite (which checks for
0644), and tools that read pool 0/3 for host parameters. The price is that every local
user can read every KVP item (the host must not push secrets through KVP) and can take
a lock on the file; the bounded, holder-naming waits above keep that from stalling the
host. Tightening to 0600 would break those readers for little gain.

A crash in the middle of a delete can leave the last moved record twice, never a record
mixed from two others. A trailing partial record (torn append) is ignored when reading
and cut off under the lock before the next write. The one window left: the kernel
copies a write page by page, so SIGKILL or power loss landing between the two pages of
an in-place update that straddles a page boundary could mix old and new bytes of that
one value; the shared format has no checksum that would let a reader notice.

Caching: each file is parsed once and re-read only when its (inode, size, mtime) changed.
Timestamps have a coarse granularity, so two writes in one clock tick could leave the
same mtime; a signature is therefore trusted only if the mtime was older than
``RACY_NS`` when we read it, or if we wrote the file ourselves and stamped it with an
mtime just below the kernel's (any later write by anyone gets a newer one).

Modules: ``limits`` (sizes, defaults, errors, ``check_item``), ``records`` (raw record
I/O), ``handle`` (descriptor and locks), ``file`` (``PoolFile``: cache, reads, writes),
``store`` (``PoolRegistry``, ``PoolStore``, ``OwnKeys``).
"""

from hvguest.pool.file import PoolFile
from hvguest.pool.limits import (
    DEFAULT_MAX_RECORDS,
    HOST_SAFE_KEY_BYTES,
    HOST_SAFE_VALUE_BYTES,
    LOCK_TIMEOUT,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    OWN_PREFIX,
    PoolBusyError,
    PoolFullError,
    PoolRecordError,
    check_item,
)
from hvguest.pool.store import OwnKeys, PoolRegistry, PoolStore

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "HOST_SAFE_KEY_BYTES",
    "HOST_SAFE_VALUE_BYTES",
    "LOCK_TIMEOUT",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "OWN_PREFIX",
    "OwnKeys",
    "PoolBusyError",
    "PoolFile",
    "PoolFullError",
    "PoolRecordError",
    "PoolRegistry",
    "PoolStore",
    "check_item",
]
