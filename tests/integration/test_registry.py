"""Deploys by image reference: `faas new NAME --image REF` makes faasd pull the image
from a registry (OCI distribution API v2). The registries run inside each test's own
network namespace: Debian's docker-registry (anonymous, htpasswd, behind a token
server) and a lying one written in Python for what a real registry would not send."""

import base64
import hashlib
import json
import re
import subprocess
import time

import pytest

from lib.helpers import hello_body, parse_samples
from lib.images import make_tar, tar_entry
from lib.vm import wait_for
from lib.registry import (ALREADY_RE, LyingRegistry, Registry, TokenServer, auth_file,
                          make_server_cert)

pytestmark = pytest.mark.integration

PULLED_RE = re.compile(r"^✓ Deployed (\S+) at (\d+\.\d+\.\d+\.\d+)\n  Command: .*\n"
                       r"  Image: (\S+) \((sha256:[0-9a-f]{64})\)\n\Z")


def pull(faas, name, ref, *options):
    return faas.faasd.faas("new", name, "--image", ref, *options)


def assert_pulled(faas, r, name, ref, digest):
    assert r.returncode == 0, f"{r}\n--- faasd log ---\n{faas.faasd.log()[-3000:]}"
    m = PULLED_RE.match(r.stdout)
    assert m, f"unexpected `faas new --image` output: {r.stdout!r}"
    assert (m.group(1), m.group(3), m.group(4)) == (name, ref, digest)
    return m.group(2)


def image_id(faas, handler):
    """The sha256 of the handler image's config: what faasd records as image_digest."""
    out = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}",
                          faas.images.tag(handler)], capture_output=True, text=True, check=True)
    return "sha256:" + out.stdout.strip()


