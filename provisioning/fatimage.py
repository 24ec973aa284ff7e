"""The FAT boot partition inside a disk image file, edited without root or loop mounts.

The partition table (MBR, or GPT behind a protective MBR) is parsed here in pure Python; the
FAT file system is read and written by mtools (``mcopy``/``mmd``/``mdir``) at the partition's
byte offset (``image@@offset``), so nothing is ever mounted.
"""

from __future__ import annotations

import logging
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from vfer.cli import UserError

log = logging.getLogger(__name__)

SECTOR = 512
#: MBR partition types of FAT file systems.
FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
GPT_PROTECTIVE = 0xEE
#: GPT type GUIDs a boot partition may carry: EFI system, Microsoft basic data.
GPT_FAT_GUIDS = {
    uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
    uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"),
}
CHUNK = 4 << 20


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # in sectors
    sectors: int
    fat: bool

    @property
    def offset(self) -> int:
        return self.start * SECTOR


def parse_mbr(sector0: bytes) -> list[Partition]:
    """The four primary entries of an MBR (empty ones left out)."""
    if len(sector0) < SECTOR or sector0[510:512] != b"\x55\xaa":
        raise ValueError("no MBR partition table (the image's first sector lacks 55 AA)")
    parts = []
    for i in range(4):
        entry = sector0[446 + 16 * i : 462 + 16 * i]
        ptype = entry[4]
        start, sectors = struct.unpack("<II", entry[8:16])
        if ptype and sectors:
            parts.append(
                Partition(i + 1, start, sectors, ptype in FAT_TYPES or ptype == GPT_PROTECTIVE)
            )
    return parts


def parse_gpt(head: bytes) -> list[Partition]:
    """GPT entries, given at least the image's first 34 sectors."""
    if head[SECTOR : SECTOR + 8] != b"EFI PART":
        raise ValueError("protective MBR without a GPT header")
    entries_lba, count, size = struct.unpack("<QII", head[SECTOR + 72 : SECTOR + 88])
    parts = []
    for i in range(count):
        at = entries_lba * SECTOR + i * size
        entry = head[at : at + size]
        if len(entry) < 56:
            break
        type_guid = uuid.UUID(bytes_le=entry[:16])
        first, last = struct.unpack("<QQ", entry[32:48])
        if type_guid.int:
            parts.append(Partition(i + 1, first, last - first + 1, type_guid in GPT_FAT_GUIDS))
    return parts


def read_partitions(image: Path) -> list[Partition]:
    with open(image, "rb") as fh:
        head = fh.read(SECTOR * 64)
    try:
        parts = parse_mbr(head)
        if len(parts) == 1 and head[446 + 4] == GPT_PROTECTIVE:
            parts = parse_gpt(head)
    except ValueError as exc:
        raise UserError(f"{image}: {exc}") from None
    return parts


def boot_partition(parts: list[Partition]) -> Partition:
    """The first FAT partition: Raspberry Pi OS's boot (firmware) partition."""
    for p in parts:
        if p.fat:
            return p
    raise UserError("the image has no FAT boot partition")


def prepare_image(base: Path, out: Path) -> None:
    """Copy ``base`` to ``out``, decompressing ``.xz`` on the way (never touching ``base``)."""
    if base.resolve() == out.resolve():
        raise UserError("--out must differ from --base; the base image is never modified")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        if base.suffix == ".xz":
            with lzma.open(base, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        else:
            shutil.copyfile(base, tmp)
        os.replace(tmp, out)
    except lzma.LZMAError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{base}: not a valid .xz file: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FatPartition:
    """Files in the FAT partition at ``offset`` bytes inside ``image``, through mtools."""

    def __init__(self, image: Path, offset: int) -> None:
        if shutil.which("mcopy") is None:
            raise UserError("mtools is not installed (apt-get install mtools)")
        self.image = image
        self.drive = f"{image}@@{offset}"
        self._env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    @classmethod
    def boot_of(cls, image: Path) -> FatPartition:
        return cls(image, boot_partition(read_partitions(image)).offset)

    def _run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            list(args), input=stdin, capture_output=True, env=self._env, check=False
        )

    def exists(self, path: str) -> bool:
        return self._run("mdir", "-b", "-i", self.drive, f"::/{path.lstrip('/')}").returncode == 0

    def listdir(self, path: str = "") -> list[str]:
        res = self._run("mdir", "-b", "-i", self.drive, f"::/{path.strip('/')}")
        if res.returncode != 0:
            raise FileNotFoundError(f"{path} not in the boot partition")
        names = [line.rstrip("/").rsplit("/", 1)[-1] for line in res.stdout.decode().splitlines()]
        return sorted(n for n in names if n)

    def read(self, path: str) -> bytes:
        res = self._run("mcopy", "-n", "-i", self.drive, f"::/{path.lstrip('/')}", "-")
        if res.returncode != 0:
            raise FileNotFoundError(
                f"{path} not in the boot partition: {res.stderr.decode().strip()}"
            )
        return res.stdout

    def mkdirs(self, path: str) -> None:
        parts = [p for p in path.strip("/").split("/") if p]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if not self.exists(sub):
                self._check(self._run("mmd", "-i", self.drive, f"::/{sub}"), f"mmd {sub}")

    def write(self, path: str, data: bytes) -> None:
        path = path.lstrip("/")
        if "/" in path:
            self.mkdirs(path.rsplit("/", 1)[0])
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            res = self._run("mcopy", "-o", "-n", "-i", self.drive, tmp.name, f"::/{path}")
        self._check(res, f"write {path}")

    def _check(self, res: subprocess.CompletedProcess[bytes], what: str) -> None:
        if res.returncode != 0:
            msg = res.stderr.decode(errors="replace").strip()
            if "Disk full" in msg or "No free" in msg:
                raise UserError(f"the boot partition is full ({what})")
            raise UserError(f"mtools could not {what} in {self.image}: {msg}")
