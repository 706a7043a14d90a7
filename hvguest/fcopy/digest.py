"""SHA-256 of received files: the kernel's (AF_ALG) when it offers one, else OpenSSL's.

Why the kernel first: ``hashlib`` maps OpenSSL's libcrypto into hvguest-fcopyd, 3.5 MB
of resident memory the daemon otherwise does without, while the kernel computes the
same digest with the same instructions (SHA-NI, AVX2) for one ``sendmsg`` per
fragment. Kernels without ``algif_hash`` (or units that forbid AF_ALG) get
``hashlib``. The choice is made once per process and said once in the journal.

The AF_ALG protocol (``crypto/algif_hash.c``): a socket bound to ("hash", "sha256")
``accept()``s one operation socket per digest; data sent with ``MSG_MORE`` is added
to it, and ``recv`` finishes it. ``accept()`` on an operation socket clones its state,
which gives the digest so far without ending the stream (as ``hashlib``'s
``hexdigest()`` does).
"""

from __future__ import annotations

import logging
import socket
from typing import Protocol

log = logging.getLogger(__name__)

DIGEST_SIZE = 32


class Sha256(Protocol):
    """What the file writer needs of a SHA-256 (``hashlib``'s object has it)."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class KernelSha256:
    """One digest computed by the kernel over an AF_ALG operation socket."""

    def __init__(self, op: socket.socket) -> None:
        self._op = op

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        if len(data):  # an empty MSG_MORE send would add nothing
            self._op.sendall(data, socket.MSG_MORE)

    def hexdigest(self) -> str:
        """The digest of what was sent so far; more may be sent afterwards."""
        clone, _ = self._op.accept()
        with clone:
            digest = clone.recv(DIGEST_SIZE)
        if len(digest) != DIGEST_SIZE:
            raise OSError(f"AF_ALG sha256 gave {len(digest)} bytes, not {DIGEST_SIZE}")
        return digest.hex()

    def close(self) -> None:
        self._op.close()


class Sha256Source:
    """Makes the digests of one process: the kernel's while it works, else OpenSSL's."""

    def __init__(self, *, kernel: bool = True) -> None:
        self._algorithm: socket.socket | None = None
        self._kernel = kernel
        self._said = False
        self.engine = "unknown"  # "kernel" or "openssl" once the first digest is made

    def new(self) -> Sha256:
        if self._kernel:
            try:
                return self._kernel_digest()
            except OSError as exc:
                # No AF_ALG (EAFNOSUPPORT), no algif_hash or sha256 (ENOENT), or a
                # sandbox that forbids the family: OpenSSL from now on.
                self._kernel = False
                self._close_algorithm()
                self._say("openssl", f"the kernel's is not available: {exc.strerror or exc}")
        import hashlib  # maps libcrypto: only when the kernel cannot do it

        self._say("openssl", "")
        return hashlib.sha256()

    def close(self) -> None:
        self._close_algorithm()

    @staticmethod
    def release(digest: Sha256 | None) -> None:
        """Done with ``digest`` (its operation socket, for the kernel's)."""
        if isinstance(digest, KernelSha256):
            digest.close()

    def _kernel_digest(self) -> KernelSha256:
        if self._algorithm is None:
            algorithm = socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                algorithm.bind(("hash", "sha256"))
            except BaseException:
                algorithm.close()
                raise
            self._algorithm = algorithm
        op, _ = self._algorithm.accept()
        self._say("kernel", "")
        return KernelSha256(op)

    def _close_algorithm(self) -> None:
        if self._algorithm is not None:
            self._algorithm.close()
            self._algorithm = None

    def _say(self, engine: str, why: str) -> None:
        self.engine = engine
        if self._said:
            return
        self._said = True
        if engine == "kernel":
            log.info("fcopy checksums: SHA-256 computed by the kernel (AF_ALG)")
        else:
            log.info("fcopy checksums: SHA-256 computed by OpenSSL%s", f" ({why})" if why else "")
