"""Redeploys keep the settings they do not change; faasd keeps the last versions of
a function (`--keep-versions`, default 3), `faas versions` lists them and `faas
rollback` makes one serve again, with its own settings, on the same IP."""

import hashlib
import json
import tarfile

import pytest

from lib.helpers import SlowUpload, hello_body
from lib.vm import wait_for

pytestmark = pytest.mark.integration

MIB = 1 << 20


def version_dirs(faas, name):
    return sorted(e for e in faas.vm.listdir(f"{faas.faasd.state_dir}/images/{name}")
                  if e != "rootfs")


def wait_version_dirs(faas, name, expected):
    """The version directories of `name` become `expected` (removal runs off the loop)."""
    wait_for(lambda: version_dirs(faas, name) == expected, 20,
             what=f"the version dirs of {name} to be {expected} (are {version_dirs(faas, name)})")


def serving_link(faas, name):
    return faas.vm.run(["readlink", f"{faas.faasd.state_dir}/images/{name}/rootfs"]).stdout.strip()


def versions(faas, name):
    r = faas.faasd.faas("versions", name, "--json", check=True)
    return json.loads(r.stdout)


def rollback(faas, name, *version):
    return faas.faasd.faas("rollback", name, *version)


def config_digest(archive_path):
    """sha256 of the config blob of a docker-archive: the image ID podman shows."""
    with tarfile.open(archive_path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        config = tar.extractfile(manifest[0]["Config"]).read()
    return "sha256:" + hashlib.sha256(config).hexdigest()


def test_redeploy_keeps_settings_it_does_not_change(faas, faasd):
    first = faas.deploy_handler("fn", "hello",
                                options=("--env", "A=1", "--env", "B=2", "--memory", "256M"))
    assert first.kept is None

    # No options: env and memory carried over, and the CLI says so after its two lines.
    second = faas.deploy_handler("fn", "echo")
    assert second.ip == first.ip
    assert second.kept == "v1: env (2), memory"
    record = faas.describe("fn")
    assert record["version"] == 2
    assert {"A=1", "B=2"} <= set(record["env"])
    assert record["limits"]["memory_bytes"] == 256 * MIB
    assert record["options"] == {"env": ["A=1", "B=2"], "memory": "256M"}

    # --env replaces the whole list; memory is still carried.
    third = faas.deploy_handler("fn", "echo", options=("--env", "C=3", "--warm", "0"))
    assert third.kept == "v2: memory"
    record = faas.describe("fn")
    assert "C=3" in record["env"] and not {"A=1", "B=2"} & set(record["env"])
    assert record["limits"]["memory_bytes"] == 256 * MIB

    # --reset: what is not given is the default again, and nothing is said to be kept.
    fourth = faas.deploy_handler("fn", "echo", options=("--reset",))
    assert fourth.kept is None
    record = faas.describe("fn")
    assert record["options"] == {}
    assert record["limits"]["memory_bytes"] == 512 * MIB
    assert not {"A=1", "B=2", "C=3"} & set(record["env"])
    faas.assert_handler_responds(first.ip, expected_body="v4", body="v4")


def test_versions_lists_the_kept_ones_and_the_disk_matches(faas, faasd):
    for handler in ("hello", "echo", "hello", "echo"):
        faas.deploy_handler("fn", handler, options=("--memory", "128M"))
    wait_version_dirs(faas, "fn", ["v2", "v3", "v4"])
    assert serving_link(faas, "fn") == "v4"

    answer = versions(faas, "fn")
    assert answer["name"] == "fn" and answer["serving"] == 4
    assert [v["version"] for v in answer["versions"]] == [4, 3, 2]
    assert [v["serving"] for v in answer["versions"]] == [True, False, False]
    echo_id = config_digest(faas.images.archive("echo"))
    hello_id = config_digest(faas.images.archive("hello"))
    assert [v["image_digest"] for v in answer["versions"]] == [echo_id, hello_id, echo_id]
    for v in answer["versions"]:
        assert v["deployed_at"].endswith("Z")
        assert v["options"] == {"memory": "128M"}
        assert v["limits"]["memory_bytes"] == 128 * MIB
        assert {"scaling", "cmd", "env"} <= set(v)

    # The registry holds the same kept versions, the serving record at the top.
    registry = faas.read_registry()["fn"]
    assert registry["version"] == 4
    assert [v["version"] for v in registry["versions"]] == [3, 2]

    rows = faasd.faas("versions", "fn", check=True).stdout.splitlines()
    assert rows[0].split() == ["Version", "Serving", "Image", "Deployed", "at", "Settings"]
    assert [r.split()[0] for r in rows[1:]] == ["v4", "v3", "v2"]
    assert rows[1].split()[1:3] == ["yes", echo_id[:len("sha256:") + 12]]
    assert rows[1].endswith("memory=128M")
    assert rows[2].split()[1] == hello_id[:len("sha256:") + 12]


def test_rollback_serves_the_old_version_with_its_settings_on_the_same_ip(faas, faasd):
    v1 = faas.deploy_handler("fn", "hello", options=("--memory", "256M"))
    v2 = faas.deploy_handler("fn", "echo", options=("--memory", "128M"))
    faas.assert_handler_responds(v1.ip, expected_body="two", body="two")

    r = rollback(faas, "fn")
    assert r.returncode == 0, r
    assert r.stdout == f"✓ Rolled back fn from v2 to v1 at {v1.ip}\n"
    faas.assert_handler_responds(v1.ip)
    assert faas.get_handler_ip("fn") == v1.ip == v2.ip
    assert faasd.faas_addresses() == [v1.ip]
    record = faas.describe("fn")
    assert record["version"] == 1 and record["limits"]["memory_bytes"] == 256 * MIB
    assert serving_link(faas, "fn") == "v1"
    assert version_dirs(faas, "fn") == ["v1", "v2"]
    answer = versions(faas, "fn")
    assert answer["serving"] == 1 and [v["version"] for v in answer["versions"]] == [1, 2]

    # Without a version: the one that served before, here v2 again; with one, that one.
    assert rollback(faas, "fn").stdout == f"✓ Rolled back fn from v1 to v2 at {v1.ip}\n"
    faas.assert_handler_responds(v1.ip, expected_body="again", body="again")
    assert rollback(faas, "fn", "v1").returncode == 0
    faas.assert_handler_responds(v1.ip)

    # A new deploy after a rollback gets a number of its own and keeps the one that served.
    v3 = faas.deploy_handler("fn", "echo")
    assert v3.kept == "v1: memory"
    assert [v["version"] for v in versions(faas, "fn")["versions"]] == [3, 1, 2]
    faas.assert_handler_responds(v1.ip, expected_body="three", body="three")
    # Beyond --keep-versions (3), the version that served longest ago goes: v2, not v1.
    faas.deploy_handler("fn", "hello")
    assert [v["version"] for v in versions(faas, "fn")["versions"]] == [4, 3, 1]
    wait_version_dirs(faas, "fn", ["v1", "v3", "v4"])


def test_rollback_refusals_change_nothing(faas, faasd):
    d = faas.deploy_handler("fn", "hello")
    r = rollback(faas, "fn")
    assert r.returncode == 1 and r.stderr == "Error: 'fn' has no earlier version to roll back to\n"
    faas.deploy_handler("fn", "echo")
    for args, status, words in [(("fn", "7"), 404, "no version 7"),
                                (("fn", "2"), 409, "serves already"),
                                (("nope",), 404, "no function named 'nope'")]:
        r = rollback(faas, *args)
        assert r.returncode == 1 and r.stderr.startswith("Error: ") and words in r.stderr, r
        path = f"/api/functions/{args[0]}/rollback" + (f"?version={args[1]}" if len(args) > 1 else "")
        assert faasd.api("POST", path)[0] == status
    r = rollback(faas, "fn", "x1")
    assert r.returncode == 2 and r.stderr.startswith("Error: invalid version"), r
    assert faasd.api("POST", "/api/functions/fn/rollback?version=0")[0] == 400
    assert faasd.api("GET", "/api/functions/fn/rollback")[0] == 405
    assert faasd.api("GET", "/api/functions/nope/versions")[0] == 404
    assert versions(faas, "fn")["serving"] == 2
    faas.assert_handler_responds(d.ip, expected_body="still 2", body="still 2")


def test_rollback_while_a_deploy_of_the_name_is_under_way_is_409(faas, faasd):
    d = faas.deploy_handler("fn", "hello")
    faas.deploy_handler("fn", "echo")
    upload = SlowUpload(faas, "fn")
    status, body = faasd.api("POST", "/api/functions/fn/rollback")
    assert status == 409 and "under way" in body["error"], (status, body)
    r = rollback(faas, "fn")
    assert r.returncode == 1 and "under way" in r.stderr, r
    upload.abort()
    # The deploy ends (aborted): the rollback goes through now.
    wait_for(lambda: rollback(faas, "fn").returncode == 0, 20, what="the deploy of fn to end")
    faas.assert_handler_responds(d.ip)


def test_rollback_survives_restart_and_kill9(faas, faasd):
    v1 = faas.deploy_handler("fn", "hello")
    faas.deploy_handler("fn", "echo")
    assert rollback(faas, "fn", "1").returncode == 0
    faasd.restart()
    faas.assert_handler_responds(v1.ip)
    assert serving_link(faas, "fn") == "v1"
    assert version_dirs(faas, "fn") == ["v1", "v2"]
    assert [v["version"] for v in versions(faas, "fn")["versions"]] == [1, 2]

    assert rollback(faas, "fn", "2").returncode == 0
    faasd.kill9()
    faasd.start(*faasd.args)
    faas.assert_handler_responds(v1.ip, expected_body="after kill", body="after kill")
    assert faasd.faas_addresses() == [v1.ip]
    assert serving_link(faas, "fn") == "v2"
    assert version_dirs(faas, "fn") == ["v1", "v2"]
    assert versions(faas, "fn")["serving"] == 2


def test_request_in_flight_during_rollback_finishes_on_its_version(faas, faasd):
    v1 = faas.deploy_handler("fn", "hello")
    faas.deploy_handler("fn", "slow", options=("--env", "SLEEP_MS=3000"))
    running = faas.start_requests(v1.ip, log_name="in-flight")
    faas.wait_runtime("fn", lambda rt: rt["active"] == 1, what="the slow request to run")
    assert rollback(faas, "fn").returncode == 0
    # New requests get v1 while v2's request is still running.
    faas.assert_handler_responds(v1.ip)
    assert not running.done()
    [result] = running.results()
    assert result["status"] == 200 and result["body"].startswith("slept=3000"), result
    faas.wait_for_cleanup()
    assert version_dirs(faas, "fn") == ["v1", "v2"], "a kept version stays after its last request"


def test_rm_removes_every_version(faas, faasd):
    for handler in ("hello", "echo", "hello"):
        faas.deploy_handler("fn", handler)
    assert rollback(faas, "fn").returncode == 0
    faas.remove_handler("fn")
    faas.wait_for_cleanup(lambda: not faas.vm.exists(f"{faasd.state_dir}/images/fn"),
                          what="every version of fn to be removed")
    assert "fn" not in faas.read_registry()
    r = faasd.faas("versions", "fn")
    assert r.returncode == 1 and r.stderr == "Error: no function named 'fn'\n", r
    # The name starts again from version 1, with the defaults.
    d = faas.deploy_handler("fn", "hello")
    assert d.kept is None and versions(faas, "fn")["serving"] == 1


@pytest.mark.faasd_args("--keep-versions", "1")
def test_keep_versions_1_keeps_only_the_serving_one(faas, faasd):
    faas.deploy_handler("fn", "hello")
    d = faas.deploy_handler("fn", "echo", options=("--env", "A=1"))
    wait_version_dirs(faas, "fn", ["v2"])
    assert [v["version"] for v in versions(faas, "fn")["versions"]] == [2]
    r = rollback(faas, "fn")
    assert r.returncode == 1 and "no earlier version" in r.stderr, r
    # Settings are still carried over: they live in the serving record.
    assert faas.deploy_handler("fn", "echo").kept == "v2: env (1)"
    faas.assert_handler_responds(d.ip, expected_body="x", body="x")


def test_registry_of_an_earlier_faasd_loads_and_gains_versions(faas, faasd):
    """A registry.json written before versions were kept has no "versions", "options"
    or "image_digest": it loads, serves, and the next redeploy keeps the old version."""
    d = faas.deploy_handler("fn", "hello")
    assert faasd.stop() == 0
    path = f"{faasd.state_dir}/registry.json"
    registry = json.loads(faas.vm.read_file(path))
    for key in ("versions", "options", "image_digest"):
        registry["fn"].pop(key, None)
    faas.vm.write_file(path, json.dumps(registry).encode())
    faasd.start(*faasd.args)
    faas.assert_handler_responds(d.ip)
    [only] = versions(faas, "fn")["versions"]
    assert (only["version"], only["image_digest"], only["options"]) == (1, "", {})
    faas.deploy_handler("fn", "echo")
    assert version_dirs(faas, "fn") == ["v1", "v2"]
    assert rollback(faas, "fn").returncode == 0
    faas.assert_handler_responds(d.ip)


@pytest.mark.faasd_args("--warm", "2")
def test_rollback_never_hands_a_client_to_a_pooled_container_of_the_version_before(faas, faasd):
    v1 = faas.deploy_handler("fn", "hello")
    faas.deploy_handler("fn", "echo")
    faas.wait_pool_ready("fn", 2)
    assert rollback(faas, "fn").returncode == 0
    for r in faas.make_requests(v1.ip, count=6, concurrency=3):
        assert r["status"] == 200 and r["body"] == hello_body(), r
