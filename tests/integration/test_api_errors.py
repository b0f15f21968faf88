"""Refused requests: bad names, empty or oversized uploads, unknown names, hostile
archives. Each must fail with the documented status and leave no trace."""

import uuid

import pytest

from lib.helpers import SlowUpload
from lib.images import make_docker_archive, tar_entry

pytestmark = pytest.mark.integration

BAD_NAMES = ["Hello", "-lead", ".dot", "_under", "a/b", "..", "a b", "x" * 64, "ünï"]


def assert_error(status, body, expected_status, *words):
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    for w in words:
        assert w in body["error"], body


def assert_no_trace(faas, faasd, name):
    assert name not in faas.read_registry(missing_ok=True)
    assert faas.vm.listdir(f"{faasd.state_dir}/images") == []
    assert faas.vm.listdir(f"{faasd.state_dir}/tmp") == []
    assert faasd.faas_addresses() == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_rejected_by_api_with_400(faas, faasd, name):
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": name},
                             body_path=faas.image("hello"))
    assert_error(status, body, 400, "invalid function name")
    assert_no_trace(faas, faasd, name)


def test_bad_name_rejected_by_cli(faas, faasd):
    r = faasd.faas("new", "Bad_Name", stdin_path=faas.image("hello"))
    assert r.returncode == 2, r
    assert r.stderr.startswith("Error: invalid function name"), r.stderr
    assert r.stdout == ""
    assert_no_trace(faas, faasd, "Bad_Name")


def test_missing_image_name_header_rejected(faas, faasd):
    status, body = faasd.api("POST", "/api/new", body_path=faas.image("hello"))
    assert_error(status, body, 400, "invalid function name")
    assert faas.read_registry(missing_ok=True) == {}


def test_empty_stdin_rejected_by_cli(faas, faasd):
    r = faasd.faas("new", "empty", stdin_path="/dev/null")
    assert r.returncode == 2, r
    assert r.stderr.startswith("Error: no image on stdin"), r.stderr
    assert_no_trace(faas, faasd, "empty")


def test_empty_body_rejected_by_api_with_400(faas, faasd):
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "empty"},
                             body_path="/dev/null")
    assert_error(status, body, 400)
    assert_no_trace(faas, faasd, "empty")


def test_garbage_body_rejected_with_400(faas, faasd):
    path = faas.put_archive(b"this is not a tar archive\n" * 100, "garbage.tar")
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "junk"}, body_path=path)
    assert_error(status, body, 400)
    r = faasd.faas("new", "junk", stdin_path=path)
    assert r.returncode == 1 and r.stderr.startswith("Error: "), r
    assert_no_trace(faas, faasd, "junk")


@pytest.mark.faasd_args("--max-image-size", "100000")
def test_oversized_streamed_image_rejected_with_413(faas, faasd):
    """`faas new` streams the image (chunked): the limit trips while reading the body."""
    r = faasd.faas("new", "big", stdin_path=faas.image("hello"))
    assert r.returncode == 1, r
    assert r.stderr == "Error: image larger than the limit of 100000 bytes\n"
    r = faasd.vm.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
                      faasd.socket, "-H", "X-Image-Name: big", "-H", "Transfer-Encoding: chunked",
                      "--data-binary", "@" + faas.image("hello"), "http://faasd/api/new"])
    assert r.stdout == "413"
    assert_no_trace(faas, faasd, "big")


@pytest.mark.faasd_args("--max-image-size", "100000")
def test_oversized_image_with_content_length_rejected_with_413(faas, faasd):
    """A Content-Length above the limit must get a 413 answer, not a dropped connection.
    Regression: beast reports body_limit while reading the header when Content-Length
    is over the limit; the API used to close the socket then (a reset, no answer)."""
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "big"},
                             body_path=faas.image("hello"))
    assert_error(status, body, 413, "larger than the limit")
    assert_no_trace(faas, faasd, "big")


def test_unknown_name_is_404_and_nonzero_exit(faas, faasd):
    assert_error(*faasd.api("GET", "/api/ip/nope"), 404, "nope")
    assert_error(*faasd.api("DELETE", "/api/functions/nope"), 404, "nope")
    for verb in ("ip", "rm"):
        r = faasd.faas(verb, "nope")
        assert r.returncode == 1, r
        assert r.stderr.startswith("Error: ") and "nope" in r.stderr, r.stderr
        assert r.stdout == ""


