"""The direct: section: defaults, each bound, the cross-field rule, errors with lines;
the section rewrite of ``hvguestctl direct enable|disable``; the host's text."""

from __future__ import annotations

import os

import pytest

from hvguest.cli.direct_config import update_config_file, updated_text
from hvguest.config import default_config_text, load_config_text, validate_config
from hvguest.direct import host
from hvguest.direct.settings import DirectSettings
from hvguest.errors import ConfigError, LocalUsageError


def direct(text: str) -> DirectSettings:
    settings: DirectSettings = load_config_text(text, "hvguest.yaml").get(DirectSettings)
    return settings


def test_defaults_are_off() -> None:
    d = direct("")
    assert (d.enabled, d.port, d.authorized_keys_from_host, d.user) == (False, 22, False, "")


def test_a_full_section() -> None:
    d = direct("direct:\n  enabled: true\n  port: 2222\n  authorized_keys_from_host: true\n"
               "  user: admin\n")
    assert d == DirectSettings(True, 2222, True, "admin")


@pytest.mark.parametrize(("text", "message"), [
    ("direct:\n  port: 0\n", "hvguest.yaml:2: direct.port: expected a value between 1 and"),
    ("direct:\n  port: 2147483648\n", "direct.port: expected a value between"),
    ("direct:\n  port: '22'\n", "direct.port: expected an integer"),
    ("direct:\n  port: 22.5\n", "direct.port: expected an integer"),
    ("direct:\n  enabled: 'yes'\n", "direct.enabled: expected true or false"),
    ("direct:\n  user: Admin\n", "direct.user: 'Admin' is not a user name"),
    ("direct:\n  user: 'a b'\n", "is not a user name"),
    ("direct:\n  user: \"root\\nx\"\n", "is not a user name"),
    ("direct:\n  user: " + "a" * 33 + "\n", "is not a user name"),
    ("direct:\n  authorized_keys_from_host: true\n",
     "hvguest.yaml:2: direct: authorized_keys_from_host is true but user is empty"),
    ("direct:\n  keys: yes\n", "direct: unknown key 'keys'"),
])
def test_bad_values_name_file_line_and_rule(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "hvguest.yaml")
    assert message in str(exc.value)


def test_packaged_file_lists_the_section_commented() -> None:
    text = default_config_text()
    assert "#direct:\n" in text and "#  enabled: false\n" in text and "#  port: 22\n" in text
    assert direct(text) == DirectSettings()


# -- the rewrite -------------------------------------------------------------------

PACKAGED_PLUS = default_config_text() + "kvp:\n  max_records: 500  # kept\n# closing comment\n"


def test_enable_appends_the_section_and_keeps_everything_else() -> None:
    new, settings = updated_text(PACKAGED_PLUS, "f", {"enabled": True})
    assert settings == DirectSettings(enabled=True)
    assert new.startswith(PACKAGED_PLUS)
    assert new.endswith("direct:\n  enabled: true\n  port: 22\n"
                        "  authorized_keys_from_host: false\n  user: \"\"\n")
    assert load_config_text(new, "f").section("kvp").max_records == 500


def test_an_existing_section_is_replaced_in_place() -> None:
    text = ("kvp:\n  max_records: 500\ndirect:\n  port: 2222   # my port\n\n  user: ops\n"
            "vss:\n  hook_timeout: 60\n")
    new, settings = updated_text(text, "f", {"enabled": True})
    assert settings == DirectSettings(enabled=True, port=2222, user="ops")
    assert new.startswith("kvp:\n  max_records: 500\ndirect:\n  enabled: true\n")
    assert new.endswith("vss:\n  hook_timeout: 60\n")
    again, _ = updated_text(new, "f", {"enabled": False})
    assert direct(again) == DirectSettings(port=2222, user="ops")
    assert again.count("direct:") == 1


@pytest.mark.parametrize("text", ["direct:\n", "direct: {enabled: false}\n",
                                  "direct: {}\nlog: {level: info}\n"])
def test_empty_and_flow_sections(text: str) -> None:
    new, settings = updated_text(text, "f", {"enabled": True, "port": 5000})
    assert direct(new) == settings == DirectSettings(enabled=True, port=5000)


@pytest.mark.parametrize("user", ["no", "null", "yes", "on", "true", "_1"])
def test_user_names_yaml_would_retype_stay_strings(user: str) -> None:
    new, _ = updated_text("", "f", {"authorized_keys_from_host": True, "user": user})
    assert direct(new).user == user


def test_a_broken_file_is_reported_not_rewritten(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="f:2"):
        updated_text("direct:\n  port: -1\n", "f", {"enabled": True})
    with pytest.raises(LocalUsageError, match="user is empty"):
        updated_text("", "f", {"authorized_keys_from_host": True})


def test_flow_style_root_is_left_to_the_administrator() -> None:
    with pytest.raises(LocalUsageError, match="block mapping"):
        updated_text("{kvp: {max_records: 500}}\n", "f", {"enabled": True})


def test_update_config_file_keeps_mode_and_validates(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "hvguest.yaml")
    with open(path, "w") as f:
        f.write("log:\n  level: debug\n")
    os.chmod(path, 0o640)
    update_config_file(path, {"enabled": True, "port": 3000})
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert validate_config(path) == []
    missing = os.path.join(tmp_path, "new.yaml")
    update_config_file(missing, {"enabled": True})
    assert os.stat(missing).st_mode & 0o777 == 0o644


# -- what the host types ---------------------------------------------------------

def test_host_instructions_for_port_22() -> None:
    assert host.instructions(22, "admin") == [
        "On the Hyper-V host, once (elevated PowerShell):",
        "  New-Item -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\"
        "Virtualization\\GuestCommunicationServices' -Name "
        "'00000016-facb-11e6-bd58-64006a7986d3'",
        "  New-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\"
        "Virtualization\\GuestCommunicationServices\\00000016-facb-11e6-bd58-64006a7986d3' "
        "-Name 'ElementName' -PropertyType String -Value 'hvguest SSH (vsock port 22)'",
        "Then, from the host (no network needed):",
        "  hvc ssh -l admin <vm-name>",
        '  scp -o ProxyCommand="hvc nc -t vsock,<vm-name> 22" .\\file.txt admin@<vm-name>:/tmp/',
        '  scp -o ProxyCommand="hvc nc -t vsock,<vm-name> 22" admin@<vm-name>:/var/log/syslog .',
    ]


def test_host_instructions_for_another_port() -> None:
    lines = host.instructions(2222)
    assert "'000008ae-facb-11e6-bd58-64006a7986d3'" in lines[1]
    assert lines[4] == '  ssh -o ProxyCommand="hvc nc -t vsock,<vm-name> 2222" <user>@<vm-name>'
