"""fcopyd maps OpenSSL's libcrypto (hashlib) only once a checksum is wanted."""

from __future__ import annotations

import subprocess
import sys

import pytest

_CODE = """
import os, sys, tempfile
from hvguest.fcopy.policy import PathPolicy
from hvguest.fcopy.writer import FileWriter
root = tempfile.mkdtemp()
w = FileWriter(PathPolicy(roots=(root,)), checksum={checksum})
w.open(root, "f.bin", overwrite=False, create_path=False)
w.write(0, b"data")
done = w.commit()
print("hashlib" in sys.modules, done.sha256)
"""


SHA256_OF_DATA = "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"


@pytest.mark.parametrize(("checksum", "expected"), [(False, ["False", "None"]),
                                                    (True, ["True", SHA256_OF_DATA])])
def test_hashlib_only_with_checksums(checksum: bool, expected: list[str]) -> None:
    out = subprocess.run([sys.executable, "-c", _CODE.format(checksum=checksum)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expected
