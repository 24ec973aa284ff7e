"""What goes on a node's boot partition, as pure text: cloud-init ``user-data``,
``network-config`` and ``meta-data`` for Raspberry Pi OS images with cloud-init, and the
older ``firstrun.sh`` route. Both hand over to one first-boot installer (:func:`install_sh`).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass

import yaml

#: From the Raspberry Pi archive (archive.raspberrypi.com): on Raspberry Pi OS, not in Debian.
#: picamera2 comes from the system (the venv sees it).
PI_ARCHIVE_PACKAGES = ("python3-picamera2",)
#: What opencv-contrib-python's wheel loads and Raspberry Pi OS Lite lacks: without them
#: ``import cv2`` fails (libxcb.so.1, libGL.so.1, libgthread-2.0.so.0). On Trixie apt installs
#: libglib2.0-0t64 for libglib2.0-0.
OPENCV_LIBS = ("libxcb1", "libgl1", "libglib2.0-0")
#: Debian packages every node needs (`make pi-check` installs these, from this tuple).
DEFAULT_PACKAGES = (*PI_ARCHIVE_PACKAGES, "python3-venv", "python3-pip", "curl", *OPENCV_LIBS)
#: Groups of the kiosk user (as Raspberry Pi Imager gives the first user; missing ones are made).
USER_GROUPS = "users,adm,dialout,audio,netdev,video,plugdev,input,render,gpio,sudo"
#: Where the installer and the node's files sit on the boot partition.
BOOT_DIR = "fedvfer"
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def debian_packages(packages: tuple[str, ...] = DEFAULT_PACKAGES) -> tuple[str, ...]:
    """``packages`` without those only the Raspberry Pi archive has (what plain Debian installs)."""
    return tuple(p for p in packages if p not in PI_ARCHIVE_PACKAGES)


def wpa_psk(ssid: str, passphrase: str) -> str:
    """The WPA2 pre-shared key (64 hex digits) so the passphrase itself is never written."""
    if not 8 <= len(passphrase) <= 63:
        raise ValueError("a Wi-Fi passphrase has 8 to 63 characters")
    if not 1 <= len(ssid.encode()) <= 32:
        raise ValueError("a Wi-Fi SSID has 1 to 32 bytes")
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


@dataclass(frozen=True)
class Wifi:
    ssid: str
    psk: str  # 64 hex digits, see wpa_psk
    country: str  # ISO 3166 code, e.g. GB

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.psk):
            raise ValueError("Wi-Fi psk must be 64 hex digits (see wpa_psk)")
        if not _COUNTRY.match(self.country):
            raise ValueError(f"Wi-Fi country {self.country!r} must be two capital letters, e.g. GB")


@dataclass(frozen=True)
class ImageSpec:
    """Everything the first boot of one node needs besides its credentials."""

    node: str
    hostname: str
    instance_id: str
    user: str = "kiosk"
    ssh_keys: tuple[str, ...] = ()
    password_hash: str | None = None
    wifi: Wifi | None = None
    timezone: str | None = None
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    pip_spec: str = "fedvfer[edge]"
    package_file: str | None = None  # a wheel or sdist copied to fedvfer/dist/
    kiosk: bool = True
    kiosk_url: str = "http://127.0.0.1:8080/"
    boot_mount: str = "/boot/firmware"

    def __post_init__(self) -> None:
        if not _USER.match(self.user):
            raise ValueError(f"user name {self.user!r} is not a valid Linux user name")
        if not _HOST.match(self.hostname):
            raise ValueError(f"host name {self.hostname!r} is not a valid host name")
        for key in self.ssh_keys:
            if not key.startswith(("ssh-", "ecdsa-", "sk-")) or "\n" in key:
                raise ValueError("each SSH key must be one public key line (ssh-ed25519 AAAA...)")
        if self.password_hash is not None and not self.password_hash.startswith("$"):
            raise ValueError("the password hash must be a crypt hash ($6$..., $y$...)")


def _installer_cmd(spec: ImageSpec) -> str:
    # /boot/firmware on Bookworm and later, /boot before; found at run time.
    first = shlex.quote(spec.boot_mount)
    return (
        f"B={first}; [ -d $B/{BOOT_DIR} ] || B=/boot/firmware; [ -d $B/{BOOT_DIR} ] || B=/boot; "
        f"exec bash $B/{BOOT_DIR}/install.sh"
    )


def user_data(spec: ImageSpec) -> str:
    """``#cloud-config``: host name, the kiosk user with SSH keys, packages, and the installer."""
    user: dict[str, object] = {
        "name": spec.user,
        "groups": USER_GROUPS,
        "shell": "/bin/bash",
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "lock_passwd": spec.password_hash is None,
    }
    if spec.password_hash:
        user["passwd"] = spec.password_hash
    if spec.ssh_keys:
        user["ssh_authorized_keys"] = list(spec.ssh_keys)
    doc: dict[str, object] = {
        "hostname": spec.hostname,
        "manage_etc_hosts": True,
        "ssh_pwauth": False,
        "users": [user],
        "package_update": True,
        "packages": list(spec.packages),
    }
    if spec.timezone:
        doc["timezone"] = spec.timezone
    doc["runcmd"] = [["bash", "-c", _installer_cmd(spec)]]
    return (
        "#cloud-config\n"
        f"# fedvfer node {spec.node}, written by `python -m provisioning image`.\n"
        + yaml.safe_dump(doc, sort_keys=False, width=1000)
    )


