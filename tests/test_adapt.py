"""Overnight personalization: selection through the real store, fine-tuning, atomic switch, rollback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_node.bundles import BundleHome
from edge_node.personalization.params import AdaptParams
from edge_node.personalization.run import StoreClips, adapt
from edge_node.store import ClipStore, NewClip
from tests.support.bundles import build_bundle
from vfer.bundle import VFER_STEP, Bundle, BundleError

pytestmark = pytest.mark.slow
CLASSES = ("happiness", "sadness", "anger", "neutral")


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory, backbone_src: Path) -> Path:
    return build_bundle(tmp_path_factory.mktemp("central") / "bundle", CLASSES, seed=7).path


def fill_store(
    db: Path,
    bundle_id: str,
    confident: dict[int, int],
    unsure: int,
    seed: int = 0,
    pseudo: dict[int, int] | None = None,
    conf: float = 0.7,
) -> None:
    """Clips whose IFER frames favour a class (confident) or nothing (unsure); embeddings differ per class.

    ``pseudo`` maps a clip's true class (its embeddings) to the class its IFER favours (scrambled
    pseudo labels); ``conf`` is that class's probability. The same seed gives the same classes'
    embedding centres, so two calls add to one world."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    centers = np.abs(rng.normal(0, 1, (k, 1280))).astype(np.float32)
    with ClipStore(db) as store:
        t0 = time.time() - 3600
        plan = [(c, True) for c, n in confident.items() for _ in range(n)] + [(0, False)] * unsure
        for i, (c, sure) in enumerate(plan):
            t = int(rng.integers(40, 90))
            emb = np.abs(centers[c] + rng.normal(0, 0.3, (t, 1280))).astype(np.float32)
            ifer = np.full((t, k), (1 - conf) / (k - 1) if sure else 1 / k, np.float32)
            if sure:
                ifer[:, (pseudo or {}).get(c, c)] = conf
                ifer += rng.uniform(0, 0.05, ifer.shape).astype(np.float32)
                ifer /= ifer.sum(axis=1, keepdims=True)
            store.add_clip(
                NewClip(
                    started_at=t0 + i * 10,
                    ended_at=t0 + i * 10 + t / 15,
                    face_ratio=1.0,
                    bundle_id=bundle_id,
                    classes=CLASSES,
                    times=np.arange(t) / 15,
                    embeddings=emb,
                    ifer=ifer,
                    vfer_probs=np.full(k, 1 / k, np.float32),
                )
            )


def node_copy(central: Path, tmp_path: Path) -> Path:
    b = tmp_path / "node" / "bundle"
    shutil.copytree(central, b)
    return b


def test_adapt_selects_per_rule_switches_and_rolls_back(central: Path, tmp_path: Path) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    fill_store(db, Bundle.load(b).bundle_id, confident={0: 5, 1: 3, 2: 1}, unsure=4)
    old_step = (b / VFER_STEP).read_bytes()
    with ClipStore(db) as store:
        r = adapt(StoreClips(store), b, AdaptParams(p=4, p_threshold=0.5, min_clips=4, balance=0))
    assert r.status == "adapted", r.reason  # the paper's rule (balance 0): top P per class
    assert r.selected_per_class == {"happiness": 4, "sadness": 3, "anger": 1, "neutral": 0}
    assert r.candidates_per_class == {"happiness": 5, "sadness": 3, "anger": 1, "neutral": 0}
    assert r.below_threshold == 4 and r.clips_total == 13
    assert r.loss_after is not None and r.loss_before is not None and r.loss_after <= r.loss_before
    assert b.is_symlink()
    active = BundleHome(b).active()
    assert active.manifest.personalized and active.manifest.parent == "central-r0"
    assert (active.path / VFER_STEP).read_bytes() != old_step and r.step_changed
    assert set(r.trainable) and sum(a.size for a in r.trainable.values()) == 208_452  # K=4
    # the next night starts again from the central v, not from last night's head
    assert BundleHome(b).central().manifest.head_version == "central-r0"
    assert BundleHome(b).rollback().startswith("central-r0")
    assert (BundleHome(b).active().path / VFER_STEP).read_bytes() == old_step


def test_too_few_clips_is_skipped_and_says_so(central: Path, tmp_path: Path) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    fill_store(db, Bundle.load(b).bundle_id, confident={1: 2}, unsure=3)
    with ClipStore(db) as store:
        r = adapt(StoreClips(store), b, AdaptParams(min_clips=4))
    assert r.status == "skipped" and "only 2 clips" in r.reason
    assert not b.is_symlink()  # nothing was touched


def test_worse_fit_is_rejected_and_central_kept(central: Path, tmp_path: Path) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    fill_store(db, Bundle.load(b).bundle_id, confident={0: 4, 3: 4}, unsure=0)
    with ClipStore(db) as store:
        # a huge learning rate wrecks the head: the guard must notice it fits worse
        r = adapt(StoreClips(store), b, AdaptParams(lr=50.0, epochs=3, min_clips=2))
    assert r.status == "rejected", r.reason
    assert "worse" in r.reason or "NaN" in r.reason
    assert BundleHome(b).active().manifest.head_version == "central-r0"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edge_node", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
    )


