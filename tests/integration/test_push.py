"""`faas push NAME REF`: faasd uploads a deployed version (its tree as one layer, a
config, an OCI manifest) to a registry, Debian's docker-registry inside the test's
network namespace; pulling the reference back gives the same digest and tree."""

import base64
import json
import re

import pytest

from lib.helpers import hello_body
from lib.registry import ALREADY_RE, LyingRegistry, Registry, TokenServer, auth_file

pytestmark = pytest.mark.integration

PUSHED_RE = re.compile(r"^✓ Pushed (\S+) v(\d+) to (\S+) \((sha256:[0-9a-f]{64})\)\n"
                       r"  Layer: (sha256:[0-9a-f]{64}) \((\d+) bytes, (uploaded|existed|mounted)\)\n\Z")



def push(faas, name, ref, *options):
    return faas.faasd.faas("push", name, ref, *options)


def assert_pushed(faas, r, name, version, ref, outcome):
    """The push's answer; returns (manifest digest, layer digest)."""
    assert r.returncode == 0, f"{r}\n--- faasd log ---\n{faas.faasd.log()[-3000:]}"
    m = PUSHED_RE.match(r.stdout)
    assert m, f"unexpected `faas push` output: {r.stdout!r}"
    assert (m.group(1), int(m.group(2)), m.group(3), m.group(7)) == (name, version, ref, outcome)
    return m.group(4), m.group(5)


def requests(registry, method, pattern):
    """The registry's access-log lines (its stdout) of `method` on paths matching `pattern`."""
    return re.findall(rf'"{method} (/v2/{pattern}) HTTP', registry.proc.stdout_text())


def inspect_raw(faas, registry, repo_tag, what="--raw"):
    return json.loads(faas.vm.run(["skopeo", "inspect", what, "--tls-verify=false",
                                   f"docker://{registry.host}/{repo_tag}"]).stdout)


def same_tree(faas, one, two):
    r = faas.vm.run(["diff", "-r", "--no-dereference", one, two], check=False)
    assert r.returncode == 0, r.stdout[-2000:]


