"""SHA-256 engines for received files: the kernel's (AF_ALG) first, OpenSSL's else.

The kernel path needs a kernel with algif_hash; where it has none (this test
skips, saying so) the QEMU boot test checks it on the Debian cloud kernel.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import socket

import pytest

from hvguest.fcopy.digest import KernelSha256, Sha256Source


def kernel_sha256_missing() -> str | None:
    try:
        with socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET) as s:
            s.bind(("hash", "sha256"))
    except (OSError, AttributeError) as exc:
        return f"this kernel has no AF_ALG sha256 ({exc})"
    return None


def test_openssl_when_the_kernel_path_is_off() -> None:
    source = Sha256Source(kernel=False)
    h = source.new()
    h.update(b"abc")
    assert h.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    assert source.engine == "openssl"


def test_falls_back_once_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    made: list[int] = []

    def no_af_alg(*args: object) -> socket.socket:
        made.append(1)
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr("hvguest.fcopy.digest.socket.socket", no_af_alg)
    caplog.set_level(logging.INFO, logger="hvguest.fcopy.digest")
    source = Sha256Source()
    for data in (b"", b"x" * 100_000):
        h = source.new()
        h.update(data)
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert source.engine == "openssl"
    assert made == [1]  # not tried again for every file
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["fcopy checksums: SHA-256 computed by OpenSSL (the kernel's is not"
                     " available: Address family not supported by protocol)"]


@pytest.mark.skipif(kernel_sha256_missing() is not None, reason=str(kernel_sha256_missing()))
@pytest.mark.parametrize("sizes", [[], [1], [6144] * 3, [1 << 20, 1, 65536 + 3]])
def test_kernel_digest_equals_openssl_and_continues_after_a_digest(sizes: list[int]) -> None:
    source = Sha256Source()
    h = source.new()
    assert isinstance(h, KernelSha256) and source.engine == "kernel"
    expected = hashlib.sha256()
    for i, size in enumerate(sizes):
        chunk = bytes([i % 251]) * size
        h.update(memoryview(chunk))
        expected.update(chunk)
        assert h.hexdigest() == expected.hexdigest()  # so far, and the stream goes on
    assert h.hexdigest() == expected.hexdigest()
    Sha256Source.release(h)
    source.close()