def test_unknown_endpoint_and_wrong_method(faasd):
    assert_error(*faasd.api("GET", "/api/nothing"), 404)
    assert_error(*faasd.api("GET", "/api/new"), 405)
    assert_error(*faasd.api("POST", "/api/list"), 405)
    assert faasd.api("GET", "/api/list") == (200, {})


def test_small_body_on_a_bodiless_route_is_dropped(faas, faasd):
    """Regression: any body on a non-deploy request got 413 (the drain counted the
    whole read buffer, not the bytes read), even 1 byte with DELETE."""
    faas.deploy_handler("fn", "hello")
    one = faas.put_archive(b"x", "one-byte")
    small = faas.put_archive(b"y" * 1000, "small")
    status, body = faasd.api("GET", "/api/ip/fn", body_path=small)
    assert status == 200 and body["name"] == "fn", (status, body)
    assert faasd.api("GET", "/api/list", body_path=one)[0] == 200
    assert faasd.api("DELETE", "/api/functions/fn", body_path=one) == (200, {"name": "fn"})
    assert faas.read_registry() == {}
    big = faas.put_archive(b"z" * (64 * 1024 + 1), "big")
    assert_error(*faasd.api("GET", "/api/list", body_path=big), 413, "too large")
    assert_error(*faasd.api("DELETE", "/api/functions/nope", body_path=big), 413, "too large")


# --- hostile archives ------------------------------------------------------------------

def hostile_archives(outside: str):
    """name -> archive bytes; each tries to write `outside`/pwned (or link to it)."""
    up = "../" * 16  # from STATE/images/NAME/.new-*/ to / and beyond
    target = outside.lstrip("/")
    return {
        "dotdot-entry": make_docker_archive([[
            tar_entry("handler", data=b"x"),
            tar_entry(f"{up}{target}/pwned", data=b"escaped\n")]]),
        "dotdot-outer-member": make_docker_archive(
            [[tar_entry("handler", data=b"x")]],
            extra_members=[tar_entry(f"{up}{target}/pwned", data=b"escaped\n")]),
        "absolute-symlink": make_docker_archive([
            [tar_entry("handler", data=b"x"), tar_entry("evil", "symlink", target=outside)],
            [tar_entry("evil/pwned", data=b"escaped\n")]]),
        "relative-symlink": make_docker_archive([[
            tar_entry("handler", data=b"x"),
            tar_entry("evil", "symlink", target=f"{up}{target}"),
            tar_entry("evil/pwned", data=b"escaped\n")]]),
        "hardlink-out": make_docker_archive([[
            tar_entry("handler", data=b"x"),
            tar_entry("evil", "hardlink", target=f"{up}{target}/victim")]]),
        # A whiteout of ".." would remove the directory holding the rootfs.
        "whiteout-dotdot": make_docker_archive([
            [tar_entry("handler", data=b"x")],
            [tar_entry(".wh...", data=b"")]]),  # ".wh." + ".."
    }


@pytest.mark.parametrize("kind", ["dotdot-entry", "dotdot-outer-member", "absolute-symlink",
                                  "relative-symlink", "hardlink-out", "whiteout-dotdot"])
def test_hostile_archive_rejected_and_previous_version_serves(faas, faasd, kind):
    previous = faas.deploy_handler("fn", "hello")
    registry_before = faas.read_registry()
    root = f"{faasd.state_dir}/images/fn/rootfs"
    rootfs_before = faas.stat(root, f"{root}/handler")
    outside = f"{faasd.run_dir}/outside-{uuid.uuid4().hex[:8]}"
    faas.vm.run(["mkdir", "-p", outside])
    faas.vm.write_file(f"{outside}/victim", b"victim\n")
    path = faas.put_archive(hostile_archives(outside)[kind], f"{kind}.tar")

    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "fn"}, body_path=path)
    assert_error(status, body, 400, "escapes")
    r = faasd.faas("new", "fn", stdin_path=path)
    assert r.returncode == 1 and r.stderr.startswith("Error: "), r

    # Nothing was written outside the state dir, the victim is intact and unlinked.
    assert faas.vm.listdir(outside) == ["victim"]
    assert faas.vm.read_file(f"{outside}/victim") == b"victim\n"
    links = faas.vm.run(["stat", "-c", "%h", f"{outside}/victim"]).stdout.strip()
    assert links == "1", "the victim got a hard link from inside the image"
    # The previous version is untouched and keeps serving.
    assert faas.read_registry() == registry_before
    assert faas.stat(root, f"{root}/handler") == rootfs_before
    assert faas.vm.listdir(f"{faasd.state_dir}/images/fn") == ["rootfs", "v1"]
    assert faas.vm.listdir(f"{faasd.state_dir}/tmp") == []
    faas.assert_handler_responds(previous.ip)
    faas.assert_bundles_cleaned_up()


