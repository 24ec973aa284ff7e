"""arm64 Debian roots for ``make pi-check``: made by debootstrap once, cached, and entered with
chroot under qemu user emulation (binfmt_misc). Root only; nothing here runs on a Pi.

Cache layout (``/var/cache/fedvfer`` by default, ``$FEDVFER_CACHE`` elsewhere)::

    roots/<release>-arm64.tar   the debootstrap result (kept: a fresh root is one untar away)
    roots/<release>-arm64/      the root the check installs the node into and runs it in
    pip/<release>/              pip's cache inside the root (wheels download once)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vfer.cli import UserError

MIRROR = "http://deb.debian.org/debian"
#: What a Raspberry Pi OS Lite image has before our installer runs: Python and CA certificates.
BASE_PACKAGES = ("python3", "ca-certificates")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
CA_IN_ROOT = "/etc/fedvfer-picheck-ca.crt"
#: A systemd stand-in: a chroot has no init; the installer's systemctl calls are logged instead.
SYSTEMCTL_SHIM = '#!/bin/sh\necho "pi-check: systemctl $*" >>/var/log/pi-check-systemctl.log\n'
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_cache() -> Path:
    return Path(os.environ.get("FEDVFER_CACHE", "/var/cache/fedvfer"))


def ensure_emulation() -> None:
    """binfmt_misc mounted and qemu-aarch64 registered (qemu-user-static installed)."""
    if os.geteuid() != 0:
        raise UserError("pi-check needs root (debootstrap, chroot, mounts)")
    for tool in ("debootstrap", "chroot", "mount"):
        if shutil.which(tool) is None:
            raise UserError(f"{tool} missing: apt-get install qemu-user-static debootstrap")
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    if not (BINFMT / "qemu-aarch64").exists():
        if not QEMU_CONF.exists():
            raise UserError("qemu-aarch64 is not registered: apt-get install qemu-user-static")
        (BINFMT / "register").write_text(QEMU_CONF.read_text().strip())


@dataclass(frozen=True)
class Root:
    release: str
    cache: Path

    @property
    def path(self) -> Path:
        return self.cache / "roots" / f"{self.release}-arm64"

    @property
    def tarball(self) -> Path:
        return self.cache / "roots" / f"{self.release}-arm64.tar"

    @property
    def pip_cache(self) -> Path:
        return self.cache / "pip" / self.release


def debootstrap(root: Root, log: Path) -> None:
    """The cached base tarball, made by debootstrap when missing (minutes under emulation)."""
    if root.tarball.exists():
        return
    tmp = root.cache / "roots" / f"{root.release}-arm64.debootstrap"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["debootstrap", "--arch=arm64", "--variant=minbase"]
    cmd += [f"--include={','.join(BASE_PACKAGES)}", root.release, str(tmp), MIRROR]
    with log.open("ab") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)
        part = root.tarball.with_suffix(".tar.part")
        subprocess.run(["tar", "-C", str(tmp), "-cf", str(part), "."], check=True, stderr=fh)
    part.rename(root.tarball)
    shutil.rmtree(tmp, ignore_errors=True)


def unpack(root: Root, *, fresh: bool) -> None:
    """The working root from the tarball (again when ``fresh``), with what the chroot needs."""
    if fresh and root.path.exists():
        shutil.rmtree(root.path)
    if not root.path.exists():
        part = root.path.with_name(root.path.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        subprocess.run(["tar", "-C", str(part), "-xf", str(root.tarball)], check=True)
        part.rename(root.path)
    prepare(root.path)


def prepare(path: Path) -> None:
    """This machine's CA bundle for pip, DNS, localhost, and the systemctl stand-in."""
    ca = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    shutil.copyfile(ca, path / CA_IN_ROOT.lstrip("/"))
    (path / "etc/pip.conf").write_text(f"[global]\ncert = {CA_IN_ROOT}\n")
    shutil.copyfile("/etc/resolv.conf", path / "etc/resolv.conf")
    hosts = path / "etc/hosts"
    if "localhost" not in (hosts.read_text() if hosts.exists() else ""):
        hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
    (path / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    shim = path / "usr/local/bin/systemctl"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(SYSTEMCTL_SHIM)
    shim.chmod(0o755)


@contextlib.contextmanager
def mounted(root: Root) -> Iterator[None]:
    """/proc, /dev and pip's cache inside the root, unmounted again whatever happens.

    Not /sys: under qemu user emulation it describes the host's x86 CPUs, and XNNPACK's cpuinfo
    (LiteRT's default delegate) crashes the process on it (SIGSEGV, qemu 7.2). Without /sys it
    says "Error in cpuinfo" and LiteRT runs its builtin kernels; a real Pi has its own /sys."""
    root.pip_cache.mkdir(parents=True, exist_ok=True)
    pip_dir = root.path / "root/.cache/pip"
    pip_dir.mkdir(parents=True, exist_ok=True)
    mounts = [
        (["-t", "proc", "proc"], root.path / "proc"),
        (["--bind", "/dev"], root.path / "dev"),
        (["--bind", "/dev/pts"], root.path / "dev/pts"),
        (["--bind", str(root.pip_cache)], pip_dir),
    ]
    done: list[Path] = []
    try:
        for args, target in mounts:
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *args, str(target)], check=True)
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            if subprocess.run(["umount", str(target)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], check=False)


def chroot_cmd(root: Root, script: str) -> list[str]:
    """``bash -c script`` inside the root with a clean environment (as root, like the installer)."""
    env = [f"PATH={CHROOT_PATH}", "HOME=/root", "LANG=C.UTF-8", "TF_CPP_MIN_LOG_LEVEL=3"]
    env += ["DEBIAN_FRONTEND=noninteractive", f"PIP_CERT={CA_IN_ROOT}"]
    return ["chroot", str(root.path), "/usr/bin/env", "-i", *env, "bash", "-c", script]