@pytest.mark.parametrize(
    "crash_at", ["adopt-before-move", "adopt-after-move", "switch-before-link"]
)
def test_kill_9_during_the_switch_leaves_a_bundle_that_verifies(
    central: Path, tmp_path: Path, crash_at: str
) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    fill_store(db, Bundle.load(b).bundle_id, confident={0: 3, 1: 3}, unsure=0)
    out = run_cli("adapt", "--db", str(db), "--bundle", str(b), env={"FEDVFER_CRASH_AT": crash_at})
    assert out.returncode == -signal.SIGKILL, out.stderr
    loaded = BundleHome(b).active()  # repairs an interrupted adoption; verifies every hash
    assert loaded.manifest.head_version.startswith(("central-r0", "local-"))
    # and the node can personalize again afterwards
    again = run_cli("adapt", "--db", str(db), "--bundle", str(b), "--json")
    assert again.returncode == 0, again.stderr
    assert '"status": "adapted"' in again.stdout
    assert BundleHome(b).active().manifest.personalized


def test_adapt_cli_prints_selection_and_model_rollback(central: Path, tmp_path: Path) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    fill_store(db, Bundle.load(b).bundle_id, confident={0: 2, 2: 3}, unsure=1)
    out = run_cli("adapt", "--db", str(db), "--bundle", str(b), "--p", "2", "--min-clips", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split() == ["happiness", "2", "2"] for line in lines)
    assert any(line.split() == ["anger", "3", "2"] for line in lines)
    assert any(line.startswith("adapted: fine-tuned on 4 clips") for line in lines)
    back = run_cli("model", "rollback", "--bundle", str(b))
    assert back.returncode == 0 and "central-r0" in back.stdout
    none_left = run_cli("model", "rollback", "--bundle", str(b))
    assert (
        none_left.returncode == 0
    )  # previous is now the local one: rolling forward again is allowed
    missing = run_cli("adapt", "--db", str(tmp_path / "nope.db"), "--bundle", str(b))
    assert (
        missing.returncode == 1
        and "Error: " in missing.stderr
        and "no such database" in missing.stderr
    )


def test_unmanaged_missing_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no model bundle"):
        BundleHome(tmp_path / "nothing").resolve()


def test_nightly_mode_runs_once_a_night(central: Path, tmp_path: Path) -> None:
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    fill_store(db, Bundle.load(b).bundle_id, confident={0: 3, 1: 3}, unsure=0)
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"bundle: {b}\ndb: {db}\nadaptation:\n  min_clips: 2\n  window_start: '00:00'\n")
    first = run_cli("adapt", "--config", str(cfg), "--nightly")
    assert first.returncode == 0 and "adapted:" in first.stdout, first.stderr
    again = run_cli("adapt", "--config", str(cfg), "--nightly")
    assert again.returncode == 0 and "already done" in again.stdout
    assert len(list((tmp_path / "node" / "bundle.versions").glob("local-*"))) == 1


def test_each_bundle_is_verified_once_per_installed_version(
    central: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: adapt, switch, reload, poll: no bundle is hashed in full more than once."""
    from collections import Counter

    from edge_node.pipeline import Models

    verified: Counter[str] = Counter()
    real_verify = Bundle.verify

    def counting(self: Bundle) -> None:
        verified[self.bundle_id] += 1
        real_verify(self)

    monkeypatch.setattr(Bundle, "verify", counting)
    import vfer.bundle as vb

    hashed: Counter[str] = Counter()
    real_sha = vb.file_sha256

    def counting_sha(path: Path) -> str:
        hashed[str(path)] += 1
        return real_sha(path)

    monkeypatch.setattr(vb, "file_sha256", counting_sha)
    b = node_copy(central, tmp_path)
    db = tmp_path / "node.db"
    Models.load(b).close()  # the node starts on the provisioned (plain) bundle
    fill_store(db, BundleHome(b).active().bundle_id, confident={0: 3, 1: 3}, unsure=0)
    with ClipStore(db) as store:
        r = adapt(StoreClips(store), b, AdaptParams(min_clips=2))
    assert r.status == "adapted", r.reason
    home = BundleHome(b)
    hashes_before = sum(hashed.values())
    assert hashes_before and max(hashed.values()) <= 2  # written (hash), then verified once
    for _ in range(20):  # what the node and the personalizer do every clip / every 0.5 s
        Models.load(b).close()
        home.central()
        home.central_version()
    assert sum(hashed.values()) == hashes_before  # reads hash no file
    home.rollback()
    home.rollback()
    assert len(verified) == 2 and set(verified.values()) == {1}, verified
    assert sum(hashed.values()) == hashes_before