def test_hostile_archive_under_new_name_leaves_nothing(faas, faasd):
    outside = f"{faasd.run_dir}/outside-{uuid.uuid4().hex[:8]}"
    faas.vm.run(["mkdir", "-p", outside])
    faas.vm.write_file(f"{outside}/victim", b"victim\n")
    path = faas.put_archive(hostile_archives(outside)["relative-symlink"], "evil.tar")
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "evil"}, body_path=path)
    assert_error(status, body, 400)
    assert faas.vm.listdir(outside) == ["victim"]
    assert_no_trace(faas, faasd, "evil")
    assert faas.vm.listdir(f"{faasd.state_dir}/images") == []


def test_concurrent_deploy_of_same_name_is_409(faas, faasd):
    upload = SlowUpload(faas, "busy")
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "busy"},
                             body_path=faas.image("hello"))
    assert_error(status, body, 409, "already under way")
    r = faasd.faas("new", "busy", stdin_path=faas.image("hello"))
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "under way" in r.stderr, r
    # The first upload ends early: a truncated archive is a bad image.
    status, body = upload.finish()
    assert_error(status, body, 400)
    assert_no_trace(faas, faasd, "busy")
    # Nothing stays locked: the name deploys now.
    d = faas.deploy_handler("busy")
    faas.assert_handler_responds(d.ip)


def test_client_gone_mid_upload_leaves_nothing(faas, faasd):
    SlowUpload(faas, "gone").abort()
    faas.wait_for_cleanup(lambda: "deploy of gone failed" in faasd.log(), what="the deploy to fail")
    assert_no_trace(faas, faasd, "gone")
    d = faas.deploy_handler("gone")
    faas.assert_handler_responds(d.ip)


@pytest.mark.faasd_args("--pool", "10.0.0.0/28")
def test_exhausted_pool_is_503_and_leaves_nothing(faas, faasd):
    ips = [faas.deploy_handler(f"fn{i}").ip for i in range(5)]
    assert ips == [f"10.0.0.{i}" for i in range(10, 15)]
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "fn5"},
                             body_path=faas.image("hello"))
    assert_error(status, body, 503, "exhausted")
    r = faasd.faas("new", "fn5", stdin_path=faas.image("hello"))
    assert r.returncode == 1 and "exhausted" in r.stderr, r
    assert sorted(faas.read_registry()) == [f"fn{i}" for i in range(5)]
    assert faas.vm.listdir(f"{faasd.state_dir}/images") == [f"fn{i}" for i in range(5)]
    assert faasd.faas_addresses() == ips
    # Redeploying an existing name needs no new address.
    faas.deploy_handler("fn0", "echo")
    faas.assert_handler_responds(ips[0], expected_body="x", body="x")


def test_cli_without_daemon_fails_cleanly(faas_unstarted, faasd_unstarted):
    for args in (["list"], ["ip", "x"], ["rm", "x"]):
        r = faasd_unstarted.faas(*args)
        assert r.returncode == 1, r
        assert r.stderr.startswith("Error: ") and r.stdout == "", r


def test_rm_during_redeploy_is_409_and_function_keeps_serving(faas, faasd):
    d = faas.deploy_handler("fn")
    upload = SlowUpload(faas, "fn", handler="echo")
    r = faas.remove_handler("fn", check=False)
    assert r.returncode == 1 and "under way" in r.stderr, r
    assert_error(*faasd.api("DELETE", "/api/functions/fn"), 409, "under way")
    status, body = upload.finish()
    assert_error(status, body, 400)
    assert faas.read_registry()["fn"]["version"] == 1
    faas.assert_handler_responds(d.ip)
    assert faas.remove_handler("fn").returncode == 0
