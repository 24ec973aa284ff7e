"""The node's first-boot installer (``fedvfer/install.sh`` on the boot partition), as text.

Both routes (cloud-init's ``runcmd`` and the firstrun route's one-shot unit) run it as root once
the network is up. It installs the Debian packages, makes a service user, moves the node's
config and credentials off the FAT partition into ``/etc/fedvfer`` (0640, group fedvfer),
creates ``/opt/fedvfer/.venv`` with ``--system-site-packages`` so that the system's picamera2
is importable, installs the edge node into it, enables the systemd units and sets up the
Chromium kiosk for the desktop user.
"""

from __future__ import annotations

import shlex

from provisioning.cloudinit import ImageSpec

VENV = "/opt/fedvfer/.venv"
ETC = "/etc/fedvfer"
STATE = "/var/lib/fedvfer"
UNITS = ("edge-node.service", "edge-node-adapt.service", "edge-node-adapt.timer")
#: The face detector the node looks for beside its bundle (edge_node.service.resolve_face_model).
FACE_MODEL = "face_detection_short_range.tflite"
#: vfer.faces.MODEL_URL (not imported: that module loads OpenCV); a test keeps them equal.
FACE_MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_detector/blaze_face_short_range/"
    "float16/latest/blaze_face_short_range.tflite"
)


def kiosk_command(url: str) -> str:
    return (
        '"$(command -v chromium || command -v chromium-browser)" --kiosk --noerrdialogs '
        f"--disable-infobars --no-first-run --ozone-platform=wayland {shlex.quote(url)}"
    )


def install_sh(spec: ImageSpec) -> str:
    q = shlex.quote
    if spec.package_file:
        pkg = f'"$SRC/dist/"{q(spec.package_file + "[edge]")}'
    else:
        pkg = q(spec.pip_spec)
    lines = [
        "#!/bin/bash",
        f"# fedvfer node {spec.node}: first-boot installer, written by `python -m provisioning image`.",
        f"# Log: /var/log/fedvfer-install.log. Runs once; {STATE}/.installed marks it done.",
        "set -euo pipefail",
        'SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        "exec >>/var/log/fedvfer-install.log 2>&1",
        'echo "fedvfer install starting $(date -Is)"',
        f"if [ -e {STATE}/.installed ]; then echo 'already installed'; exit 0; fi",
        "export DEBIAN_FRONTEND=noninteractive",
        "apt-get update",
        f"apt-get install -y --no-install-recommends {' '.join(q(p) for p in spec.packages)}",
        "id fedvfer >/dev/null 2>&1 || useradd --system --user-group --home-dir "
        f"{STATE} --shell /usr/sbin/nologin fedvfer",
        "for g in video render input gpio; do",
        "  if getent group $g >/dev/null; then usermod -aG $g fedvfer; fi",
        "done",
        f"install -d -m 0750 -o root -g fedvfer {ETC}",
        f'if [ -d "$SRC/etc" ]; then install -m 0640 -o root -g fedvfer "$SRC"/etc/* {ETC}/; fi',
        f"install -d -m 0750 -o fedvfer -g fedvfer {STATE}",
        f'if [ -d "$SRC/bundle" ]; then cp -r "$SRC/bundle" {STATE}/; chown -R fedvfer:fedvfer {STATE}/bundle; fi',
        *_face_model_lines(),
        f"python3 -m venv --system-site-packages {VENV}",
        f"{VENV}/bin/pip install --upgrade pip",
        f"{VENV}/bin/pip install {pkg}",
        f"{VENV}/bin/python -c 'import picamera2' || echo 'warning: picamera2 is not importable from the venv'",
        'install -m 0644 "$SRC"/systemd/* /etc/systemd/system/',
        "systemctl daemon-reload",
        "systemctl enable edge-node.service edge-node-adapt.timer",
        "systemctl enable ssh || true",
    ]
    if spec.kiosk:
        lines += _kiosk_lines(spec)
    lines += [
        "# The credentials now live in /etc/fedvfer only; take them off the FAT partition.",
        'rm -rf "$SRC/etc"',
        f"touch {STATE}/.installed",
        "systemctl start edge-node.service edge-node-adapt.timer",
        'echo "fedvfer install done $(date -Is)"',
        "",
    ]
    return "\n".join(lines)


def _face_model_lines() -> list[str]:
    """The face detector from the card (``image --face-model``), else downloaded once."""
    model = f"{STATE}/models/{FACE_MODEL}"
    return [
        f"install -d -m 0755 -o fedvfer -g fedvfer {STATE}/models",
        f'if [ -f "$SRC/models/{FACE_MODEL}" ]; then install -m 0644 "$SRC/models/{FACE_MODEL}" {model}; fi',
        f"[ -s {model} ] || curl -fsSL --retry 3 -o {model} {shlex.quote(FACE_MODEL_URL)} \\",
        f"  || echo 'warning: no face detector; put {FACE_MODEL} in {STATE}/models/'",
    ]


def _kiosk_lines(spec: ImageSpec) -> list[str]:
    q = shlex.quote
    autostart = f"{kiosk_command(spec.kiosk_url)} # fedvfer-kiosk"
    return [
        "# Chromium kiosk for the desktop user (labwc, the default desktop since late 2024).",
        "command -v chromium >/dev/null || command -v chromium-browser >/dev/null \\",
        "  || apt-get install -y chromium || apt-get install -y chromium-browser || true",
        f"KUSER={q(spec.user)}",
        'KHOME=$(getent passwd "$KUSER" | cut -d: -f6)',
        'install -d -o "$KUSER" -g "$KUSER" "$KHOME/.config" "$KHOME/.config/labwc"',
        'touch "$KHOME/.config/labwc/autostart"',
        'grep -q fedvfer-kiosk "$KHOME/.config/labwc/autostart" \\',
        f'  || echo {q(autostart)} >>"$KHOME/.config/labwc/autostart"',
        'chown "$KUSER:$KUSER" "$KHOME/.config/labwc/autostart"',
        "if command -v raspi-config >/dev/null; then raspi-config nonint do_boot_behaviour B4 || true; fi",
    ]
