"""A real small disk image (MBR + FAT32 boot partition) customized without root, read back."""

from __future__ import annotations

import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_node.config import NodeConfig
from provisioning import cloudinit as ci
from provisioning.fatimage import FatPartition, read_partitions
from provisioning.fleet import add_node, init_fleet, revoke_node
from provisioning.image import customize
from tests.support.provisioning_image import BOOT_START, build_pi_image, missing_tools
from vfer.cli import UserError

pytestmark = pytest.mark.skipif(
    bool(missing_tools()),
    reason=f"needs {', '.join(missing_tools())} (apt-get install mtools dosfstools fdisk)",
)

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZlZHZmZXJ0ZXN0a2V5 operator@laptop"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fleet") / "fleet"
    init_fleet(d, broker_host="broker.example")
    add_node(d, "pi-1")
    add_node(d, "pi-2")
    revoke_node(d, "pi-2")
    return d


def _spec(**kw: object) -> ci.ImageSpec:
    base: dict[str, object] = {
        "node": "pi-1",
        "hostname": "pi-1",
        "instance_id": "fedvfer-pi-1-test",
        "ssh_keys": (SSH_KEY,),
        "wifi": ci.Wifi("Kiosk", ci.wpa_psk("Kiosk", "kiosk-pass-1"), "DE"),
    }
    return ci.ImageSpec(**(base | kw))  # type: ignore[arg-type]