def test_deploy_by_tag_and_by_digest(faasd_unstarted, faas_unstarted, tmp_path, anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    registry = Registry(faas.vm, tmp_path / "registry")
    digest = registry.push(faas.image("hello"), "team/hello:1")
    ref = f"{registry.host}/team/hello:1"

    ip = assert_pulled(faas, pull(faas, "web", ref), "web", ref, digest)
    faas.assert_handler_responds(ip, hello_body())
    record = faas.describe("web")
    assert (record["image_ref"], record["manifest_digest"]) == (ref, digest)
    assert record["image_digest"] == image_id(faas, "hello")

    by_digest = f"{registry.host}/team/hello@{digest}"
    ip2 = assert_pulled(faas, pull(faas, "pinned", by_digest), "pinned", by_digest, digest)
    faas.assert_handler_responds(ip2, hello_body())
    assert faas.describe("pinned")["manifest_digest"] == digest


def test_zstd_layers(faasd_unstarted, faas_unstarted, tmp_path, anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    registry = Registry(faas.vm, tmp_path / "registry")
    digest = registry.push(faas.image("hello"), "app:zstd", compression="zstd")
    manifest = json.loads(faas.vm.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                       f"docker://{registry.host}/app:zstd"]).stdout)
    assert {l["mediaType"] for l in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"}
    ref = f"{registry.host}/app:zstd"
    ip = assert_pulled(faas, pull(faas, "app", ref), "app", ref, digest)
    faas.assert_handler_responds(ip, hello_body())


def test_plain_http_only_for_loopback_and_insecure_registries(faasd_unstarted, faas_unstarted,
                                                              tmp_path, anonymous):
    """A registry on an address that is not loopback is reached over HTTPS unless named
    with --insecure-registry (this one speaks plain HTTP, so HTTPS fails)."""
    faas = faas_unstarted
    faas.vm.run(["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"])
    registry = Registry(faas.vm, tmp_path / "registry", addr="192.0.2.1")
    digest = registry.push(faas.image("hello"), "app:1")
    ref = f"{registry.host}/app:1"
    faasd_unstarted.start("--registry-auth", anonymous)
    r = pull(faas, "app", ref)
    assert r.returncode != 0 and r.stderr.startswith("Error: pull 192.0.2.1:5000/app:1: "), r
    assert "https://192.0.2.1:5000/v2/" in r.stderr, r.stderr
    assert faas.list_handlers() == {}

    faasd_unstarted.stop()
    faasd_unstarted.start("--registry-auth", anonymous, "--insecure-registry", registry.host)
    ip = assert_pulled(faas, pull(faas, "app", ref), "app", ref, digest)
    faas.assert_handler_responds(ip, hello_body())

    r = faasd_unstarted.vm.run(faasd_unstarted.command("--insecure-registry", "http://x/"),
                               check=False)
    assert r.returncode == 2 and "--insecure-registry http://x/: expected HOST[:PORT]" in r.stderr


def test_https_registry_is_verified(faasd_unstarted, faas_unstarted, tmp_path, anonymous):
    """A registry that is neither loopback nor insecure is reached over HTTPS, its
    certificate checked: refused while its CA is unknown, trusted with --registry-ca."""
    faas = faas_unstarted
    faas.vm.run(["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"])
    cert, key = make_server_cert(tmp_path, "192.0.2.1")
    registry = Registry(faas.vm, tmp_path / "registry", addr="192.0.2.1", tls=(cert, key))
    digest = registry.push(faas.image("hello"), "app:1")
    ref = f"{registry.host}/app:1"
    faasd_unstarted.start("--registry-auth", anonymous)
    r = pull(faas, "app", ref)
    assert r.returncode != 0 and "certificate" in r.stderr, r
    assert faas.list_handlers() == {}

    faasd_unstarted.stop()
    faasd_unstarted.start("--registry-auth", anonymous, "--registry-ca", str(cert))
    ip = assert_pulled(faas, pull(faas, "app", ref), "app", ref, digest)
    faas.assert_handler_responds(ip, hello_body())


@pytest.mark.faasd_args("--connect-timeout", "2s")
def test_pulled_version_that_does_not_start_keeps_the_old(faas, tmp_path):
    """The start check applies to pulls: a pulled handler that never connects is no
    new version, and a later pull of the same tag is tried again (not "unchanged")."""
    registry = Registry(faas.vm, tmp_path / "registry")
    registry.push(faas.image("never-connects"), "app:2")
    ip = faas.deploy_handler("app").ip
    ref = f"{registry.host}/app:2"
    r = pull(faas, "app", ref)
    assert_refused_old_serves(faas, r, "the new version of app does not start", ip)
    assert "image_ref" not in faas.describe("app")
    r = pull(faas, "app", ref)
    assert_refused_old_serves(faas, r, "the new version of app does not start", ip)


def test_import_limits_bound_pulls(faasd_unstarted, faas_unstarted, tmp_path, anonymous):
    """--max-image-size bounds the bytes a pull downloads (hello's layer, gzip, is
    about 350 KB); nothing of the refused image is left."""
    faas = faas_unstarted
    registry = Registry(faas.vm, tmp_path / "registry")
    registry.push(faas.image("hello"), "app:1")
    faasd_unstarted.start("--registry-auth", anonymous, "--max-image-size", "100000")
    r = pull(faas, "app", f"{registry.host}/app:1")
    assert r.returncode != 0 and "image larger than 100000 bytes" in r.stderr, r
    assert faas.list_handlers() == {}
    assert faas.vm.listdir(f"{faasd_unstarted.state_dir}/tmp") == []


def test_unchanged_tag_is_no_new_version_changed_tag_is(faasd_unstarted, faas_unstarted,
                                                        tmp_path, anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    registry = Registry(faas.vm, tmp_path / "registry")
    hello = registry.push(faas.image("hello"), "app:latest")
    ref = f"{registry.host}/app:latest"
    ip = assert_pulled(faas, pull(faas, "app", ref), "app", ref, hello)

    r = pull(faas, "app", ref)
    assert r.returncode == 0, r
    m = ALREADY_RE.match(r.stdout)
    assert m and m.groups() == ("app", ref, hello), r.stdout
    assert faas.describe("app")["version"] == 1
    assert len(json.loads(faas.faasd.faas("versions", "app", "--json").stdout)["versions"]) == 1
    faas.assert_handler_responds(ip, hello_body())

    echo = registry.push(faas.image("echo"), "app:latest")
    assert echo != hello
    assert_pulled(faas, pull(faas, "app", ref), "app", ref, echo)
    record = faas.describe("app")
    assert (record["version"], record["manifest_digest"]) == (2, echo)
    table = faas.faasd.faas("versions", "app", check=True).stdout.splitlines()
    assert table[0].split()[-2:] == ["Pulled", "from"]
    assert table[1].split()[-1] == f"{ref}@{echo[:19]}"

    # Back to the pulled hello: the rollback's version keeps its reference.
    r = faas.faasd.faas("rollback", "app", check=True)
    record = faas.describe("app")
    assert (record["version"], record["manifest_digest"]) == (1, hello)
    faas.assert_handler_responds(ip, hello_body())


def layer_digests(faas, registry, repo_tag):
    manifest = json.loads(faas.vm.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                       f"docker://{registry.host}/{repo_tag}"]).stdout)
    return [layer["digest"] for layer in manifest["layers"]]


