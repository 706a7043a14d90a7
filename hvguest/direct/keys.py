"""One authorized-key line from the host, checked strictly before sshd sees it.

The host may place public keys in KVP pool 0 (``hvguest.ssh.authorized_key.<n>``).
Anything that reaches sshd's AuthorizedKeysCommand output is a grant of access, so a
line is accepted only as ``<type> <base64> [comment]``:

* the type is one of KEY_TYPES (no options such as ``command=`` or ``from=``, which
  would come first and are refused because they are not a key type);
* the base64 is canonical (strict alphabet and padding) and decodes to the wire
  form of a key of that same type, with the field count and sizes that type has
  and nothing after them;
* the comment, if any, is printable text without control or line-breaking
  characters (a line feed would add a second, unchecked line);
* the line is at most MAX_LINE characters.

What is output is rebuilt from the parsed parts, never the host's text as given.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from hvguest.errors import HostProtocolError

MAX_LINE = 2048  # a KVP value holds 2047 bytes; an RSA 8192 key line is ~1.4 KiB
MAX_COMMENT = 256
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384
ED25519_KEY = 32
SK_APPLICATION_MAX = 256

# type -> the ECDSA curve named inside the blob (None: not ECDSA)
KEY_TYPES: dict[str, str | None] = {
    "ssh-ed25519": None,
    "ssh-rsa": None,
    "ecdsa-sha2-nistp256": "nistp256",
    "ecdsa-sha2-nistp384": "nistp384",
    "ecdsa-sha2-nistp521": "nistp521",
    "sk-ssh-ed25519@openssh.com": None,
    "sk-ecdsa-sha2-nistp256@openssh.com": "nistp256",
}
# Uncompressed EC point sizes (0x04 || X || Y).
_EC_POINT = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)
# C0, DEL, C1, line/paragraph separators, bidi controls, surrogates.
_BAD_COMMENT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f"
                          "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class KeyLineError(HostProtocolError):
    """A key line that is not accepted; the message says which rule it broke."""


@dataclass(frozen=True)
class AuthorizedKey:
    key_type: str
    blob: bytes
    comment: str = ""

    def line(self) -> str:
        """The authorized_keys line rebuilt from the parts (no options, ever)."""
        b64 = binascii.b2a_base64(self.blob, newline=False).decode("ascii")
        return f"{self.key_type} {b64} {self.comment}".rstrip(" ")


def _fields(blob: bytes, what: str) -> list[bytes]:
    """The SSH wire strings (uint32 length + bytes) ``blob`` is made of."""
    out: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if len(blob) - offset < 4:
            raise KeyLineError(f"{what}: key data ends inside a length field")
        size = int.from_bytes(blob[offset:offset + 4], "big")
        offset += 4
        if size > len(blob) - offset:
            raise KeyLineError(f"{what}: a field of {size} bytes runs past the key data")
        out.append(blob[offset:offset + size])
        offset += size
        if len(out) > 8:
            raise KeyLineError(f"{what}: more fields than any key type has")
    return out


def _mpint_bits(value: bytes, what: str, name: str) -> int:
    if not value or value[0] & 0x80:
        raise KeyLineError(f"{what}: RSA {name} is not a positive integer")
    if len(value) > 1 and value[0] == 0 and not value[1] & 0x80:
        raise KeyLineError(f"{what}: RSA {name} has a superfluous leading zero")
    return int.from_bytes(value, "big").bit_length()


def _check_blob(key_type: str, blob: bytes, what: str) -> None:
    fields = _fields(blob, what)
    if not fields:
        raise KeyLineError(f"{what}: empty key data")
    embedded = fields[0]
    if embedded != key_type.encode("ascii"):
        shown = embedded[:40].decode("ascii", "backslashreplace")
        raise KeyLineError(
            f"{what}: the line says {key_type} but the key data is of type {shown!r}")
    curve = KEY_TYPES[key_type]
    sk = key_type.startswith("sk-")
    if key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        expected = 3 if sk else 2
        if len(fields) != expected or len(fields[1]) != ED25519_KEY:
            raise KeyLineError(f"{what}: not a {key_type} key ({ED25519_KEY}-byte point)")
    elif key_type == "ssh-rsa":
        if len(fields) != 3:
            raise KeyLineError(f"{what}: an ssh-rsa key has an exponent and a modulus")
        _mpint_bits(fields[1], what, "exponent")
        bits = _mpint_bits(fields[2], what, "modulus")
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise KeyLineError(
                f"{what}: RSA modulus of {bits} bits, accepted {MIN_RSA_BITS}..{MAX_RSA_BITS}")
    else:
        expected = 4 if sk else 3
        if len(fields) != expected or fields[1] != (curve or "").encode("ascii"):
            raise KeyLineError(f"{what}: not a {key_type} key (curve {curve})")
        if curve is None or len(fields[2]) != _EC_POINT[curve] or fields[2][0] != 4:
            raise KeyLineError(f"{what}: not an uncompressed {curve} point")
    if sk:
        application = fields[-1]
        if not application or len(application) > SK_APPLICATION_MAX \
                or not application.isascii() or not application.decode().isprintable():
            raise KeyLineError(f"{what}: security key application is not printable ASCII")


def parse_key_line(line: str, what: str = "key line") -> AuthorizedKey:
    """The key ``line`` holds, or KeyLineError naming the rule it broke. ``what``
    names the line in messages (e.g. the KVP key it came from)."""
    if not isinstance(line, str):
        raise KeyLineError(f"{what}: not text")
    if len(line) > MAX_LINE:
        raise KeyLineError(f"{what}: {len(line)} characters, limit {MAX_LINE}")
    bad = _BAD_COMMENT.search(line)
    if bad is not None:
        raise KeyLineError(
            f"{what}: control or line-breaking character U+{ord(bad.group()):04X} "
            f"at offset {bad.start()}")
    parts = line.strip(" ").split(" ", 2)
    if len(parts) < 2 or not parts[1]:
        raise KeyLineError(f"{what}: expected '<type> <base64> [comment]'")
    key_type, b64 = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        shown = key_type[:40].encode("unicode_escape").decode("ascii")
        raise KeyLineError(
            f"{what}: {shown!r} is not an accepted key type (options such as command= "
            f"or from= are never accepted); accepted: {', '.join(KEY_TYPES)}")
    if _BASE64.fullmatch(b64) is None or len(b64) % 4:
        raise KeyLineError(f"{what}: the key data is not canonical base64")
    try:
        blob = binascii.a2b_base64(b64, strict_mode=True)
    except binascii.Error as exc:
        raise KeyLineError(f"{what}: the key data is not valid base64 ({exc})") from None
    if binascii.b2a_base64(blob, newline=False).decode("ascii") != b64:
        raise KeyLineError(f"{what}: the key data is not canonical base64")
    _check_blob(key_type, blob, what)
    comment = parts[2].strip(" ") if len(parts) == 3 else ""
    if len(comment) > MAX_COMMENT:
        raise KeyLineError(f"{what}: comment of {len(comment)} characters, limit {MAX_COMMENT}")
    if comment and not comment.isprintable():
        raise KeyLineError(f"{what}: the comment has unprintable characters")
    return AuthorizedKey(key_type, blob, comment)