def network_config(spec: ImageSpec) -> str:
    """Netplan-style version 2: Wi-Fi by pre-shared key when given, wired DHCP always."""
    net: dict[str, object] = {
        "version": 2,
        "ethernets": {"eth0": {"dhcp4": True, "optional": True}},
    }
    if spec.wifi:
        net["wifis"] = {
            "wlan0": {
                "dhcp4": True,
                "optional": True,
                "regulatory-domain": spec.wifi.country,
                "access-points": {spec.wifi.ssid: {"password": spec.wifi.psk}},
            }
        }
    return "# written by `python -m provisioning image`\n" + yaml.safe_dump(
        {"network": net}, sort_keys=False
    )


def meta_data(spec: ImageSpec) -> str:
    """NoCloud meta-data; a new instance id per image makes cloud-init run again on a re-flash."""
    return yaml.safe_dump(
        {"instance-id": spec.instance_id, "local-hostname": spec.hostname}, sort_keys=False
    )


def cmdline(current: str, spec: ImageSpec, *, firstrun: bool) -> str:
    """``cmdline.txt`` (one line) with the Wi-Fi regulatory domain and, for the firstrun route,
    the ``systemd.run`` hook that runs ``firstrun.sh`` once."""
    words = [
        w
        for w in current.split()
        if not w.startswith(
            ("systemd.run", "systemd.unit=kernel-command-line", "cfg80211.ieee80211_regdom=")
        )
    ]
    if spec.wifi:
        words.append(f"cfg80211.ieee80211_regdom={spec.wifi.country}")
    if firstrun:
        script = f"{spec.boot_mount.rstrip('/')}/firstrun.sh"
        words += [
            f"systemd.run={script}",
            "systemd.run_success_action=reboot",
            "systemd.unit=kernel-command-line.target",
        ]
    return " ".join(words) + "\n"