def blob_gets(registry, digest):
    """How many times the registry answered a GET of the blob `digest` (its access log, on stdout)."""
    log = registry.proc.stdout_text()
    return len(re.findall(r'"GET /v2/[^ "]+/blobs/' + re.escape(digest) + r' HTTP', log))


def layer_sizes(faas, registry, repo_tag):
    manifest = json.loads(faas.vm.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                       f"docker://{registry.host}/{repo_tag}"]).stdout)
    return [layer["size"] for layer in manifest["layers"]]


def cache_metrics(faasd):
    """The faasd_layer_cache_* samples of GET /metrics, without the prefix."""
    text = faasd.vm.run(["curl", "-sSf", "--max-time", "10", "--unix-socket", faasd.socket,
                         "http://x/metrics"]).stdout
    return {name.removeprefix("faasd_layer_cache_"): value
            for name, value in parse_samples(text).items()
            if name.startswith("faasd_layer_cache_")}


def cached_blobs(faasd):
    return sorted(faasd.vm.listdir(f"{faasd.state_dir}/cache/blobs/sha256"))


def applied_layers(faasd):
    return [n for n in faasd.vm.listdir(f"{faasd.state_dir}/layers") if n.startswith("sha256-")]


def test_layers_are_downloaded_once_for_every_function_and_version(faasd_unstarted,
                                                                   faas_unstarted, tmp_path,
                                                                   anonymous):
    """A layer shared by two images (two repositories of one registry) and by a
    redeploy after `faas rm` is downloaded once: the registry's log counts the GETs."""
    faas = faas_unstarted
    faasd = faasd_unstarted.start("--registry-auth", anonymous)
    registry = Registry(faas.vm, tmp_path / "registry")
    registry.push(faas.image("hello"), "team/a:1")
    registry.push(faas.image("hello"), "team/b:1")
    layers = layer_digests(faas, registry, "team/a:1")
    assert layers and all(blob_gets(registry, d) == 0 for d in layers)

    for name, repo in (("one", "team/a:1"), ("two", "team/b:1"), ("three", "team/a:1")):
        ref = f"{registry.host}/{repo}"
        ip = assert_pulled(faas, pull(faas, name, ref), name, ref, registry.digest(repo))
        faas.assert_handler_responds(ip, hello_body())
        assert [blob_gets(registry, d) for d in layers] == [1] * len(layers), name
    faas.faasd.faas("rm", "one", check=True)
    ref = f"{registry.host}/team/a:1"
    assert_pulled(faas, pull(faas, "one", ref), "one", ref, registry.digest("team/a:1"))
    assert [blob_gets(registry, d) for d in layers] == [1] * len(layers)
    assert cached_blobs(faasd) == sorted(d.removeprefix("sha256:") for d in layers)
    # One miss per layer; the later deploys found the layers applied already, in
    # STATE/layers, and did not need the cache.
    metrics = cache_metrics(faasd)
    assert metrics["misses_total"] == len(layers) and metrics["hits_total"] == 0
    assert metrics["blobs"] == len(layers) and metrics["limit_bytes"] == 1 << 30
    assert 0 < metrics["bytes"] == sum(layer_sizes(faas, registry, "team/a:1"))

    # With every function gone, so are the applied layers: the next deploy takes the
    # layers from the cache.
    for name in ("one", "two", "three"):
        faas.faasd.faas("rm", name, check=True)
    wait_for(lambda: not applied_layers(faasd), timeout=10, what="the applied layers removed")
    assert_pulled(faas, pull(faas, "one", ref), "one", ref, registry.digest("team/a:1"))
    assert [blob_gets(registry, d) for d in layers] == [1] * len(layers)
    assert cache_metrics(faasd)["hits_total"] == len(layers)

    # Kept across a restart.
    faasd.stop()
    faasd.start("--registry-auth", anonymous)
    assert_pulled(faas, pull(faas, "four", ref), "four", ref, registry.digest("team/a:1"))
    assert [blob_gets(registry, d) for d in layers] == [1] * len(layers)


