"""Untrusted strings from an image's config and from deploy options.

* A Cmd full of terminal escapes deploys, and every CLI output that shows it (`faas new`,
  `faas list`, `faas list --json`, `faas describe`) carries no raw control byte.
* An Env entry runc cannot exec with (a NUL, a newline in the key, an empty key), from
  the image or from `--env` / X-Function-Options, is refused at deploy with a clear error;
  the previous version keeps serving and nothing is left.
* A missing WorkingDir is created at import (root-owned, 0755), so a request leaves the
  shared rootfs as it was; a WorkingDir that is relative, a file or a link out of the
  image is refused at deploy.
"""

import json
import re
import uuid

import pytest

from lib.helpers import DEPLOYED_RE, hello_body
from lib.images import make_docker_archive, tar_entry

pytestmark = pytest.mark.integration

# What a terminal acts on, but the newline ending each line of output.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f\x80-\x9f\u2028-\u202e\u2066-\u2069]")


def hello_archive(faas, name, *members, cmd=None, **run_config):
    """A crafted docker-archive: the hello handler at /handler, `members` beside it and
    `run_config` in the image config."""
    handler = faas.images.binary("hello").read_bytes()
    data = make_docker_archive([[tar_entry("handler", data=handler), *members]], cmd=cmd,
                               run_config=run_config)
    return faas.put_archive(data, f"{name}.tar")


def assert_no_raw_control(text):
    found = RAW_CONTROL.search(text)
    assert found is None, f"raw {found.group()!r} in {text!r}"


def assert_refused_and_nothing_left(faas, faasd, previous, before, status, body, cli, message,
                                    cli_code=1):
    """The API answered 400 `message`, `faas new` printed it, and fn is as it was."""
    assert (status, body) == (400, {"error": message})
    assert (cli.returncode, cli.stdout, cli.stderr) == (cli_code, "", f"Error: {message}\n"), cli
    assert faas.read_registry() == before
    assert faas.vm.listdir(f"{faasd.state_dir}/images/fn") == ["rootfs", "v1"]
    assert faas.vm.listdir(f"{faasd.state_dir}/tmp") == []
    faas.assert_handler_responds(previous.ip, expected_body=hello_body())


# --- Cmd -------------------------------------------------------------------------------

ESCAPING_CMD = ["/handler", "\x1b]0;owned\x07", "\x1b[2J\x1b[31mred", "\u009b31m",
                "\u202eevil", "tab\there", "nl\nx", "del\x7f"]


def test_cmd_with_terminal_escapes_is_printed_escaped(faas, faasd):
    path = hello_archive(faas, "esc", cmd=ESCAPING_CMD)
    r = faasd.faas("new", "esc", stdin_path=path)
    assert r.returncode == 0, r
    assert_no_raw_control(r.stdout)
    m = DEPLOYED_RE.match(r.stdout)
    assert m and m.group(1) == "esc", r.stdout
    assert json.loads(m.group(3)) == ESCAPING_CMD, "the Command line is the same JSON"
    faas.assert_handler_responds(m.group(2), expected_body=hello_body())

    listed = faasd.faas("list", check=True).stdout
    assert_no_raw_control(listed)
    row = listed.splitlines()[1]
    assert row.endswith(" /handler \\x1b]0;owned\\x07 \\x1b[2J\\x1b[31mred \\u009b31m "
                        "\\u202eevil tab\\x09here nl\\x0ax del\\x7f"), row
    as_json = faasd.faas("list", "--json", check=True).stdout
    assert_no_raw_control(as_json.replace("\n", ""))
    assert json.loads(as_json)["esc"]["cmd"] == ESCAPING_CMD
    described = faasd.faas("describe", "esc", check=True).stdout
    assert_no_raw_control(described)
    assert json.loads(described)["cmd"] == ESCAPING_CMD


# --- Env -------------------------------------------------------------------------------

BAD_IMAGE_ENV = {
    "nul": ("A=x\x00y", "invalid env 'A=x\\x00y': it contains a NUL byte"),
    "newline-in-key": ("A\nB=1", "invalid env 'A\\x0aB=1': the key contains a control character"),
    "empty-key": ("=1", "invalid env '=1': the key is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGE_ENV))
def test_image_env_that_cannot_be_execed_is_refused(faas, faasd, case):
    """Regression: an image Env with a NUL deployed, then every request answered 502."""
    entry, why = BAD_IMAGE_ENV[case]
    previous = faas.deploy_handler("fn")
    before = faas.read_registry()
    path = hello_archive(faas, f"env-{case}", Env=["PATH=/usr/bin:/bin", entry])
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "fn"}, body_path=path)
    cli = faasd.faas("new", "fn", stdin_path=path)
    assert_refused_and_nothing_left(faas, faasd, previous, before, status, body, cli,
                                    f"image config: config.Env: {why}")


