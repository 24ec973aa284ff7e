"""The node's bundles: the active one, the previous one (rollback) and the central base.

The node is configured with one bundle path ``B``. Once the node manages versions, ``B`` is a
symlink into ``B.versions/``, switched atomically (a new symlink renamed over the old one), so a
power cut leaves the old or the new bundle, never a broken one::

    bundle -> bundle.versions/local-20261126T030001-3f2a9c     (what the node runs)
    bundle.versions/
      state.json            {"active": ..., "previous": ..., "central": ...} (atomic writes)
      central-r0-91ab02/     the central bundle personalization starts from
      local-20261126T030001-3f2a9c/

A provisioned ``B`` that is still a plain folder is adopted on the first switch: it is moved into
``B.versions/`` and replaced by a symlink. ``state.json`` is written first, so if power fails
between the two renames, :func:`resolve` re-creates the symlink from it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from vfer.atomic import atomic_write_text, fsync_dir
from vfer.bundle import MANIFEST, Bundle, BundleError

log = logging.getLogger(__name__)
KEEP_VERSIONS = 4


@dataclass
class HomeState:
    active: str | None = None
    previous: str | None = None
    central: str | None = None


def versions_dir(bundle: Path) -> Path:
    return bundle.parent / f"{bundle.name}.versions"


def read_state(bundle: Path) -> HomeState:
    p = versions_dir(bundle) / "state.json"
    if not p.is_file():
        return HomeState()
    data = json.loads(p.read_text())
    return HomeState(**{k: data.get(k) for k in ("active", "previous", "central")})


def _write_state(bundle: Path, state: HomeState) -> None:
    atomic_write_text(
        versions_dir(bundle) / "state.json", json.dumps(asdict(state), indent=2) + "\n"
    )


def _crash_point(name: str) -> None:
    """Fault injection for the power-cut tests: FEDVFER_CRASH_AT=<name> kills the process here."""
    if os.environ.get("FEDVFER_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def resolve(bundle: Path) -> Path:
    """The folder the node should load for ``bundle``, repairing an interrupted switch."""
    if bundle.is_symlink() or (bundle / MANIFEST).is_file():
        return bundle.resolve()
    state = read_state(bundle)
    if not bundle.exists() and state.active and (versions_dir(bundle) / state.active).is_dir():
        log.warning(
            "bundle %s missing after an interrupted switch: restoring it to %s",
            bundle,
            state.active,
        )
        _point(bundle, state.active)
        return bundle.resolve()
    raise BundleError(
        f"{bundle}: no model bundle here (make one with `python -m training export-bundle`)"
    )


def load_active(bundle: Path) -> Bundle:
    return Bundle.load(resolve(bundle))


def _point(bundle: Path, version: str) -> None:
    tmp = bundle.parent / f".{bundle.name}.link-tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(Path(versions_dir(bundle).name) / version, tmp)
    os.replace(tmp, bundle)
    fsync_dir(bundle.parent)


def _adopt(bundle: Path) -> str:
    """Move a plain bundle folder into the versions folder; returns its version name."""
    b = Bundle.load(bundle)
    name = f"{b.manifest.head_version}-{b.bundle_id[:6]}"
    vdir = versions_dir(bundle)
    vdir.mkdir(exist_ok=True)
    state = read_state(bundle)
    state.active = name
    state.central = state.central or (name if not b.manifest.personalized else None)
    _write_state(bundle, state)
    _crash_point("adopt-before-move")
    os.rename(bundle, vdir / name)
    _crash_point("adopt-after-move")
    _point(bundle, name)
    return name


def ensure_managed(bundle: Path) -> HomeState:
    """Make ``bundle`` a managed symlink (adopting a plain folder) and return the state."""
    resolve(bundle)
    if not bundle.is_symlink():
        _adopt(bundle)
    state = read_state(bundle)
    if state.active is None:
        state.active = Path(os.readlink(bundle)).name
        _write_state(bundle, state)
    return state


def central_bundle(bundle: Path) -> Bundle:
    """The central bundle personalization starts from (the active one if none is recorded)."""
    state = read_state(bundle)
    if state.central and (versions_dir(bundle) / state.central).is_dir():
        return Bundle.load(versions_dir(bundle) / state.central)
    return load_active(bundle)


def new_version_path(bundle: Path, name: str) -> Path:
    vdir = versions_dir(bundle)
    vdir.mkdir(parents=True, exist_ok=True)
    return vdir / name


def switch_to(bundle: Path, version: str, *, central: bool = False) -> None:
    """Atomically make ``B.versions/<version>`` the active bundle; the old one becomes previous."""
    state = ensure_managed(bundle)
    target = versions_dir(bundle) / version
    Bundle.load(target)  # never switch to something that does not verify
    state.previous, state.active = state.active, version
    if central:
        state.central = version
    _write_state(bundle, state)
    _crash_point("switch-before-link")
    _point(bundle, version)
    log.info("bundle %s now -> %s (previous %s)", bundle, version, state.previous)
    _prune(bundle, state)


def set_central(bundle: Path, version: str) -> None:
    """Record a newer central bundle as the base for the next personalization (display unchanged)."""
    state = ensure_managed(bundle)
    Bundle.load(versions_dir(bundle) / version)
    state.central = version
    _write_state(bundle, state)
    _prune(bundle, state)


def rollback(bundle: Path) -> str:
    """Go back to the previous bundle; returns the version now active."""
    state = ensure_managed(bundle)
    if not state.previous or not (versions_dir(bundle) / state.previous).is_dir():
        raise BundleError(f"{bundle}: no previous bundle to roll back to")
    target = state.previous
    switch_to(bundle, target)
    return target


def _prune(bundle: Path, state: HomeState) -> None:
    """Keep the active, previous and central versions and the newest few others."""
    vdir = versions_dir(bundle)
    keep = {v for v in (state.active, state.previous, state.central) if v}
    others = sorted(
        (
            p
            for p in vdir.iterdir()
            if p.is_dir() and p.name not in keep and not p.name.startswith(".")
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[KEEP_VERSIONS:]:
        shutil.rmtree(old, ignore_errors=True)