def test_cache_size_bounds_the_layer_cache(faasd_unstarted, faas_unstarted, tmp_path, anonymous):
    """--cache-size 0 keeps no layer past its deploy: once the function that applied the
    layers is gone, the next pull downloads them again."""
    faas = faas_unstarted
    faasd = faasd_unstarted.start("--registry-auth", anonymous, "--cache-size", "0")
    registry = Registry(faas.vm, tmp_path / "registry")
    digest = registry.push(faas.image("hello"), "app:1")
    layers = layer_digests(faas, registry, "app:1")
    ref = f"{registry.host}/app:1"
    for i, name in enumerate(("one", "two"), start=1):
        ip = assert_pulled(faas, pull(faas, name, ref), name, ref, digest)
        faas.assert_handler_responds(ip, hello_body())
        assert [blob_gets(registry, d) for d in layers] == [i] * len(layers)
        assert cached_blobs(faasd) == []
        faas.faasd.faas("rm", name, check=True)
        wait_for(lambda: not applied_layers(faasd), timeout=10, what="the applied layers removed")
    metrics = cache_metrics(faasd)
    assert (metrics["misses_total"], metrics["evictions_total"]) == (2 * len(layers),
                                                                     2 * len(layers))
    assert (metrics["blobs"], metrics["bytes"], metrics["limit_bytes"]) == (0, 0, 0)

    r = faasd_unstarted.vm.run(faasd_unstarted.command("--cache-size", "lots"), check=False)
    assert r.returncode == 2 and "invalid --cache-size 'lots'" in r.stderr, r


def assert_refused_old_serves(faas, r, why, ip, version=1):
    """A pull that failed: `Error: ...why...`, and the serving version still serves."""
    assert r.returncode != 0, f"the deploy succeeded: {r}"
    assert r.stderr.startswith("Error: ") and why in r.stderr, r.stderr
    assert faas.describe("app")["version"] == version
    faas.assert_handler_responds(ip, hello_body())


def test_basic_auth_right_and_wrong_credentials(faasd_unstarted, faas_unstarted, tmp_path):
    faas = faas_unstarted
    registry = Registry(faas.vm, tmp_path / "registry", htpasswd=("alice", "s3cret-basic"))
    digest = registry.push(faas.image("hello"), "app:1", creds=("alice", "s3cret-basic"))
    ref = f"{registry.host}/app:1"

    wrong = auth_file(tmp_path / "wrong.json", {registry.host: ("alice", "not-it-0")})
    faasd_unstarted.start("--registry-auth", wrong)
    ip = faas.deploy_handler("app").ip
    assert_refused_old_serves(faas, pull(faas, "app", ref), "refused the credentials", ip)

    none = auth_file(tmp_path / "none.json", {})
    faasd_unstarted.stop()
    faasd_unstarted.start("--registry-auth", none)
    assert_refused_old_serves(faas, pull(faas, "app", ref), "needs credentials", ip)

    right = auth_file(tmp_path / "right.json", {registry.host: ("alice", "s3cret-basic")})
    faasd_unstarted.stop()
    faasd_unstarted.start("--registry-auth", right)
    assert_pulled(faas, pull(faas, "app", ref), "app", ref, digest)
    describe = faas.faasd.faas("describe", "app", check=True).stdout
    for secret in ("s3cret-basic", "not-it-0", base64.b64encode(b"alice:s3cret-basic").decode()):
        assert secret not in faasd_unstarted.log()
        assert secret not in describe
        assert secret not in faas.vm.read_file(f"{faasd_unstarted.state_dir}/registry.json").decode()