def _cloud_init_schema(user_data: Path) -> None:
    tool = shutil.which("cloud-init")
    if tool is None:
        return  # YAML and the expected keys are checked by the caller
    res = subprocess.run(
        [tool, "schema", "--config-file", str(user_data)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Valid cloud-config" in res.stdout


def test_cloud_init_image_round_trip(fleet: Path, tmp_path: Path) -> None:
    base = build_pi_image(tmp_path / "raspios.img", cloud_init=True)
    base_bytes = base.read_bytes()
    out = tmp_path / "pi-1.img"
    pkg = tmp_path / "fedvfer-0.1.0-py3-none-any.whl"
    pkg.write_bytes(b"PK fake wheel")
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "v.safetensors").write_bytes(b"\x00" * 1000)
    face = tmp_path / "face_detection_short_range.tflite"
    face.write_bytes(b"TFL3 face detector")
    spec = _spec(package_file=pkg.name)
    result = customize(base, out, fleet, spec, package=pkg, bundle=bundle, face_model=face)
    assert result.route == "cloud-init"
    assert base.read_bytes() == base_bytes  # the base image is never modified
    # The partition table is intact and the boot partition is still FAT32.
    parts = read_partitions(out)
    assert [p.start for p in parts] == [BOOT_START, parts[1].start] and parts[0].fat
    with open(out, "rb") as fh:
        fh.seek(BOOT_START * 512 + 82)
        assert fh.read(8) == b"FAT32   "
    fat = FatPartition.boot_of(out)
    assert set(fat.listdir()) >= {"user-data", "network-config", "meta-data", "fedvfer", "ssh"}
    assert not fat.exists("firstrun.sh")

    ud = tmp_path / "user-data"
    ud.write_bytes(fat.read("user-data"))
    doc = yaml.safe_load(ud.read_text())
    assert ud.read_text().startswith("#cloud-config\n")
    assert {"hostname", "users", "packages", "runcmd"} <= set(doc)
    assert doc["hostname"] == "pi-1" and "python3-picamera2" in doc["packages"]
    assert doc["users"][0]["ssh_authorized_keys"] == [SSH_KEY]
    _cloud_init_schema(ud)
    net = yaml.safe_load(fat.read("network-config"))["network"]
    assert "Kiosk" in net["wifis"]["wlan0"]["access-points"]
    assert yaml.safe_load(fat.read("meta-data"))["instance-id"] == "fedvfer-pi-1-test"

    # The node's credentials and config, byte for byte, and the config validates.
    node_dir = fleet / "nodes" / "pi-1"
    assert set(fat.listdir("fedvfer/etc")) == {
        "node.yaml",
        "broker_password",
        "ca.crt",
        "fleet_public_key.pem",
        "identity_key.pem",  # secure aggregation: the node's identity, vouched for by the fleet
        "identity_voucher.json",
        "vouching_public_key.pem",
    }
    for name in fat.listdir("fedvfer/etc"):
        assert fat.read(f"fedvfer/etc/{name}") == (node_dir / name).read_bytes()
    cfg = NodeConfig.model_validate(yaml.safe_load(fat.read("fedvfer/etc/node.yaml")))
    assert cfg.node_id == "pi-1" and cfg.federation.broker_url == "mqtts://broker.example:8883"
    # every file node.yaml names in /etc/fedvfer is on the image (the installer copies them there)
    named = {
        Path(v).name
        for v in cfg.federation.model_dump().values()
        if isinstance(v, Path) and str(v).startswith("/etc/fedvfer/")
    }
    assert named and named <= set(fat.listdir("fedvfer/etc")), named
    units = fat.listdir("fedvfer/systemd")
    assert units == ["edge-node-adapt.service", "edge-node-adapt.timer", "edge-node.service"]
    assert b"--system-site-packages" in fat.read("fedvfer/install.sh")
    assert fat.read(f"fedvfer/dist/{pkg.name}") == pkg.read_bytes()
    assert fat.read("fedvfer/bundle/models/v.safetensors") == b"\x00" * 1000
    # the face detector rides along; the installer puts it where the node looks (bundle/../models)
    assert fat.read("fedvfer/models/face_detection_short_range.tflite") == face.read_bytes()
    assert b"/var/lib/fedvfer/models/face_detection_short_range.tflite" in fat.read(
        "fedvfer/install.sh"
    )
    cmdline = fat.read("cmdline.txt").decode()
    assert "cfg80211.ieee80211_regdom=DE" in cmdline and "systemd.run" not in cmdline


def test_firstrun_image_from_xz(fleet: Path, tmp_path: Path) -> None:
    raw = build_pi_image(tmp_path / "old.img", cloud_init=False)
    xz = tmp_path / "old.img.xz"
    xz.write_bytes(lzma.compress(raw.read_bytes(), preset=0))
    out = tmp_path / "pi-1-old.img"
    result = customize(xz, out, fleet, _spec())
    assert result.route == "firstrun"
    fat = FatPartition.boot_of(out)
    assert not fat.exists("user-data")
    script = fat.read("firstrun.sh").decode()
    assert "fedvfer-firstboot.service" in script and SSH_KEY in script
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    cmdline = fat.read("cmdline.txt").decode()
    assert cmdline.count("\n") == 1
    assert "systemd.run=/boot/firmware/firstrun.sh" in cmdline and "rootwait" in cmdline
    assert fat.read("fedvfer/etc/node.yaml") == (fleet / "nodes/pi-1/node.yaml").read_bytes()


def test_refusals(fleet: Path, tmp_path: Path) -> None:
    base = build_pi_image(tmp_path / "b.img", cloud_init=True)
    with pytest.raises(UserError, match="revoked"):
        customize(base, tmp_path / "o.img", fleet, _spec(node="pi-2", hostname="pi-2"))
    with pytest.raises(UserError, match="not in the fleet"):
        customize(base, tmp_path / "o.img", fleet, _spec(node="pi-9", hostname="pi-9"))
    with pytest.raises(UserError, match="differ"):
        customize(base, base, fleet, _spec())
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(UserError, match="partition table"):
        customize(junk, tmp_path / "o.img", fleet, _spec())
    assert not (tmp_path / "o.img").exists()  # no half-written output left behind


def test_image_cli(fleet: Path, tmp_path: Path) -> None:
    base = build_pi_image(tmp_path / "raspios.img", cloud_init=True)
    key = tmp_path / "id.pub"
    key.write_text(SSH_KEY + "\n")
    wifi = tmp_path / "wifi"
    wifi.write_text("kiosk-pass-1\n")
    out = tmp_path / "pi-1.img"
    cmd = [sys.executable, "-m", "provisioning", "image", "--base", str(base), "--node", "pi-1",
           "--dir", str(fleet), "--out", str(out), "--ssh-key", str(key),
           "--wifi-ssid", "Kiosk", "--wifi-password-file", str(wifi)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "cloud-init route" in res.stdout
    fat = FatPartition.boot_of(out)
    assert yaml.safe_load(fat.read("user-data"))["users"][0]["ssh_authorized_keys"] == [SSH_KEY]
    assert b"kiosk-pass-1" not in out.read_bytes()  # the Wi-Fi passphrase never lands
    no_wifi = subprocess.run([*cmd[:-4]], capture_output=True, text=True)
    assert no_wifi.returncode == 0, no_wifi.stderr
    res = subprocess.run([*cmd[:-2]], capture_output=True, text=True)
    assert (
        res.returncode == 1
        and res.stderr.strip() == "Error: --wifi-ssid needs --wifi-password-file"
    )
