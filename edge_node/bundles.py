"""The node's bundles and what is installed, owned by one object: :class:`BundleHome`.

The node is configured with one bundle path ``B``. Once the node manages versions, ``B`` is a
symlink into ``B.versions/``, switched atomically (a new symlink renamed over the old one), so a
power cut leaves the old or the new bundle, never a broken one::

    bundle -> bundle.versions/local-20261126T030001-3f2a9c     (what the node runs)
    bundle.versions/
      installed.json        the one file that says what is installed (atomic writes, see Installed;
                            an older node's ``state.json`` is read until the next write replaces it)
      .lock                 flock: the node, the adaptation child and the timer take turns
      central-r0-91ab02/     the central bundle personalization starts from
      local-20261126T030001-3f2a9c/

A provisioned ``B`` that is still a plain folder is adopted on the first switch: it is moved into
``B.versions/`` and replaced by a symlink. ``installed.json`` is written first, so if power fails
between the two renames, :meth:`BundleHome.resolve` re-creates the symlink from it.

Verification: a version is verified in full (every sha256, K across heads and weights) once, when
it is written or adopted, and its bundle id is recorded in ``installed.json``. Reads after that
parse the manifest and compare its hash with the recorded id, which is cheap. A folder the home did not
install (a plain, unmanaged bundle) is verified once per process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vfer.atomic import atomic_write_text, fsync_dir
from vfer.bundle import MANIFEST, Bundle, BundleError, write_files

log = logging.getLogger(__name__)
KEEP_VERSIONS = 4
INSTALLED_FILE = "installed.json"
#: what ``installed.json`` was called before (read once, removed at the next write)
LEGACY_INSTALLED_FILE = "state.json"
ROUNDS_REMEMBERED = 50

#: bundle ids verified in full by this process, by resolved folder (unmanaged bundles)
_VERIFIED_HERE: dict[str, str] = {}


@dataclass
class Installed:
    """``installed.json``: which versions are active, previous and central, and federation progress."""

    active: str | None = None
    previous: str | None = None
    central: str | None = None
    #: federation version of the installed central (0: the provisioned bundle, never received)
    central_version: int = 0
    rounds_done: list[int] = field(default_factory=list)  # rounds this node has submitted for
    night_done: str | None = None  # the night (YYYY-MM-DD) the nightly adaptation last ran
    verified: dict[str, str] = field(default_factory=dict)  # version -> bundle id verified

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Installed:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def versions_dir(bundle: Path) -> Path:
    return bundle.parent / f"{bundle.name}.versions"


def _crash_point(name: str) -> None:
    """Fault injection for the power-cut tests: FEDVFER_CRASH_AT=<name> kills the process here."""
    if os.environ.get("FEDVFER_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


class BundleHome:
    """The bundle path ``B``, its versions folder and ``installed.json``; see the module docstring."""

    def __init__(self, bundle: str | os.PathLike[str]) -> None:
        self.link = Path(bundle)
        self.versions = versions_dir(self.link)
        self.installed_file = self.versions / INSTALLED_FILE

    # -- installed.json -------------------------------------------------------------------
    def installed(self) -> Installed:
        """``installed.json`` (an older node's ``state.json`` until the first write)."""
        for path in (self.installed_file, self.versions / LEGACY_INSTALLED_FILE):
            if path.is_file():
                return Installed.from_json(json.loads(path.read_text()))
        return Installed()

    def _write_installed(self, rec: Installed) -> None:
        self.versions.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.installed_file, json.dumps(asdict(rec), indent=2) + "\n")
        (self.versions / LEGACY_INSTALLED_FILE).unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (node, adaptation child, nightly timer)."""
        self.versions.mkdir(parents=True, exist_ok=True)
        with open(self.versions / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading ------------------------------------------------------------------------------
    def resolve(self) -> Path:
        """The folder the node should load, repairing an interrupted switch."""
        bundle = self.link
        if bundle.is_symlink() or (bundle / MANIFEST).is_file():
            return bundle.resolve()
        rec = self.installed()
        if not bundle.exists() and rec.active and (self.versions / rec.active).is_dir():
            log.warning(
                "bundle %s missing after an interrupted switch: restoring it to %s",
                bundle,
                rec.active,
            )
            self._point(rec.active)
            return bundle.resolve()
        raise BundleError(
            f"{bundle}: no model bundle here (make one with `python -m training export-bundle`)"
        )

    def open(self, folder: str | os.PathLike[str]) -> Bundle:
        """The bundle in ``folder``: verified in full only if nobody has verified it before."""
        path = Path(os.path.realpath(folder))
        bundle = Bundle.load(path, verify=False)  # parses the manifest and hashes it
        mine = path.parent == Path(os.path.realpath(self.versions))
        recorded = self.installed().verified.get(path.name) if mine else None
        if bundle.bundle_id in (recorded, _VERIFIED_HERE.get(str(path))):
            return bundle
        bundle.verify()
        _VERIFIED_HERE[str(path)] = bundle.bundle_id
        return bundle

    def active(self) -> Bundle:
        return self.open(self.resolve())

    def central(self) -> Bundle:
        """The central bundle personalization starts from (the active one if none is recorded)."""
        rec = self.installed()
        if rec.central and (self.versions / rec.central).is_dir():
            return self.open(self.versions / rec.central)
        return self.active()

    def central_version(self) -> int:
        return self.installed().central_version

    # -- writing ------------------------------------------------------------------------------
    def write_version(
        self, name: str, files: Mapping[str, bytes | Path], **manifest: Any
    ) -> Bundle:
        """Write a new version folder (verified once, here) and record it; not yet active."""
        self.ensure_managed()
        bundle = write_files(self.versions / name, files, **manifest)  # verifies it
        with self._locked():
            rec = self.installed()
            rec.verified[name] = bundle.bundle_id
            self._write_installed(rec)
        return bundle

    def has_version(self, name: str) -> bool:
        return (self.versions / name).is_dir()

    def ensure_managed(self) -> Installed:
        """Make ``B`` a managed symlink (adopting a plain folder) and return what is installed."""
        self.resolve()
        with self._locked():
            if not self.link.is_symlink():
                self._adopt()
            rec = self.installed()
            if rec.active is None:
                rec.active = Path(os.readlink(self.link)).name
                self._write_installed(rec)
        return rec

    def _adopt(self) -> str:
        """Move a plain bundle folder into the versions folder; returns its version name."""
        b = self.open(self.link)  # verified in full once (not again if this process did)
        name = f"{b.manifest.head_version}-{b.bundle_id[:6]}"
        rec = self.installed()
        rec.active = name
        if not b.manifest.personalized and rec.central is None:
            rec.central = name
            rec.central_version = int(b.manifest.notes.get("central_version", "0"))
        rec.verified[name] = b.bundle_id
        self._write_installed(rec)
        _crash_point("adopt-before-move")
        os.rename(self.link, self.versions / name)
        _crash_point("adopt-after-move")
        self._point(name)
        return name

    def _point(self, version: str) -> None:
        tmp = self.link.parent / f".{self.link.name}.link-tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(Path(self.versions.name) / version, tmp)
        os.replace(tmp, self.link)
        fsync_dir(self.link.parent)

    def switch_to(
        self,
        version: str,
        *,
        central: bool = False,
        central_version: int | None = None,
        night_done: str | None = None,
    ) -> None:
        """Atomically make ``B.versions/<version>`` active; the old one becomes previous.

        ``night_done`` records the night's adaptation in the same write, so nobody ever sees
        tonight's head active while the night is not yet marked done.
        """
        self.ensure_managed()
        self.open(self.versions / version)  # never switch to something that does not verify
        with self._locked():
            rec = self.installed()
            rec.previous, rec.active = rec.active, version
            if central:
                rec.central = version
                if central_version is not None:
                    rec.central_version = central_version
            if night_done is not None:
                rec.night_done = night_done
            self._write_installed(rec)
            _crash_point("switch-before-link")
            self._point(version)
            self._prune(rec)
        log.info("bundle %s now -> %s (previous %s)", self.link, version, rec.previous)

    def set_central(self, version: str, central_version: int) -> None:
        """Record a newer central as the next personalization's base (display unchanged)."""
        self.ensure_managed()
        self.open(self.versions / version)
        with self._locked():
            rec = self.installed()
            rec.central, rec.central_version = version, central_version
            self._write_installed(rec)
            self._prune(rec)

    def rollback(self) -> str:
        """Go back to the previous bundle; returns the version now active."""
        rec = self.ensure_managed()
        if not rec.previous or not (self.versions / rec.previous).is_dir():
            raise BundleError(f"{self.link}: no previous bundle to roll back to")
        target = rec.previous
        self.switch_to(target)
        return target

    def forget_personalized(self, why: str) -> list[str]:
        """Drop every personalized head (all were built from clips that are now forgotten).

        The display goes back to the central head, and the personalized version folders are
        deleted, so neither ``previous`` nor a rollback can bring one back. Returns the versions
        dropped. A plain (unmanaged) bundle is never personalized: nothing to do.
        """
        if not self.link.is_symlink():
            return []
        rec = self.installed()
        if self.active().manifest.personalized:
            if not rec.central or not (self.versions / rec.central).is_dir():
                raise BundleError(f"{self.link}: no central bundle to go back to")
            self.switch_to(rec.central)
        dropped = []
        with self._locked():
            rec = self.installed()
            for folder in sorted(p for p in self.versions.iterdir() if p.is_dir()):
                if folder.name.startswith(".") or folder.name in (rec.active, rec.central):
                    continue
                try:
                    personalized = Bundle.load(folder, verify=False).manifest.personalized
                except BundleError:
                    personalized = True  # unreadable: it goes too
                if personalized:
                    shutil.rmtree(folder, ignore_errors=True)
                    rec.verified.pop(folder.name, None)
                    dropped.append(folder.name)
            if rec.previous in dropped:
                rec.previous = None
            self._write_installed(rec)
        if dropped:
            log.info("forgot personalized heads %s (%s); showing %s", dropped, why, rec.active)
        return dropped

    # -- federation progress (was <db>.personalizer.json) ---------------------------------------
    def rounds_done(self) -> list[int]:
        return self.installed().rounds_done

    def mark_round_done(self, round_id: int) -> None:
        with self._locked():
            rec = self.installed()
            rec.rounds_done = [*rec.rounds_done, round_id][-ROUNDS_REMEMBERED:]
            self._write_installed(rec)

    def night_done(self) -> str | None:
        return self.installed().night_done

    def mark_night_done(self, night: str) -> None:
        with self._locked():
            rec = self.installed()
            rec.night_done = night
            self._write_installed(rec)

    def adopt_legacy_memo(self, db: Path) -> bool:
        """Fold an older node's ``<db>.personalizer.json`` (rounds and night done) into ``installed.json``.

        Renamed to ``.migrated`` afterwards, so it is read once; True when there was one.
        """
        legacy = Path(f"{db}.personalizer.json")
        try:
            data = json.loads(legacy.read_text())
        except (OSError, ValueError):
            return False
        rounds = [int(r) for r in data.get("rounds_done", []) if isinstance(r, int)]
        night = data.get("night_done") if isinstance(data.get("night_done"), str) else None
        with self._locked():
            rec = self.installed()
            rec.rounds_done = sorted(set(rec.rounds_done) | set(rounds))[-ROUNDS_REMEMBERED:]
            rec.night_done = max(filter(None, (rec.night_done, night)), default=None)
            self._write_installed(rec)
        legacy.rename(legacy.with_name(legacy.name + ".migrated"))
        log.info("moved %s into %s", legacy, self.installed_file)
        return True

    def _prune(self, rec: Installed) -> None:
        """Keep the active, previous and central versions and the newest few others."""
        keep = {v for v in (rec.active, rec.previous, rec.central) if v}
        others = sorted(
            (
                p
                for p in self.versions.iterdir()
                if p.is_dir() and p.name not in keep and not p.name.startswith(".")
            ),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in others[KEEP_VERSIONS:]:
            shutil.rmtree(old, ignore_errors=True)
            rec.verified.pop(old.name, None)
        if len(others) > KEEP_VERSIONS:
            self._write_installed(rec)
