"""`make pi-check`'s pure parts: the packages come from the Pi installer's own list (with what
opencv-contrib needs), the installer carries the face detector, and the table it prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning import cloudinit as ci
from provisioning import picheck, picheck_inputs
from provisioning.installer import FACE_MODEL_URL, install_sh


def test_the_installer_installs_what_import_cv2_needs() -> None:
    # opencv-contrib-python's wheel loads libxcb.so.1, libGL.so.1 and glib (issue 25)
    assert {"libxcb1", "libgl1", "libglib2.0-0"} <= set(ci.DEFAULT_PACKAGES)
    script = install_sh(ci.ImageSpec(node="pi-1", hostname="pi-1", instance_id="x"))
    apt = next(line for line in script.splitlines() if line.startswith("apt-get install"))
    assert apt.split()[4:] == list(ci.DEFAULT_PACKAGES)


def test_pi_check_installs_the_installer_list_less_the_pi_archive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = picheck_inputs.installer_spec("pi-bookworm", "fedvfer-0.1.0-py3-none-any.whl")
    assert spec.packages == tuple(p for p in ci.DEFAULT_PACKAGES if p != "python3-picamera2")
    assert not spec.kiosk and spec.package_file == "fedvfer-0.1.0-py3-none-any.whl"
    # taken from the installer's tuple when it runs, not a copy of it
    monkeypatch.setattr(ci, "DEFAULT_PACKAGES", (*ci.DEFAULT_PACKAGES, "libfoo1"))
    assert picheck_inputs.installer_spec("n", "w.whl").packages[-1] == "libfoo1"
    assert ci.debian_packages(("python3-picamera2", "curl")) == ("curl",)


def test_the_installer_puts_the_face_detector_beside_the_bundle() -> None:
    from vfer.faces import MODEL_URL

    assert FACE_MODEL_URL == MODEL_URL
    script = install_sh(ci.ImageSpec(node="pi-1", hostname="pi-1", instance_id="x"))
    assert '"$SRC/models/face_detection_short_range.tflite"' in script
    assert "/var/lib/fedvfer/models/face_detection_short_range.tflite" in script
    assert script.index("models/face_detection") < script.index("touch /var/lib/fedvfer/.installed")


def test_the_table_shows_versions_each_step_and_the_verdict() -> None:
    report = picheck.Report(
        "bookworm", "aarch64", "3.11.2", {"numpy": "2.3.5", "tensorflow": "2.21.0"}
    )
    report.steps += [
        picheck.Step("install (the Pi installer)", True, 812.4, "ok"),
        picheck.Step("run: CREMA-D clip", False, 12.0, "exit 1: no | bundle\nhere"),
    ]
    text = picheck.render(report)
    assert text.startswith("### bookworm (Raspberry Pi OS 12), arm64 under qemu")
    assert "Python 3.11.2; aarch64" in text and "numpy 2.3.5; tensorflow 2.21.0" in text
    assert "| install (the Pi installer) | ok | 812 | ok |" in text
    assert "| run: CREMA-D clip | FAILED | 12 | exit 1: no / bundle here |" in text
    assert text.rstrip().endswith("bookworm: FAILED") and not report.ok
    report.steps.pop()
    assert report.ok and picheck.render(report).rstrip().endswith("all steps passed")
    assert not picheck.Report("trixie").ok  # no steps run is no pass


def test_step_notes_read_the_node_output() -> None:
    assert picheck.last_line("a\n\n2 clips saved\n") == "2 clips saved"
    assert picheck._adapt_note('{"status": "adapted", "selected_per_class": {"a": 1, "b": 2}}') == (
        "status adapted, selected 3"
    )
    assert picheck._adapt_note("not json\nlast") == "last"


def test_a_root_gets_the_ca_for_pip_localhost_and_a_logged_systemctl(tmp_path: Path) -> None:
    from provisioning import piroot

    (tmp_path / "etc").mkdir()
    piroot.prepare(tmp_path)
    assert (tmp_path / "etc/pip.conf").read_text() == f"[global]\ncert = {piroot.CA_IN_ROOT}\n"
    assert (tmp_path / piroot.CA_IN_ROOT.lstrip("/")).stat().st_size > 0
    assert "127.0.0.1\tlocalhost" in (tmp_path / "etc/hosts").read_text()
    shim = tmp_path / "usr/local/bin/systemctl"
    assert shim.stat().st_mode & 0o111 and "pi-check-systemctl.log" in shim.read_text()
    cmd = piroot.chroot_cmd(piroot.Root("trixie", tmp_path), "true")
    assert cmd[:5] == [
        "chroot",
        str(tmp_path / "roots/trixie-arm64"),
        "/usr/bin/env",
        "-i",
        f"PATH={piroot.CHROOT_PATH}",
    ]
    assert cmd[-3:] == ["bash", "-c", "true"]


def test_the_london_manifest_has_20_photos_of_both_expressions(tmp_path: Path) -> None:
    from tests.support import paths

    shared = picheck_inputs.Shared(paths.SHARED)
    if not (shared.london / "faces.csv").is_file():
        pytest.skip(f"{shared.london} absent")
    rows = picheck_inputs.london_manifest(shared, tmp_path / "photos", "/srv/picheck/london")
    assert len(rows) == picheck_inputs.LONDON_PHOTOS == 20
    labels = [rest.split(",")[1] for _, rest in rows]
    assert labels.count("neutral") == labels.count("happiness") == 10
    assert len(list((tmp_path / "photos").iterdir())) == 20


def test_a_step_past_its_time_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess
    import time

    from provisioning import piroot

    pidfile = tmp_path / "pid"
    monkeypatch.setattr(piroot, "chroot_cmd", lambda _root, script: ["bash", "-c", script])
    session = picheck.Session(piroot.Root("bookworm", tmp_path), tmp_path)
    with pytest.raises(subprocess.TimeoutExpired):
        session.sh(f"sleep 60 & echo $! > {pidfile}; wait", timeout=1.5)
    pid = int(pidfile.read_text())
    for _ in range(50):  # the grandchild (what pip is under install.sh) went with its group
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError("the step's grandchild outlived the timeout")