def test_token_auth_right_and_wrong_credentials(faasd_unstarted, faas_unstarted, tmp_path):
    faas = faas_unstarted
    tokens = TokenServer(faas.vm, tmp_path, ("bob", "t0ken-pass"))
    registry = Registry(faas.vm, tmp_path / "registry", token=tokens.registry_auth())
    # skopeo goes through the same token flow to push.
    digest = registry.push(faas.image("hello"), "team/app:1", creds=("bob", "t0ken-pass"))
    ref = f"{registry.host}/team/app:1"

    wrong = auth_file(tmp_path / "wrong.json", {registry.host: ("bob", "bad-pass-1")})
    faasd_unstarted.start("--registry-auth", wrong)
    ip = faas.deploy_handler("app").ip
    assert_refused_old_serves(faas, pull(faas, "app", ref), "token server", ip)
    assert tokens.requests()[-1] == "refused repository:team/app:pull"

    right = auth_file(tmp_path / "right.json", {registry.host: ("bob", "t0ken-pass")})
    faasd_unstarted.stop()
    faasd_unstarted.start("--registry-auth", right)
    assert_pulled(faas, pull(faas, "app", ref), "app", ref, digest)
    assert tokens.requests()[-1] == "ok repository:team/app:pull"
    describe = faas.faasd.faas("describe", "app", check=True).stdout
    for secret in ("t0ken-pass", "bad-pass-1", "Bearer", "eyJ"):
        assert secret not in faasd_unstarted.log()
        assert secret not in describe


@pytest.mark.parametrize("content, why", [
    (None, "cannot read the registry auth file"),
    ("{not json", "not a JSON object"),
    ('{"auths": {"h": {"auth": "@@@"}}}', "not base64 of user:password"),
])
def test_bad_registry_auth_file_stops_faasd(faasd_unstarted, tmp_path, content, why):
    path = tmp_path / "auth.json"
    if content is not None:
        path.write_text(content)
    r = faasd_unstarted.vm.run(faasd_unstarted.command("--registry-auth", str(path)), check=False)
    assert r.returncode == 2, r
    assert r.stderr.startswith("Error: registry auth file") or r.stderr.startswith(
        "Error: cannot read the registry auth file"), r.stderr
    assert why in r.stderr and "@@@" not in r.stderr, r.stderr


# --- a lying registry -------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def crafted_image(layer_type=OCI_LAYER):
    """(manifest, config, layer) bytes of a one-layer image, digests all correct."""
    layer = make_tar([tar_entry("handler", data=b"#!/bin/sh\nexit 0\n")])
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/handler"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": sha(layer), "size": len(layer)}],
    }).encode()
    return manifest, config, layer


def routes_for(repo, image, override):
    """The routes serving `image` (crafted_image()) as repo:tag; `override` replaces
    routes by role: "manifest", "config", "layer" (each a ROUTE of
    tests/lib/lying_registry.py)."""
    manifest, config, layer = image
    routes = {
        f"/v2/{repo}/manifests/tag": override.get("manifest", {
            "headers": {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha(manifest)},
            "body_b64": b64(manifest)}),
        f"/v2/{repo}/blobs/{sha(config)}": override.get("config", {"body_b64": b64(config)}),
        f"/v2/{repo}/blobs/{sha(layer)}": override.get("layer", {"body_b64": b64(layer)}),
    }
    return routes