def firstrun_sh(spec: ImageSpec) -> str:
    """For images without cloud-init (Bookworm before 2025-11, Bullseye): run once by
    ``systemd.run`` from cmdline.txt before the system is up; it sets the host name, user,
    SSH key and Wi-Fi, then leaves a unit that runs the installer on the next, networked boot."""
    q = shlex.quote
    boot = spec.boot_mount.rstrip("/")
    keys = "\n".join(spec.ssh_keys)
    pw = spec.password_hash or "*"
    lines = [
        "#!/bin/bash",
        f"# fedvfer node {spec.node}: first-run for Raspberry Pi OS images without cloud-init.",
        "# Written by `python -m provisioning image`; runs once, then removes itself.",
        "set +e",
        f"BOOT={q(boot)}",
        f"NEWHOST={q(spec.hostname)}",
        f"NEWUSER={q(spec.user)}",
        'OLDHOST=$(tr -d " \\t\\n\\r" </etc/hostname)',
        "if [ -x /usr/lib/raspberrypi-sys-mods/imager_custom ]; then",
        '  /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname "$NEWHOST"',
        "else",
        '  echo "$NEWHOST" >/etc/hostname',
        '  sed -i "s/127.0.1.1.*$OLDHOST/127.0.1.1\\t$NEWHOST/g" /etc/hosts',
        "fi",
        "if [ -x /usr/lib/userconf-pi/userconf ]; then",
        f'  /usr/lib/userconf-pi/userconf "$NEWUSER" {q(pw)}',
        "else",
        "  FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)",
        f'  echo "$FIRSTUSER:"{q(pw)} | chpasswd -e',
        '  if [ "$FIRSTUSER" != "$NEWUSER" ]; then',
        '    usermod -l "$NEWUSER" "$FIRSTUSER"; usermod -m -d "/home/$NEWUSER" "$NEWUSER"',
        '    groupmod -n "$NEWUSER" "$FIRSTUSER"',
        "  fi",
        "fi",
        'HOMEDIR=$(getent passwd "$NEWUSER" | cut -d: -f6)',
    ]
    if keys:
        lines += [
            'install -d -m 700 -o "$NEWUSER" -g "$NEWUSER" "$HOMEDIR/.ssh"',
            f'printf "%s\\n" {q(keys)} >"$HOMEDIR/.ssh/authorized_keys"',
            'chown "$NEWUSER:$NEWUSER" "$HOMEDIR/.ssh/authorized_keys"',
            'chmod 600 "$HOMEDIR/.ssh/authorized_keys"',
            "systemctl enable ssh",
        ]
    if spec.wifi:
        lines += _firstrun_wifi(spec.wifi)
    if spec.timezone:
        lines += [
            f"ln -sf /usr/share/zoneinfo/{q(spec.timezone)} /etc/localtime",
            f"echo {q(spec.timezone)} >/etc/timezone",
        ]
    lines += [
        "cat >/etc/systemd/system/fedvfer-firstboot.service <<'UNIT'",
        "[Unit]",
        "Description=fedvfer: install the edge node (first networked boot)",
        "Wants=network-online.target",
        "After=network-online.target",
        "ConditionPathExists=!/var/lib/fedvfer/.installed",
        "",
        "[Service]",
        "Type=oneshot",
        "ExecStart=/bin/bash -c " + q(_installer_cmd(spec)),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "UNIT",
        "systemctl enable fedvfer-firstboot.service",
        'rm -f "$BOOT/firstrun.sh"',
        "sed -i 's| systemd.run.*||g' \"$BOOT/cmdline.txt\"",
        "exit 0",
        "",
    ]
    return "\n".join(lines)


def _firstrun_wifi(wifi: Wifi) -> list[str]:
    q = shlex.quote
    nm = (
        "[connection]\nid=fedvfer-wifi\ntype=wifi\n[wifi]\nmode=infrastructure\n"
        f"ssid={wifi.ssid}\n[wifi-security]\nkey-mgmt=wpa-psk\npsk={wifi.psk}\n"
        "[ipv4]\nmethod=auto\n[ipv6]\nmethod=auto\n"
    )
    wpa = (
        "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev\n"
        f"country={wifi.country}\nupdate_config=1\nnetwork={{\n"
        f' ssid="{wifi.ssid}"\n psk={wifi.psk}\n}}\n'
    )
    return [
        f"raspi-config nonint do_wifi_country {q(wifi.country)} 2>/dev/null || rfkill unblock wifi",
        "if [ -d /etc/NetworkManager/system-connections ]; then",
        "  F=/etc/NetworkManager/system-connections/fedvfer-wifi.nmconnection",
        f'  printf "%s" {q(nm)} >"$F"; chmod 600 "$F"',
        "else",
        f'  printf "%s" {q(wpa)} >/etc/wpa_supplicant/wpa_supplicant.conf',
        "  chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf",
        "fi",
    ]
