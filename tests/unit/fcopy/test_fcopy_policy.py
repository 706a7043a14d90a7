"""Path policy: allowed roots, '..', symlinks, CREATE_PATH over the whole chain."""

from __future__ import annotations

import os
import stat

import pytest

from hvguest.fcopy.policy import PathPolicy, TransferRefused, check_file_name


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "incoming"
    r.mkdir()
    return r


@pytest.fixture
def policy(root):
    return PathPolicy([str(root)])


def test_plain_target_inside_root(policy, root):
    (root / "sub").mkdir()
    target = policy.resolve(f"{root}/sub", "file.bin", create=False)
    try:
        assert target.path == f"{root}/sub/file.bin"
        assert target.root == str(root)
        assert os.path.samestat(os.fstat(target.dir_fd), os.stat(root / "sub"))
    finally:
        target.close()


@pytest.mark.parametrize("name", ["Привет мир.txt", "文件名.dat", "emoji 🎉🐍.bin", "mixé-ñ-ü"])
def test_unicode_names_are_accepted(policy, root, name):
    target = policy.resolve(f"{root}/{name}-dir", name, create=True)
    target.close()
    assert (root / f"{name}-dir").is_dir()


@pytest.mark.parametrize(
    "path_name, file_name",
    [
        ("../../etc", "passwd"),  # relative: the reference resolves it against its cwd
        ("/tmp/../etc", "x"),
        ("{root}/../..", "passwd"),
        ("{root}/a/../../etc", "passwd"),
        ("{root}", "../../etc/passwd"),
        ("{root}", ".."),
        ("{root}", "."),
        ("{root}", ""),
        ("{root}", "a/b"),
        ("/etc", "passwd"),
        ("/", "x"),
        ("", "x"),
    ],
)
def test_refusals(policy, root, path_name, file_name):
    with pytest.raises(TransferRefused):
        policy.resolve(path_name.format(root=root), file_name, create=True)
    assert sorted(os.listdir(root)) == []


def test_prefix_of_root_name_is_not_inside(policy, root):
    sibling = root.parent / (root.name + "-evil")
    sibling.mkdir()
    with pytest.raises(TransferRefused, match="outside the allowed roots"):
        policy.resolve(str(sibling), "x", create=False)


def test_symlinked_directory_is_refused(policy, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(TransferRefused, match="symbolic link"):
        policy.resolve(f"{root}/link", "x", create=True)
    with pytest.raises(TransferRefused, match="symbolic link"):
        policy.resolve(f"{root}/link/deeper", "x", create=True)
    assert os.listdir(outside) == []


def test_symlink_to_directory_inside_root_is_refused_too(policy, root):
    (root / "real").mkdir()
    os.symlink("real", root / "alias")
    with pytest.raises(TransferRefused, match="symbolic link"):
        policy.resolve(f"{root}/alias", "x", create=False)


def test_file_in_the_way_is_refused(policy, root):
    (root / "plain").write_bytes(b"x")
    with pytest.raises(TransferRefused, match="not a directory"):
        policy.resolve(f"{root}/plain/sub", "x", create=True)


def test_missing_directory_without_create_path(policy, root):
    with pytest.raises(TransferRefused, match="CREATE_PATH"):
        policy.resolve(f"{root}/new", "x", create=False)
    assert not (root / "new").exists()


def test_create_path_creates_the_whole_chain_including_last(root):
    policy = PathPolicy([str(root)], dir_mode=0o750)
    old = os.umask(0o077)
    try:
        target = policy.resolve(f"{root}/a/b/c", "f", create=True)
    finally:
        os.umask(old)
    target.close()
    assert target.created == [f"{root}/a", f"{root}/a/b", f"{root}/a/b/c"]
    for d in ("a", "a/b", "a/b/c"):
        assert stat.S_IMODE(os.stat(root / d).st_mode) == 0o750


def test_failed_chown_of_a_created_directory_closes_its_fd(root, monkeypatch):
    def refuse(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    policy = PathPolicy([str(root)], uid=12345)
    monkeypatch.setattr(os, "fchown", refuse)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PermissionError):
        policy.resolve(f"{root}/new", "f", create=True)
    assert set(os.listdir("/proc/self/fd")) <= before


def test_deepest_root_wins_and_slash_root_needs_listing(tmp_path):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    policy = PathPolicy([str(tmp_path), str(inner)])
    assert policy.split(f"{inner}/c")[0] == str(inner)
    assert PathPolicy(["/"]).split("/etc")[0] == "/"
    with pytest.raises(TransferRefused):
        PathPolicy([str(tmp_path)]).split("/etc")


def test_redundant_slashes_and_dots(policy, root):
    target = policy.resolve(f"//{root}/./x//", "f", create=True)
    target.close()
    assert target.directory == f"{root}/x"


def test_long_names_refused(policy, root):
    with pytest.raises(TransferRefused, match="longer than 255"):
        check_file_name("a" * 256)
    with pytest.raises(TransferRefused, match="longer than 255"):
        policy.resolve(f"{root}/{'é' * 128}", "f", create=True)


def test_check_dry_run(policy, root, tmp_path):
    (root / "exists").write_bytes(b"x")
    v = policy.check(f"{root}/new/deeper/file")
    assert v.allowed and v.missing == (f"{root}/new", f"{root}/new/deeper")
    assert not (root / "new").exists()
    assert not policy.check(f"{root}/new/file", create=False).allowed
    assert policy.check(f"{root}/exists").allowed
    v = policy.check(f"{root}/exists", overwrite=False)
    assert not v.allowed and "OVER_WRITE" in v.reason
    v = policy.check("/etc/passwd")
    assert not v.allowed and "outside" in v.reason
    v = policy.check(f"{root}/../etc/passwd")
    assert not v.allowed and ".." in v.reason
    os.symlink(tmp_path, root / "link")
    v = policy.check(f"{root}/link/x")
    assert not v.allowed and "symbolic link" in v.reason


def test_relative_root_rejected():
    with pytest.raises(ValueError):
        PathPolicy(["relative/dir"])


CONTROL_CHARACTERS = ["\x00", "\x01", "\x07", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f",
                      "\x80", "\x85", "\x9b", "\x9f", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_control_characters_in_names_are_refused(policy, root, char):
    with pytest.raises(TransferRefused, match=f"U\\+{ord(char):04X}") as info:
        policy.resolve(str(root), f"evil{char}name", create=True)
    assert char not in str(info.value)
    with pytest.raises(TransferRefused, match=f"U\\+{ord(char):04X}") as info:
        policy.resolve(f"{root}/dir{char}x", "f", create=True)
    assert char not in str(info.value)
    assert not policy.check(f"{root}/a{char}b").allowed
    assert os.listdir(root) == []


@pytest.mark.parametrize("name", ["a\u00a0b", "~!@#$%^&()_+=,.;'[]{}", "\u00c0\u2027"])
def test_printable_and_format_characters_stay_allowed(policy, root, name):
    policy.resolve(str(root), name, create=False).close()


def test_dir_mode_writable_by_others_is_refused(root):
    with pytest.raises(ValueError, match="group or others"):
        PathPolicy([str(root)], dir_mode=0o775)


def test_config_refuses_a_group_or_world_writable_dir_mode():
    from hvguest.config import load_config_text
    from hvguest.errors import ConfigError
    from hvguest.fcopy.settings import FcopySettings

    with pytest.raises(ConfigError, match="group or others write"):
        load_config_text("fcopy:\n  dir_mode: '0777'\n")
    config = load_config_text("fcopy:\n  dir_mode: '0750'\n")
    assert config.get(FcopySettings).dir_mode_bits == 0o750