BAD_OPTION_ENV = {
    "newline-in-key": ("A\nB=1", "invalid env 'A\\x0aB=1': the key contains a control character"),
    "escape-in-key": ("A\x1b[2J=1", "invalid env 'A\\x1b[2J=1': the key contains a control "
                                    "character"),
    "empty-key": ("=1", "invalid env '=1': the key is empty"),
    "no-equals": ("NOEQUALS", "invalid env 'NOEQUALS': expected KEY=VALUE"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTION_ENV))
def test_env_option_is_refused_by_cli_and_api(faas, faasd, case):
    """`faas new --env` refuses before any request (usage error, exit 2); faasd refuses
    the same entry in X-Function-Options with 400."""
    entry, message = BAD_OPTION_ENV[case]
    previous = faas.deploy_handler("fn")
    before = faas.read_registry()
    path = faas.image("hello")
    status, body = faasd.api("POST", "/api/new", body_path=path, headers={
        "X-Image-Name": "fn", "X-Function-Options": json.dumps({"env": [entry]})})
    cli = faasd.faas("new", "--env", entry, "fn", stdin_path=path)
    assert_refused_and_nothing_left(faas, faasd, previous, before, status, body, cli, message,
                                    cli_code=2)


def test_env_option_with_nul_is_refused_by_the_api(faas, faasd):
    previous = faas.deploy_handler("fn")
    before = faas.read_registry()
    status, body = faasd.api("POST", "/api/new", body_path=faas.image("hello"), headers={
        "X-Image-Name": "fn", "X-Function-Options": json.dumps({"env": ["A=x\x00y"]})})
    assert (status, body) == (400, {"error": "invalid env 'A=x\\x00y': it contains a NUL byte"})
    assert faas.read_registry() == before
    assert faas.vm.listdir(f"{faasd.state_dir}/images/fn") == ["rootfs", "v1"]
    faas.assert_handler_responds(previous.ip, expected_body=hello_body())


# --- WorkingDir ------------------------------------------------------------------------

def rootfs_snapshot(faas, root):
    """Every path of the tree with its type, mode, owner, size and mtime."""
    return faas.stat(root, *[f"{root}/{p}" for p in faas.tree(root)])


def test_missing_working_dir_is_created_at_import_not_at_request(faas, faasd):
    """Regression: runc created a missing WorkingDir at request time, inside the rootfs
    every request of the function shares."""
    path = hello_archive(faas, "wd", WorkingDir="/srv/app")
    d = faas.deploy_handler("wd", archive=path)
    version = f"{faasd.state_dir}/images/wd/v1"
    owner = faas.vm.run(["stat", "-c", "%F %a %u %g", f"{version}/srv", f"{version}/srv/app"])
    assert owner.stdout.splitlines() == ["directory 755 0 0"] * 2
    before = rootfs_snapshot(faas, version)
    faas.assert_handler_responds(d.ip, expected_body=hello_body())
    faas.wait_for_cleanup()
    assert rootfs_snapshot(faas, version) == before, "the request changed the rootfs"


def bad_working_dirs(outside):
    """name -> (WorkingDir, extra members, the error)."""
    up = "../" * 16 + outside.lstrip("/")
    return {
        "relative": ("app", [], "the image's WorkingDir 'app' is not an absolute path"),
        "file": ("/handler", [],
                 "the image's WorkingDir '/handler' is not a directory in the image "
                 "(at /handler)"),
        "absolute-link-out": ("/work/sub", [tar_entry("work", "symlink", target=outside)],
                              "the image's WorkingDir '/work/sub' leads out of the image "
                              "(at /work)"),
        "relative-link-out": ("/work", [tar_entry("work", "symlink", target=up)],
                              "the image's WorkingDir '/work' leads out of the image "
                              "(at /work)"),
        "dotdot": ("/srv/../../x", [], "the image's WorkingDir '/srv/../../x' has a '..' "
                                       "component"),
    }


@pytest.mark.parametrize("case", ["relative", "file", "absolute-link-out", "relative-link-out",
                                  "dotdot"])
def test_bad_working_dir_is_refused(faas, faasd, case):
    outside = f"{faasd.run_dir}/outside-{uuid.uuid4().hex[:8]}"
    faas.vm.run(["mkdir", "-p", outside])
    working_dir, members, message = bad_working_dirs(outside)[case]
    previous = faas.deploy_handler("fn")
    before = faas.read_registry()
    path = hello_archive(faas, f"wd-{case}", *members, WorkingDir=working_dir)
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "fn"}, body_path=path)
    cli = faasd.faas("new", "fn", stdin_path=path)
    assert_refused_and_nothing_left(faas, faasd, previous, before, status, body, cli, message)
    assert faas.vm.listdir(outside) == [], "something was created outside the image"
