"""Write a node image to an SD card, refusing anything that could be the wrong disk.

The checks are pure over :class:`DeviceFacts` (a ``/sys/block`` folder, the mounts table and the
disk that backs ``/``), so tests feed a fake ``/sys`` and mounts table. A regular file stands in
for a device (tests, or preparing an image to copy elsewhere): it is written and verified the
same way, without the device checks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vfer.cli import UserError

log = logging.getLogger(__name__)

CHUNK = 4 << 20


@dataclass(frozen=True)
class DeviceFacts:
    sys_block: Path
    mounts: str  # the text of /proc/mounts
    root_source: str | None  # the device backing / (from the mounts table), if any

    @classmethod
    def from_system(cls) -> DeviceFacts:
        mounts = Path("/proc/mounts").read_text()
        source = root_source(mounts)
        if source is None:  # / on an overlay or a device-mapper name: ask the kernel
            st = os.stat("/")
            link = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
            if link.exists():
                source = f"/dev/{link.resolve().name}"
        return cls(Path("/sys/block"), mounts, source)


def root_source(mounts: str) -> str | None:
    """The source device of ``/`` in a mounts table, when it is a /dev node."""
    found = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "/" and parts[0].startswith("/dev/"):
            found = parts[0]  # the last mount on / wins
    return found


def disk_of(name: str, sys_block: Path) -> str | None:
    """The whole disk a kernel block name belongs to (``sdb1`` -> ``sdb``), or None."""
    if (sys_block / name).is_dir():
        return name
    if sys_block.is_dir():
        for disk in sorted(sys_block.iterdir()):
            if (disk / name).is_dir():
                return disk.name
    return None


def _dev_name(path: str) -> str:
    return Path(os.path.realpath(path)).name


def refusal(device: str, facts: DeviceFacts) -> str | None:
    """Why ``device`` (``/dev/sdb``) must not be written, or None when it may be."""
    name = _dev_name(device)
    disk = disk_of(name, facts.sys_block)
    if disk is None:
        return f"{device} is not a block device known to the kernel ({facts.sys_block})"
    if disk != name:
        return f"{device} is a partition; give the whole card (/dev/{disk})"
    removable = facts.sys_block / disk / "removable"
    try:
        flag = removable.read_text().strip()
    except OSError:
        flag = "?"
    if flag != "1":
        return f"{device} is not a removable device ({removable} is {flag!r})"
    if facts.root_source and disk_of(_dev_name(facts.root_source), facts.sys_block) == disk:
        return f"{device} holds the running system (/ is on {facts.root_source})"
    for line in facts.mounts.splitlines():
        parts = line.split()
        on_disk = len(parts) >= 2 and parts[0].startswith("/dev/")
        if on_disk and disk_of(_dev_name(parts[0]), facts.sys_block) == disk:
            return f"{device} is mounted ({parts[0]} on {parts[1]}); unmount it first"
    return None


def device_size(device: str, sys_block: Path) -> int | None:
    try:
        return int((sys_block / _dev_name(device) / "size").read_text()) * 512
    except (OSError, ValueError):
        return None


def check_target(device: Path, facts: DeviceFacts) -> bool:
    """Raise UserError when ``device`` may not be written; True for a real block device."""
    try:
        mode = os.stat(device).st_mode
    except FileNotFoundError:
        raise UserError(f"{device} does not exist") from None
    if stat.S_ISREG(mode):
        log.info("%s is a regular file: writing it as a stand-in for a device", device)
        return False
    if not stat.S_ISBLK(mode):
        raise UserError(f"{device} is neither a block device nor a regular file")
    why = refusal(str(device), facts)
    if why:
        raise UserError(f"refusing to flash: {why}")
    return True


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def flash(
    image: Path,
    device: Path,
    *,
    facts: DeviceFacts | None = None,
    progress: bool = True,
) -> str:
    """Write ``image`` to ``device``, sync, read it back and compare SHA-256; returns the hash."""
    if not image.is_file():
        raise UserError(f"image {image} is not a file")
    if image.suffix == ".xz":
        raise UserError("flash takes the .img that `image` wrote, not a .xz")
    facts = facts or DeviceFacts.from_system()
    is_block = check_target(device, facts)
    size = image.stat().st_size
    if is_block:
        capacity = device_size(str(device), facts.sys_block)
        if capacity is not None and capacity < size:
            raise UserError(f"{device} holds {capacity} bytes, the image needs {size}")
    want = hashlib.sha256()
    flags = os.O_WRONLY | (os.O_EXCL if is_block else 0)
    with _progress(progress) as bar:
        task = bar.add_task(f"writing {device}", total=size)
        fd = os.open(device, flags)
        try:
            with open(image, "rb") as src:
                while chunk := src.read(CHUNK):
                    want.update(chunk)
                    _write_all(fd, chunk)
                    bar.advance(task, len(chunk))
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        bar.update(task, description=f"verifying {device}", completed=0)
        got = _read_back(device, size, lambda n: bar.advance(task, n))
    if got != want.hexdigest():
        raise UserError(
            f"verification failed: {device} reads back {got}, image is {want.hexdigest()}"
        )
    log.info("flashed %s to %s, sha256 %s verified", image, device, got)
    return got


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_back(device: Path, size: int, advance: Callable[[int], None]) -> str:
    h = hashlib.sha256()
    left = size
    with open(device, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            advance(len(chunk))
            left -= len(chunk)
    return h.hexdigest()
