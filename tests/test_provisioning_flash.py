"""flash: the refusals over a fake /sys and mounts table, and a regular file standing in for
the card (written, synced, read back and compared)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.flash import DeviceFacts, check_target, disk_of, flash, refusal, root_source
from vfer.cli import UserError

MOUNTS = """\
/dev/nvme0n1p2 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
/dev/nvme0n1p1 /boot/efi vfat rw 0 0
/dev/sdc1 /media/op/bootfs vfat rw 0 0
tmpfs /run tmpfs rw 0 0
"""


def _disk(
    sys_block: Path, name: str, removable: int, parts: int = 2, sectors: int = 62_333_952
) -> None:
    d = sys_block / name
    d.mkdir(parents=True)
    (d / "removable").write_text(f"{removable}\n")
    (d / "size").write_text(f"{sectors}\n")
    sep = "p" if name[-1].isdigit() else ""
    for i in range(1, parts + 1):
        (d / f"{name}{sep}{i}").mkdir()


@pytest.fixture
def facts(tmp_path: Path) -> DeviceFacts:
    sys_block = tmp_path / "sys" / "block"
    _disk(sys_block, "nvme0n1", 0)  # the system disk
    _disk(sys_block, "sda", 0)  # a second fixed disk
    _disk(sys_block, "sdb", 1)  # an SD card reader with a card, not mounted: fine
    _disk(sys_block, "sdc", 1)  # a card whose boot partition is mounted
    _disk(sys_block, "mmcblk0", 1)  # the card the system runs from
    return DeviceFacts(sys_block, MOUNTS, "/dev/nvme0n1p2")


def test_disk_of_and_root_source(facts: DeviceFacts) -> None:
    assert disk_of("sdb1", facts.sys_block) == "sdb"
    assert disk_of("mmcblk0p2", facts.sys_block) == "mmcblk0"
    assert disk_of("sdb", facts.sys_block) == "sdb"
    assert disk_of("sdz", facts.sys_block) is None
    assert root_source(MOUNTS) == "/dev/nvme0n1p2"
    assert root_source("overlay / overlay rw 0 0\n") is None


def test_removable_unmounted_card_is_allowed(facts: DeviceFacts) -> None:
    assert refusal("/dev/sdb", facts) is None


@pytest.mark.parametrize(
    ("device", "why"),
    [
        ("/dev/sda", "not a removable device"),
        ("/dev/nvme0n1", "not a removable device"),
        ("/dev/sdc", "is mounted (/dev/sdc1 on /media/op/bootfs)"),
        ("/dev/sdb1", "is a partition; give the whole card (/dev/sdb)"),
        ("/dev/sdz", "not a block device known to the kernel"),
    ],
)
def test_refusals(facts: DeviceFacts, device: str, why: str) -> None:
    reason = refusal(device, facts)
    assert reason is not None and why in reason


def test_system_disk_is_refused_even_when_removable(facts: DeviceFacts) -> None:
    booted_from_card = DeviceFacts(
        facts.sys_block, "/dev/mmcblk0p2 / ext4 rw 0 0\n", "/dev/mmcblk0p2"
    )
    reason = refusal("/dev/mmcblk0", booted_from_card)
    assert reason is not None and "holds the running system" in reason
    # Even with / hidden behind an overlay, a mounted partition of the card is refused.
    mounted = DeviceFacts(facts.sys_block, "/dev/mmcblk0p1 /boot/firmware vfat rw 0 0\n", None)
    assert "is mounted" in (refusal("/dev/mmcblk0", mounted) or "")


def test_check_target_refuses_non_devices(tmp_path: Path, facts: DeviceFacts) -> None:
    with pytest.raises(UserError, match="does not exist"):
        check_target(tmp_path / "nope", facts)
    with pytest.raises(UserError, match="neither a block device nor a regular file"):
        check_target(tmp_path, facts)
    null = Path("/dev/null")  # a character device
    with pytest.raises(UserError, match="neither"):
        check_target(null, facts)


def _image(tmp_path: Path, size: int = 9 << 20) -> Path:
    img = tmp_path / "node.img"
    img.write_bytes(os.urandom(size))
    return img


def test_flash_to_a_regular_file_writes_and_verifies(tmp_path: Path, facts: DeviceFacts) -> None:
    img = _image(tmp_path)
    card = tmp_path / "card"
    card.write_bytes(b"\xff" * (16 << 20))  # a bigger card full of old data
    digest = flash(img, card, facts=facts, progress=False)
    assert digest == hashlib.sha256(img.read_bytes()).hexdigest()
    data = card.read_bytes()
    assert data[: img.stat().st_size] == img.read_bytes()
    assert data[img.stat().st_size :] == b"\xff" * ((16 << 20) - img.stat().st_size)


def test_flash_refuses_xz_and_missing_image(tmp_path: Path, facts: DeviceFacts) -> None:
    card = tmp_path / "card"
    card.write_bytes(b"")
    xz = tmp_path / "node.img.xz"
    xz.write_bytes(b"\xfd7zXZ")
    with pytest.raises(UserError, match=r"not a \.xz"):
        flash(xz, card, facts=facts, progress=False)
    with pytest.raises(UserError, match="is not a file"):
        flash(tmp_path / "none.img", card, facts=facts, progress=False)


def test_flash_cli(tmp_path: Path) -> None:
    img = _image(tmp_path, 5 << 20)
    card = tmp_path / "card"
    card.write_bytes(b"")
    cmd = [
        sys.executable,
        "-m",
        "provisioning",
        "flash",
        "--image",
        str(img),
        "--device",
        str(card),
    ]
    res = subprocess.run([*cmd, "--yes", "--no-progress"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "written and verified" in res.stdout
    assert card.read_bytes() == img.read_bytes()
    # Without --yes it asks, and "no" leaves the card alone.
    card.write_bytes(b"old")
    res = subprocess.run(cmd, input="n\n", capture_output=True, text=True)
    assert res.returncode != 0 and card.read_bytes() == b"old"
    res = subprocess.run(
        [sys.executable, "-m", "provisioning", "flash", "--image", str(img), "--device", "/dev/null", "--yes"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 1 and res.stderr.startswith("Error: /dev/null is neither")
