"""What the Hyper-V administrator types on the host, exactly.

Windows lets a process connect to a guest's Hyper-V socket service only once the
service GUID is registered under GuestCommunicationServices (once per host, elevated
PowerShell). ``hvc.exe`` (Windows 10 / Server 2019 and later) then connects to the
guest's vsock port: ``hvc ssh`` for a shell, ``hvc nc`` as the ProxyCommand of
ssh/scp/sftp for anything else, including file copies in both directions
(Copy-VMFile only copies host -> guest).
"""

from __future__ import annotations

from hvguest.direct.guid import service_guid

REGISTRY_PATH = (
    r"HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization"
    r"\GuestCommunicationServices"
)
VM = "<vm-name>"


def element_name(port: int) -> str:
    return f"hvguest SSH (vsock port {port})"


def registry_commands(port: int) -> list[str]:
    """The two PowerShell lines that register the service GUID (run once per host)."""
    guid = service_guid(port)
    return [
        f"New-Item -Path '{REGISTRY_PATH}' -Name '{guid}'",
        f"New-ItemProperty -Path '{REGISTRY_PATH}\\{guid}' -Name 'ElementName' "
        f"-PropertyType String -Value '{element_name(port)}'",
    ]


def proxy_option(port: int) -> str:
    return f'-o ProxyCommand="hvc nc -t vsock,{VM} {port}"'


def client_commands(port: int, user: str) -> list[str]:
    """Shell, and file copy both ways, from the host."""
    login = user or "<user>"
    proxy = proxy_option(port)
    shell = f"hvc ssh -l {login} {VM}" if port == 22 else f"ssh {proxy} {login}@{VM}"
    return [
        shell,
        f"scp {proxy} .\\file.txt {login}@{VM}:/tmp/",
        f"scp {proxy} {login}@{VM}:/var/log/syslog .",
    ]


def instructions(port: int, user: str = "") -> list[str]:
    """The host's side, as lines for ``hvguestctl direct status`` and the README."""
    return [
        "On the Hyper-V host, once (elevated PowerShell):",
        *(f"  {line}" for line in registry_commands(port)),
        "Then, from the host (no network needed):",
        *(f"  {line}" for line in client_commands(port, user)),
    ]