def hostile_cases():
    manifest, config, layer = crafted_image()
    other = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    foreign = crafted_image("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
    arm_only = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest),
         "platform": {"os": "linux", "architecture": "riscv64"}}]}).encode()
    untyped = json.dumps({k: v for k, v in json.loads(manifest).items()
                          if k != "mediaType"}).encode()
    blob = f"/v2/lies/blobs/{sha(layer)}"
    manifest_of = lambda body, ctype=OCI_MANIFEST: {  # noqa: E731
        "headers": {"Content-Type": ctype}, "body_b64": b64(body)}
    return {
        "wrong-manifest-digest": ({"manifest": {
            "headers": {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha(b"x")},
            "body_b64": b64(manifest)}}, "tag", "digest mismatch"),
        "wrong-manifest-by-digest": ({}, "@" + sha(other), "not found"),
        "wrong-layer-bytes": ({"layer": {"body_b64": b64(bytes(len(layer)))}}, "tag",
                              "digest mismatch"),
        "wrong-config-bytes": ({"config": {"body_b64": b64(config.replace(b"amd64", b"AMD64"))}},
                               "tag", "not its descriptor's"),
        "endless-layer": ({"layer": {"body_b64": b64(layer), "endless": True}}, "tag",
                          "sent more than its"),
        "short-layer": ({"layer": {"body_b64": b64(layer[:100])}}, "tag", "sent 100 of its"),
        "redirect-loop": ({"layer": {"redirect": blob}}, "tag", "too many redirects"),
        "huge-manifest": ({"manifest": manifest_of(b" " * (5 << 20) + manifest)}, "tag",
                          "larger than 4194304 bytes"),
        "garbage-manifest": ({"manifest": manifest_of(b"\x00\xffgarbage")}, "tag",
                             "invalid JSON"),
        "schema-1": ({"manifest": manifest_of(
            b'{"schemaVersion": 1}', "application/vnd.docker.distribution.manifest.v1+prettyjws")},
            "tag", "schema 1 manifests are not supported"),
        "unknown-media-type": ({"manifest": manifest_of(untyped, "application/x-example")},
                               "tag", "unknown media type"),
        "foreign-layer": ({"manifest": manifest_of(foreign[0])}, "tag", "foreign layer"),
        "foreign-platforms-only": ({"manifest": manifest_of(arm_only, OCI_INDEX)}, "tag",
                                   "no image for linux/"),
        "unknown-tag": ({}, "nope", "not found in registry"),
    }


@pytest.mark.parametrize("case", sorted(hostile_cases()))
def test_hostile_registry_is_refused_old_version_serves(faasd_unstarted, faas_unstarted, tmp_path,
                                                        anonymous, case):
    faas = faas_unstarted
    override, target, why = hostile_cases()[case]
    lying = LyingRegistry(faas.vm, tmp_path,
                          {"routes": routes_for("lies", crafted_image(), override)})
    faasd_unstarted.start("--registry-auth", anonymous)
    ip = faas.deploy_handler("app").ip
    ref = f"{lying.host}/lies" + (target if target.startswith("@") else ":" + target)
    r = pull(faas, "app", ref)
    assert_refused_old_serves(faas, r, why, ip)
    assert faas.vm.listdir(f"{faasd_unstarted.state_dir}/tmp") == []
    assert [e for e in faas.vm.listdir(f"{faasd_unstarted.state_dir}/images/app")
            if e.startswith(".new")] == []


def test_redirected_blobs_are_followed(faasd_unstarted, faas_unstarted, tmp_path, anonymous):
    faas = faas_unstarted
    manifest, config, layer = crafted_image()
    routes = routes_for("img", (manifest, config, layer),
                        {"layer": {"redirect": "/storage/layer-1"},
                         "config": {"redirect": "/storage/c"}})
    routes["/storage/layer-1"] = {"redirect": "/storage/layer-2"}
    routes["/storage/layer-2"] = {"body_b64": b64(layer)}
    routes["/storage/c"] = {"body_b64": b64(config)}
    lying = LyingRegistry(faas.vm, tmp_path, {"routes": routes})
    faasd_unstarted.start("--registry-auth", anonymous)
    ref = f"{lying.host}/img:tag"
    r = pull(faas, "img", ref, "--no-start-check")
    assert_pulled(faas, r, "img", ref, sha(manifest))
    handler = faas.vm.read_file(f"{faasd_unstarted.state_dir}/images/img/rootfs/handler")
    assert handler == b"#!/bin/sh\nexit 0\n"


def test_a_registry_that_stalls_is_given_up(faasd_unstarted, faas_unstarted, tmp_path,
                                            anonymous):
    """Under 1 KiB/s for 30 s aborts the transfer: a registry cannot hold a deploy."""
    faas = faas_unstarted
    lying = LyingRegistry(faas.vm, tmp_path, {"routes": {
        "/v2/slow/manifests/tag": {"headers": {"Content-Type": OCI_MANIFEST}, "trickle": True}}})
    faasd_unstarted.start("--registry-auth", anonymous)
    ip = faas.deploy_handler("app").ip
    started = time.monotonic()
    r = pull(faas, "app", f"{lying.host}/slow:tag")
    assert_refused_old_serves(faas, r, "too slow", ip)
    assert 29 < time.monotonic() - started < 60


