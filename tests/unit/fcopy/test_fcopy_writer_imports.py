"""fcopyd maps OpenSSL's libcrypto (hashlib) only for a checksum the kernel cannot
compute (hvguest.fcopy.digest)."""

from __future__ import annotations

import subprocess
import sys

_CODE = """
import os, sys, tempfile
from hvguest.fcopy.policy import PathPolicy
from hvguest.fcopy.writer import FileWriter
root = tempfile.mkdtemp()
w = FileWriter(PathPolicy(roots=(root,)), checksum={checksum})
w.open(root, "f.bin", overwrite=False, create_path=False)
w.write(0, b"data")
done = w.commit()
print("hashlib" in sys.modules, w.digests.engine, done.sha256)
"""


SHA256_OF_DATA = "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"


def test_no_hashlib_without_checksums() -> None:
    out = subprocess.run([sys.executable, "-c", _CODE.format(checksum=False)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "unknown", "None"]


def test_hashlib_only_for_the_openssl_engine() -> None:
    out = subprocess.run([sys.executable, "-c", _CODE.format(checksum=True)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    loaded, engine, digest = out.stdout.split()
    assert digest == SHA256_OF_DATA
    assert engine in ("kernel", "openssl")
    assert loaded == str(engine == "openssl")