def test_push_then_pull_back_gives_the_same_digest_and_tree(faasd_unstarted, faas_unstarted,
                                                             tmp_path, anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    registry = Registry(faas.vm, tmp_path / "registry")
    # A setting of `faas new` is the function's, not the image's: it is not pushed.
    ip = faas.deploy_handler("app", "hello", options=("--env", "API_KEY=not-for-the-image")).ip
    ref = f"{registry.host}/team/app:1"

    digest, layer = assert_pushed(faas, push(faas, "app", ref), "app", 1, ref, "uploaded")
    assert registry.digest("team/app:1") == digest
    manifest = inspect_raw(faas, registry, "team/app:1")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert [entry["digest"] for entry in manifest["layers"]] == [layer]
    config = inspect_raw(faas, registry, "team/app:1", "--config")
    record = faas.describe("app")
    assert config["config"]["Cmd"] == record["cmd"]
    assert "API_KEY=not-for-the-image" in record["env"]
    assert not any("API_KEY" in entry for entry in config["config"].get("Env", [])), config
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    # Two blob uploads (the layer, the config), one manifest.
    assert len(requests(registry, "PUT", r"team/app/blobs/uploads/[^ ]+")) == 2
    assert requests(registry, "PUT", r"team/app/manifests/1") == ["/v2/team/app/manifests/1"]

    # The version deployed from an archive now records where it was pushed ...
    record = faas.describe("app")
    assert (record["image_ref"], record["manifest_digest"]) == (ref, digest)
    # ... so a deploy of that reference keeps it serving.
    r = faas.faasd.faas("new", "app", "--image", ref)
    assert r.returncode == 0 and ALREADY_RE.match(r.stdout).groups() == ("app", ref, digest), r
    faas.assert_handler_responds(ip, hello_body())

    # Pulled back as another function: the same digest and the same tree.
    r = faas.faasd.faas("new", "copy", "--image", ref, check=True)
    assert f"Image: {ref} ({digest})" in r.stdout, r.stdout
    copy = faas.describe("copy")
    assert copy["manifest_digest"] == digest
    # The layer came from the layer cache, where the push left it: never downloaded.
    assert requests(registry, "GET", f"team/app/blobs/{layer}") == []
    same_tree(faas, record["rootfs"], copy["rootfs"])
    faas.assert_handler_responds(faas.get_handler_ip("copy"), hello_body())


def test_a_second_push_sends_nothing_again_and_another_repository_mounts(
        faasd_unstarted, faas_unstarted, tmp_path, anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    registry = Registry(faas.vm, tmp_path / "registry")
    faas.deploy_handler("app", "hello")
    ref = f"{registry.host}/team/app:1"
    digest, layer = assert_pushed(faas, push(faas, "app", ref), "app", 1, ref, "uploaded")
    assert faas.describe("app")["layer"]["digest"] == layer

    # The same version again, under another tag: the same digests, no blob uploaded,
    # and the layer is the first push's, from the layer cache, not written again.
    again = f"{registry.host}/team/app:stable"
    r = push(faas, "app", again, "--json")
    assert r.returncode == 0, r
    answer = json.loads(r.stdout)
    assert (answer["manifest_digest"], answer["layer"]["digest"]) == (digest, layer)
    assert (answer["layer"]["outcome"], answer["layer"]["written"]) == ("existed", False)
    assert answer["blobs"] == {"uploaded": 0, "existed": 2, "mounted": 0}
    assert len(requests(registry, "PUT", r"team/app/blobs/uploads/[^ ]+")) == 2
    assert layer.removeprefix("sha256:") in faas.vm.listdir(
        f"{faasd_unstarted.state_dir}/cache/blobs/sha256")

    # Another repository of the registry: the layer and the config are mounted from the
    # first (the version records it), nothing is uploaded.
    other = f"{registry.host}/team/other:1"
    assert assert_pushed(faas, push(faas, "app", other), "app", 1, other,
                         "mounted") == (digest, layer)
    mounts = requests(registry, "POST", r"team/other/blobs/uploads/\?[^ ]*")
    assert any(f"mount={layer.replace(':', '%3A')}" in m and "from=team%2Fapp" in m
               for m in mounts), mounts
    assert len(mounts) == 2, mounts
    assert requests(registry, "PUT", r"team/other/blobs/uploads/[^ ]+") == []
    assert registry.digest("team/other:1") == digest


def test_push_a_kept_version_and_what_is_refused(faasd_unstarted, faas_unstarted, tmp_path,
                                                 anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    registry = Registry(faas.vm, tmp_path / "registry")
    faas.deploy_handler("app", "hello")
    ip = faas.deploy_handler("app", "echo").ip
    ref = f"{registry.host}/app:old"

    digest, _ = assert_pushed(faas, push(faas, "app", ref, "--version", "1"), "app", 1, ref,
                              "uploaded")
    versions = json.loads(faas.faasd.faas("versions", "app", "--json", check=True).stdout)
    by_version = {v["version"]: v for v in versions["versions"]}
    assert by_version[1].get("manifest_digest") == digest
    assert "image_ref" not in by_version[2]

    for args, why, code in [
        (("app", ref, "--version", "9"), "no version 9 of 'app' is kept", 1),
        (("app", f"{registry.host}/app@sha256:{'0' * 64}"), "push to a tag, not to a digest", 1),
        (("app", "Not A Ref"), "bad image reference", 1),
        (("nothere", ref), "no function named 'nothere'", 1),
        (("app", ref, "--version", "zero"), "invalid version 'zero'", 2),
        (("app", "127.0.0.1:5999/app:1"), "127.0.0.1:5999", 1),
    ]:
        r = push(faas, *args)
        assert r.returncode == code and r.stderr.startswith("Error: ") and why in r.stderr, r
    # Nothing is left busy or behind: the function serves, redeploys and goes.
    r = faas.make_request(ip, body_size=5, method="POST", keep_body=0)
    assert r["status"] == 200 and r["body_len"] == 5, r
    assert faas.vm.listdir(f"{faasd_unstarted.state_dir}/tmp") == []
    faas.deploy_handler("app", "hello")
    faas.faasd.faas("rm", "app", check=True)


def test_push_with_basic_and_token_auth(faasd_unstarted, faas_unstarted, tmp_path):
    faas = faas_unstarted
    registry = Registry(faas.vm, tmp_path / "basic", htpasswd=("alice", "s3cret-basic"))
    ref = f"{registry.host}/app:1"
    wrong = auth_file(tmp_path / "wrong.json", {registry.host: ("alice", "not-it-0")})
    faasd_unstarted.start("--registry-auth", wrong)
    faas.deploy_handler("app", "hello")
    r = push(faas, "app", ref)
    assert r.returncode == 1 and "refused the credentials" in r.stderr, r

    right = auth_file(tmp_path / "right.json", {registry.host: ("alice", "s3cret-basic"),
                                                "127.0.0.1:5003": ("bob", "t0ken-pass")})
    faasd_unstarted.stop()
    faasd_unstarted.start("--registry-auth", right)
    digest, _ = assert_pushed(faas, push(faas, "app", ref), "app", 1, ref, "uploaded")
    assert registry.digest("app:1", creds=("alice", "s3cret-basic")) == digest

    # Behind the token flow: the push asks for a token that may push.
    tokens = TokenServer(faas.vm, tmp_path, ("bob", "t0ken-pass"))
    behind = Registry(faas.vm, tmp_path / "token", port=5003, token=tokens.registry_auth())
    ref = f"{behind.host}/team/app:1"
    digest, _ = assert_pushed(faas, push(faas, "app", ref), "app", 1, ref, "uploaded")
    # (the registry names the actions in either order)
    granted = [line.split(":")[-1] for line in tokens.requests()
               if line.startswith("ok repository:team/app:")]
    assert {"pull", "push"} in [set(actions.split(",")) for actions in granted], granted
    assert behind.digest("team/app:1", creds=("bob", "t0ken-pass")) == digest
    for secret in ("s3cret-basic", "not-it-0", "t0ken-pass", "Bearer "):
        assert secret not in faasd_unstarted.log()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


OTHER_DIGEST = "sha256:" + "1" * 64
REGISTRY_ERROR = b64(json.dumps({"errors": [{"code": "MANIFEST_INVALID",
                                             "message": "no"}]}).encode())
HOSTILE_PUSHES = {
    "not a registry": ({"/v2/": {"status": 404}}, "is not a registry: GET /v2/ answered 404"),
    "a blob check that fails": ({"HEAD /v2/app/blobs/": {"status": 500}}, "answered 500"),
    "an upload without a location": (
        {"HEAD /v2/app/blobs/": {"status": 404},
         "POST /v2/app/blobs/uploads/": {"status": 202}},
        "started an upload without a Location"),
    "a blob stored under another digest": (
        {"HEAD /v2/app/blobs/": {"status": 404},
         "POST /v2/app/blobs/uploads/": {"status": 202, "headers": {"Location": "/upload/1"}},
         "PUT /upload/": {"status": 201, "headers": {"Docker-Content-Digest": OTHER_DIGEST}}},
        f"stored it as '{OTHER_DIGEST}'"),
    "a manifest stored under another digest": (
        {"HEAD /v2/app/blobs/": {"status": 200},
         "PUT /v2/app/manifests/": {"status": 201,
                                    "headers": {"Docker-Content-Digest": OTHER_DIGEST}}},
        f"stored it as '{OTHER_DIGEST}', not sha256:"),
    "a manifest refused": (
        {"HEAD /v2/app/blobs/": {"status": 200},
         "PUT /v2/app/manifests/": {"status": 400, "body_b64": REGISTRY_ERROR}},
        "answered 400 ('MANIFEST_INVALID')"),
}


def test_hostile_registries_fail_the_push_and_change_nothing(faasd_unstarted, faas_unstarted,
                                                             tmp_path, anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    ip = faas.deploy_handler("app", "hello").ip
    for port, (case, (routes, why)) in enumerate(HOSTILE_PUSHES.items(), start=5010):
        lying = LyingRegistry(faas.vm, tmp_path / f"lying-{port}", {"routes": routes}, port=port)
        r = push(faas, "app", f"{lying.host}/app:1")
        assert r.returncode == 1 and r.stderr.startswith("Error: ") and why in r.stderr, \
            f"{case}: {r}"
        assert "image_ref" not in faas.describe("app"), case
        assert faas.vm.listdir(f"{faasd_unstarted.state_dir}/tmp") == [], case
    faas.assert_handler_responds(ip, hello_body())
    faas.deploy_handler("app", "hello")  # not left busy