def test_both_archive_and_image_is_a_usage_error(faasd_unstarted, faas_unstarted, anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    r = faas.faasd.faas("new", "app", "--image", "127.0.0.1:1/x:1", stdin_path=faas.image("hello"))
    assert r.returncode == 2 and r.stderr.startswith("Error: give an image archive"), r
    r = faas.faasd.faas("new", "app", "--image", "Bad/Ref")
    assert r.returncode == 2 and r.stderr.startswith("Error: bad image reference"), r
    r = faas.faasd.faas("new", "app", "--image", "127.0.0.1:1/x", "--platform", "linux")
    assert r.returncode == 2 and r.stderr.startswith("Error: bad platform"), r
    # The API refuses a reference with an archive too, before anything is pulled.
    status, body = faas.faasd.api("POST", "/api/new", {
        "X-Image-Name": "app", "X-Function-Options": json.dumps({"image": "127.0.0.1:1/x"})},
        body_path=faas.image("hello"))
    assert status == 400 and "takes no image archive" in body["error"], (status, body)
    status, body = faas.faasd.api("POST", "/api/new", {
        "X-Image-Name": "app", "X-Function-Options": json.dumps({"platform": "linux/arm64"})})
    assert status == 400 and body["error"] == "platform: only with an image reference"
    assert faas.list_handlers() == {}


def two_platform_layout(vm, archive, layout):
    """An OCI layout of `archive` whose index has the image twice: linux/amd64 as built
    and linux/arm64 (the same layers under a config that says arm64). Returns the
    config digests {platform: digest}."""
    vm.run(["skopeo", "copy", "-q", f"docker-archive:{archive}", f"oci:{layout}:x"], timeout=120)
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = json.loads((blobs / entry["digest"].split(":")[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    configs = {"linux/amd64": manifest["config"]["digest"]}
    config["architecture"] = "arm64"
    arm_config = json.dumps(config).encode()
    (blobs / sha(arm_config).split(":")[1]).write_bytes(arm_config)
    manifest["config"] = dict(manifest["config"], digest=sha(arm_config), size=len(arm_config))
    arm_manifest = json.dumps(manifest).encode()
    (blobs / sha(arm_manifest).split(":")[1]).write_bytes(arm_manifest)
    configs["linux/arm64"] = sha(arm_config)
    # The two-platform index is a blob; the layout's index.json names it "x".
    nested = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": entry["digest"], "size": entry["size"],
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": sha(arm_manifest), "size": len(arm_manifest),
         "platform": {"os": "linux", "architecture": "arm64"}}]}).encode()
    (blobs / sha(nested).split(":")[1]).write_bytes(nested)
    index["manifests"] = [{"mediaType": OCI_INDEX, "digest": sha(nested), "size": len(nested),
                           "annotations": {"org.opencontainers.image.ref.name": "x"}}]
    (layout / "index.json").write_text(json.dumps(index))
    return configs


def test_multi_platform_index_picks_the_platform(faasd_unstarted, faas_unstarted, tmp_path,
                                                 anonymous):
    faas = faas_unstarted
    faasd_unstarted.start("--registry-auth", anonymous)
    registry = Registry(faas.vm, tmp_path / "registry")
    configs = two_platform_layout(faas.vm, faas.image("hello"), tmp_path / "layout")
    registry.push_oci(str(tmp_path / "layout"), "x", "multi:1")
    index_digest = registry.digest("multi:1")
    ref = f"{registry.host}/multi:1"

    ip = assert_pulled(faas, pull(faas, "app", ref), "app", ref, index_digest)
    record = faas.describe("app")
    assert (record["manifest_digest"], record["image_digest"], record["platform"]) == (
        index_digest, configs["linux/amd64"], "linux/amd64")
    faas.assert_handler_responds(ip, hello_body())

    # The arm64 entry has the same layers (it runs here); its config is what differs.
    assert_pulled(faas, pull(faas, "app", ref, "--platform", "linux/arm64"), "app", ref,
                  index_digest)
    record = faas.describe("app")
    assert (record["image_digest"], record["platform"]) == (configs["linux/arm64"], "linux/arm64")

    r = pull(faas, "app", ref, "--platform", "linux/s390x")
    assert_refused_old_serves(faas, r, "no image for linux/s390x in the index", ip, version=2)
    assert "linux/amd64, linux/arm64" in r.stderr
