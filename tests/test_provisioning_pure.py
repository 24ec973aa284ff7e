"""Provisioning's pure parts: password hashes, ACL and broker config text, Wi-Fi keys, cloud-init
documents, cmdline.txt, partition tables, shell scripts."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning import cloudinit as ci
from provisioning import mosquitto as mq
from provisioning.fatimage import Partition, boot_partition, parse_gpt, parse_mbr
from provisioning.installer import install_sh
from tests.support.mosquitto import verify_password
from vfer.heads_spec import count_params, vfer_spec


def test_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Oracle: a line written by mosquitto_passwd, recomputed from its own salt."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed (apt-get install mosquitto)")
    pwfile = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(pwfile), "alice", "s3cret"], check=True)
    line = pwfile.read_text().strip()
    user, hashed = line.split(":", 1)
    _, seven, iterations, salt, _ = hashed.split("$")
    assert (user, seven) == ("alice", "7")
    assert (
        mq.hash_password("s3cret", salt=base64.b64decode(salt), iterations=int(iterations))
        == hashed
    )
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)


@settings(max_examples=15, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_hash_round_trip(password: str) -> None:
    h = mq.hash_password(password)
    assert h.startswith(f"$7${mq.PBKDF2_ITERATIONS}$")
    assert verify_password(password, h)
    assert not verify_password(password + "x", h)


def test_hashes_are_salted_and_bad_input_refused() -> None:
    assert mq.hash_password("pw") != mq.hash_password("pw")
    with pytest.raises(ValueError, match="empty"):
        mq.hash_password("")
    with pytest.raises(ValueError, match=r"\$7\$"):
        verify_password("pw", "$6$abc$def")


def test_password_file_is_sorted_and_refuses_bad_users() -> None:
    text = mq.password_file({"b": "$7$1$x$y", "a": "$7$1$u$v"})
    assert text == "a:$7$1$u$v\nb:$7$1$x$y\n"
    assert mq.password_file({}) == ""
    with pytest.raises(ValueError, match="password file"):
        mq.password_file({"a:b": "h"})


def test_acl_grants_exactly_the_contract() -> None:
    acl = mq.acl_file("fedvfer")
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    user_block = lines[
        lines.index("user aggregator") + 1 : lines.index("pattern write fedvfer/nodes/%u/#")
    ]
    assert user_block == [
        "topic write fedvfer/round",
        "topic write fedvfer/central/#",
        "topic write fedvfer/nodes/+/ack",
        "topic read fedvfer/nodes/+/update",
        "topic read fedvfer/nodes/+/status",
        "topic readwrite fedvfer/aggregator/#",
        "topic read fedvfer/nodes/+/secagg",
        "topic write fedvfer/secagg/#",
    ]
    patterns = [line for line in lines if line.startswith("pattern")]
    assert patterns == [
        "pattern write fedvfer/nodes/%u/#",
        "pattern read fedvfer/nodes/%u/ack",
        "pattern read fedvfer/round",
        "pattern read fedvfer/central/#",
        "pattern read fedvfer/secagg/groups",
        "pattern read fedvfer/secagg/group/#",
        "pattern read fedvfer/secagg/nodes/%u/#",
    ]
    # Nodes never write the secure-aggregation stage topics (only their own secagg topic).
    assert not any(line.startswith("pattern write") and "/secagg/" in line for line in lines)
    # Nothing grants anyone else the round or central topics for writing.
    assert not any(line.startswith("pattern write") and "round" in line for line in lines)
    assert "fedvfer2/round" in mq.acl_file("fedvfer2")
    with pytest.raises(ValueError):
        mq.acl_file("bad/#")


def test_limits_fit_the_head_and_beat_mosquittos_default_queue() -> None:
    v_bytes = 4 * count_params(vfer_spec(6))["trainable"]
    assert mq.packet_limit() >= 2 * v_bytes
    assert mq.packet_limit() % (1 << 20) == 0
    assert mq.queue_limit(1) > mq.MOSQUITTO_DEFAULT_QUEUE
    assert mq.queue_limit(5000) == 100_000
    with pytest.raises(ValueError):
        mq.queue_limit(0)


def _conf_dict(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, []).append(value)
    return out


def test_mosquitto_conf_password_mode() -> None:
    text = mq.mosquitto_conf(mq.BrokerFiles("/etc/mosquitto/fedvfer/"), fleet_size=10)
    conf = _conf_dict(text)
    assert conf["per_listener_settings"] == ["true"]
    assert conf["allow_anonymous"] == ["false", "false"]
    assert conf["listener"] == ["8883", "8884"]
    # Nodes and the aggregator each log in on their own listener, with their own password file.
    assert conf["password_file"] == [
        "/etc/mosquitto/fedvfer/passwd",
        "/etc/mosquitto/fedvfer/aggregator_passwd",
    ]
    assert conf["acl_file"] == ["/etc/mosquitto/fedvfer/acl"] * 2
    assert conf["certfile"] == ["/etc/mosquitto/fedvfer/server.crt"] * 2
    # Only the node listener replaces client ids by user names (workers keep agg-1, agg-2, ...).
    node_part, agg_part = text.split("listener 8884")
    assert "use_username_as_clientid true" in node_part
    assert "use_username_as_clientid" not in agg_part
    assert int(conf["max_packet_size"][0]) == mq.packet_limit()
    assert int(conf["max_queued_messages"][0]) > 1000
    assert "require_certificate" not in conf and "crlfile" not in conf


def test_mosquitto_conf_client_cert_mode() -> None:
    conf = _conf_dict(
        mq.mosquitto_conf(mq.BrokerFiles("/b"), client_certs=True, port=9000, aggregator_port=9001)
    )
    assert conf["listener"] == ["9000", "9001 127.0.0.1"]
    assert conf["password_file"] == ["/b/passwd", "/b/aggregator_passwd"]
    assert conf["use_username_as_clientid"] == ["true"]
    assert conf["require_certificate"] == ["true"]
    assert conf["crlfile"] == ["/b/crl.pem"]
    assert conf["use_identity_as_username"] == ["false"]


def test_wpa_psk_ieee_vector() -> None:
    # IEEE 802.11i-2004, H.4.3 test vector.
    assert ci.wpa_psk("IEEE", "password") == (
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    )
    with pytest.raises(ValueError, match="8 to 63"):
        ci.wpa_psk("net", "short")


def _spec(**kw: object) -> ci.ImageSpec:
    base: dict[str, object] = {
        "node": "pi-1",
        "hostname": "pi-1",
        "instance_id": "fedvfer-pi-1-0001",
        "ssh_keys": ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB operator@laptop",),
        "wifi": ci.Wifi("Kiosk Net", ci.wpa_psk("Kiosk Net", "correct horse"), "GB"),
        "timezone": "Europe/London",
    }
    return ci.ImageSpec(**(base | kw))  # type: ignore[arg-type]


def test_user_data_keys() -> None:
    text = ci.user_data(_spec())
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["hostname"] == "pi-1"
    assert "python3-picamera2" in doc["packages"]
    (user,) = doc["users"]
    assert user["name"] == "kiosk" and user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == list(_spec().ssh_keys)
    assert "install.sh" in doc["runcmd"][0][-1]
    assert doc["timezone"] == "Europe/London"
    assert "correct horse" not in text


def test_network_and_meta_data() -> None:
    spec = _spec()
    net = yaml.safe_load(ci.network_config(spec))["network"]
    assert net["version"] == 2
    ap = net["wifis"]["wlan0"]["access-points"]["Kiosk Net"]
    assert ap["password"] == spec.wifi.psk  # type: ignore[union-attr]
    assert yaml.safe_load(ci.meta_data(spec)) == {
        "instance-id": "fedvfer-pi-1-0001",
        "local-hostname": "pi-1",
    }
    assert "wifis" not in yaml.safe_load(ci.network_config(_spec(wifi=None)))["network"]


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="user name"):
        _spec(user="Root Admin")
    with pytest.raises(ValueError, match="host name"):
        _spec(hostname="pi_1")
    with pytest.raises(ValueError, match="SSH key"):
        _spec(ssh_keys=("not a key",))
    with pytest.raises(ValueError, match="country"):
        ci.Wifi("n", "0" * 64, "gb")


def test_cmdline_is_idempotent() -> None:
    base = "console=tty1 root=PARTUUID=1-02 rootwait\n"
    once = ci.cmdline(base, _spec(), firstrun=True)
    assert once.count("\n") == 1 and once.endswith("\n")
    assert "systemd.run=/boot/firmware/firstrun.sh" in once
    assert "cfg80211.ieee80211_regdom=GB" in once
    assert ci.cmdline(once, _spec(), firstrun=True) == once
    assert ci.cmdline(once, _spec(wifi=None), firstrun=False) == base


def _bash_syntax(text: str, tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text(text)
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_scripts_are_valid_bash(tmp_path: Path) -> None:
    spec = _spec(password_hash="$6$salt$hash", package_file="fedvfer-0.1.0-py3-none-any.whl")
    first = ci.firstrun_sh(spec)
    _bash_syntax(first, tmp_path)
    assert "fedvfer-firstboot.service" in first and "correct horse" not in first
    inst = install_sh(spec)
    _bash_syntax(inst, tmp_path)
    assert "python3 -m venv --system-site-packages /opt/fedvfer/.venv" in inst
    assert "/.venv/bin/pip install \"$SRC/dist/\"'fedvfer-0.1.0-py3-none-any.whl[edge]'" in inst
    assert "fedvfer-kiosk" in inst
    assert "fedvfer-kiosk" not in install_sh(_spec(kiosk=False))
    _bash_syntax(ci.firstrun_sh(_spec(wifi=None, ssh_keys=(), timezone=None)), tmp_path)


def _mbr(entries: list[tuple[int, int, int]]) -> bytes:
    sector = bytearray(512)
    for i, (ptype, start, size) in enumerate(entries):
        at = 446 + 16 * i
        sector[at + 4] = ptype
        sector[at + 8 : at + 16] = struct.pack("<II", start, size)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def test_parse_mbr() -> None:
    parts = parse_mbr(_mbr([(0x0C, 8192, 1048576), (0x83, 1056768, 4000000)]))
    assert parts == [Partition(1, 8192, 1048576, True), Partition(2, 1056768, 4000000, False)]
    assert boot_partition(parts).offset == 8192 * 512
    with pytest.raises(ValueError, match="55 AA"):
        parse_mbr(bytes(512))


def test_parse_gpt() -> None:
    head = bytearray(_mbr([(0xEE, 1, 100000)]) + bytes(512 * 33))
    head[512:520] = b"EFI PART"
    head[512 + 72 : 512 + 88] = struct.pack("<QII", 2, 128, 128)
    esp = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
    linux = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
    for i, (guid, first, last) in enumerate([(linux, 2048, 4095), (esp, 4096, 8191)]):
        at = 1024 + 128 * i
        head[at : at + 16] = guid.bytes_le
        head[at + 32 : at + 48] = struct.pack("<QQ", first, last)
    parts = parse_gpt(bytes(head))
    assert parts == [Partition(1, 2048, 2048, False), Partition(2, 4096, 4096, True)]
    assert boot_partition(parts).number == 2
