"""Build a small stand-in for a Raspberry Pi OS image: an MBR partition table (sfdisk), a FAT32
boot partition (mkfs.vfat at an offset, no root) with cmdline.txt and config.txt, and a Linux
root partition left empty. ``cloud_init=True`` adds the template user-data that images with
cloud-init ship."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BOOT_START = 2048  # sectors
BOOT_SECTORS = 69_632  # 34 MiB: just above FAT32's minimum cluster count at 512-byte clusters
ROOT_SECTORS = 8192
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=deadbeef-02 rootfstype=ext4 fsck.repair=yes rootwait quiet splash\n"

TOOLS = ("sfdisk", "mkfs.vfat", "mcopy")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def build_pi_image(path: Path, *, cloud_init: bool) -> Path:
    total = BOOT_START + BOOT_SECTORS + ROOT_SECTORS
    with open(path, "wb") as fh:
        fh.truncate(total * 512)
    table = (
        "label: dos\nlabel-id: 0xdeadbeef\n"
        f"start={BOOT_START}, size={BOOT_SECTORS}, type=c, bootable\n"
        f"start={BOOT_START + BOOT_SECTORS}, size={ROOT_SECTORS}, type=83\n"
    )
    subprocess.run([_tool("sfdisk"), "-q", str(path)], input=table.encode(), check=True)
    subprocess.run(
        [
            _tool("mkfs.vfat"),
            "-F",
            "32",
            "-s",
            "1",
            "-S",
            "512",
            "-n",
            "bootfs",
            "--offset",
            str(BOOT_START),
            str(path),
            str(BOOT_SECTORS // 2),
        ],
        check=True,
        capture_output=True,
    )
    files = {"cmdline.txt": CMDLINE, "config.txt": "[all]\narm_64bit=1\n"}
    if cloud_init:
        files |= {
            "user-data": "#cloud-config\n# template shipped with the image\n",
            "network-config": "network:\n  version: 2\n",
            "meta-data": "instance-id: rpios-image\n",
        }
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    drive = f"{path}@@{BOOT_START * 512}"
    for name, text in files.items():
        src = path.parent / f".{name}"
        src.write_text(text)
        subprocess.run([_tool("mcopy"), "-i", drive, str(src), f"::/{name}"], check=True, env=env)
        src.unlink()
    return path
