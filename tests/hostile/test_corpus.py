"""The malicious archive corpus (tests/corpus/make_corpus.py) against faasd's importer.

Every archive aims at a directory outside the state dir (`outside`, where victim files
are planted) with `../` and absolute paths, symlinks, hard links and whiteouts, or at
faasd's resources with bombs, sparse files, huge member counts and malformed JSON.

* unit tier: `faasd unpack` refuses each archive that the importer must refuse, with
  the expected message, and writes nothing outside its directory.
* integration tier: one faasd (with the corpus's limits) already serves a good `fn`;
  every archive is deployed as `fn` through the API and through `faas new`. Each is
  refused with a clear 400 (413 for limits) and leaves no trace: the state dir, the
  registry, the serving rootfs and the outside directory are exactly as before, and
  the previous version keeps serving. The few hostile-looking archives that faasd
  accepts (a FIFO, setuid bits, a symlink replaced by a file, an opaque whiteout on a
  link, device nodes, which are skipped and counted) are checked to be contained in
  the new rootfs, which then serves and never holds a device node.

The outcome table (case, status, message) is printed (`-s` or `-rA`) and written to
/tmp/faasd-hostile-corpus.md.
"""

import json
import stat
import sys
import uuid
from pathlib import Path

import pytest

from lib.helpers import hello_body

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import make_corpus  # noqa: E402

TABLE_PATH = "/tmp/faasd-hostile-corpus.md"
OUTSIDE = f"/tmp/faasd-hostile-outside-{uuid.uuid4().hex[:10]}"
CASES = make_corpus.cases(OUTSIDE, make_corpus.PLACEHOLDER)
IMPORT_CASES = [c.name for c in CASES if c.stage == "import" and c.status != 200]


@pytest.fixture(scope="module")
def corpus(images, tmp_path_factory):
    """name -> case dict of cases.json; the archives are built once, with the hello
    binary as their /handler (so that the accepted ones serve)."""
    out = tmp_path_factory.mktemp("corpus")
    handler = images.binary("hello").read_bytes()
    return {c["name"]: c for c in make_corpus.build(str(out), OUTSIDE, handler)}


@pytest.fixture
def outside(vm):
    """The directory the archives aim at, with the victims planted; removed after."""
    vm.run(["mkdir", "-p", OUTSIDE])
    for name, data in make_corpus.VICTIMS.items():
        vm.write_file(f"{OUTSIDE}/{name}", data, mode=0o755 if name == "victim-exec" else 0o644)
    yield OUTSIDE
    vm.run(["rm", "-rf", OUTSIDE])


def outside_snapshot(faas, path):
    """Names, contents, link counts and modes of everything in `path`."""
    r = faas.vm.run(["find", path, "-mindepth", "1", "-printf", "%P %y %n %m %s\n"])
    files = {}
    for line in r.stdout.splitlines():
        name = line.split(" ", 1)[0]
        content = faas.vm.read_file(f"{path}/{name}") if " f " in line else None
        files[line] = content
    return files


def message_of(body):
    return body["error"] if isinstance(body, dict) and set(body) == {"error"} else None


# --- unit tier: the importer alone ------------------------------------------------------

def unpack(vm, build_dir, case):
    """`faasd unpack` of the case's archive into WORK/rootfs; returns (result, WORK)."""
    faasd_bin = vm.import_file(str(build_dir / "faasd"))
    work = f"{vm.run_dir}/unpack-{uuid.uuid4().hex[:8]}"
    vm.run(["mkdir", "-p", work])
    r = vm.run([faasd_bin, *make_corpus.LIMIT_ARGS, "unpack", vm.import_file(case["file"]),
                f"{work}/rootfs"], check=False, timeout=120)
    return r, work


@pytest.mark.unit
@pytest.mark.parametrize("name", IMPORT_CASES)
def test_unpack_refuses_malicious_archive(vm, build_dir, corpus, outside, name):
    case = corpus[name]
    before = [(p, vm.read_file(f"{outside}/{p}")) for p in sorted(make_corpus.VICTIMS)]
    r, work = unpack(vm, build_dir, case)
    assert r.returncode == 1, r
    assert r.stdout == ""
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    assert any(m in r.stderr for m in case["messages"]), (case["messages"], r.stderr)
    # Nothing outside the rootfs directory: no new file next to it, none in `outside`.
    assert vm.listdir(work) == ["rootfs"]
    assert vm.listdir(outside) == sorted(make_corpus.VICTIMS)
    assert [(p, vm.read_file(f"{outside}/{p}")) for p in sorted(make_corpus.VICTIMS)] == before
    links = vm.run(["stat", "-c", "%h", *[f"{outside}/{p}" for p in sorted(make_corpus.VICTIMS)]])
    assert links.stdout.split() == ["1"] * len(make_corpus.VICTIMS)


SKIPPING_CASES = [c.name for c in CASES if c.status == 200 and c.skipped]


@pytest.mark.unit
@pytest.mark.parametrize("name", SKIPPING_CASES)
def test_unpack_skips_device_nodes(vm, build_dir, corpus, outside, name):
    case = corpus[name]
    r, work = unpack(vm, build_dir, case)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["skipped"] == case["skipped"]
    warnings = [line for line in r.stderr.splitlines() if " warning " in line]
    assert len(warnings) == 1 and f"skipped {case['skipped']['devices']} device node(s)" \
        in warnings[0], r.stderr
    assert device_nodes(vm, f"{work}/rootfs") == ""
    for name in case["contained"]["absent"]:
        assert vm.run(["stat", f"{work}/rootfs/{name}"], check=False).returncode != 0, name
    assert vm.listdir(outside) == sorted(make_corpus.VICTIMS)


# --- integration tier: through faasd ----------------------------------------------------

def device_nodes(vm, root):
    """Block and character devices anywhere in the tree at `root`."""
    return vm.run(["find", root, "(", "-type", "b", "-o", "-type", "c", ")", "-print"]).stdout


def check_contained(faas, root, contained):
    """What an accepted hostile-looking archive must have produced in its rootfs; never
    a device node."""
    assert device_nodes(faas.vm, root) == ""
    for name in contained.get("absent", []):
        r = faas.vm.run(["stat", f"{root}/{name}"], check=False)
        assert r.returncode != 0, (name, r.stdout)
    for name in contained.get("regular", []):
        r = faas.vm.run(["stat", "-c", "%F", f"{root}/{name}"])
        assert r.stdout.strip() == "regular file", (name, r.stdout)
    for name in contained.get("fifo", []):
        r = faas.vm.run(["stat", "-c", "%F %a", f"{root}/{name}"])
        assert r.stdout.strip() == "fifo 644", (name, r.stdout)
    for name, target in contained.get("symlink", {}).items():
        r = faas.vm.run(["readlink", f"{root}/{name}"])
        assert r.stdout.strip() == target, (name, r.stdout)
    for name, (mode, uid, gid) in contained.get("modes", {}).items():
        st = faas.stat(f"{root}/{name}")[f"{root}/{name}"]
        owner = faas.vm.run(["stat", "-c", "%u %g", f"{root}/{name}"]).stdout.split()
        assert (oct(st["mode"]), owner) == (oct(mode), [str(uid), str(gid)]), name


def state_snapshot(faas, faasd):
    """Every path under the state dir with its inode, mode, size and (but for
    directories, where a refused import came and went) mtime: a rewrite of the
    registry or of any file of the serving rootfs shows."""
    snap = faas.stat_tree(faasd.state_dir)
    for st in snap.values():
        if st is not None and stat.S_ISDIR(st["mode"]):
            del st["mtime_ns"]
    return snap


def write_table(rows):
    lines = ["| case | status | message |", "|---|---|---|"]
    for name, status, message in rows:
        lines.append(f"| {name} | {status} | {message.replace('|', '/')} |")
    text = "\n".join(lines) + "\n"
    with open(TABLE_PATH, "w") as f:
        f.write(text)
    print("\n" + text)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.faasd_args(*make_corpus.LIMIT_ARGS)
def test_corpus_refused_and_previous_version_keeps_serving(faas, faasd, corpus, outside):
    d = faas.deploy_handler("fn")
    victims = outside_snapshot(faas, outside)
    rows, problems = [], []
    version = 1
    for name, case in corpus.items():
        state_before = state_snapshot(faas, faasd)
        registry_before = faas.read_registry()
        path = faas.vm.import_file(case["file"])
        status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "fn"},
                                 body_path=path)
        message = message_of(body)
        rows.append((name, status, message if message is not None else json.dumps(body)))
        cli = None
        fn_dir = f"{faasd.state_dir}/images/fn"
        try:
            assert status == case["status"], f"status {status}, expected {case['status']}: {body}"
            if case["accepted"]:
                version += 1
                skipped = {"skipped": case["skipped"]} if case["skipped"] else {}
                assert body == {"name": "fn", "ip": d.ip, "cmd": ["/handler"], **skipped}, body
                assert faas.read_registry()["fn"]["version"] == version
                check_contained(faas, f"{fn_dir}/v{version}", case["contained"])
                faas.assert_handler_responds(d.ip, expected_body=hello_body())
                # The last three versions are kept (--keep-versions), older ones go.
                kept = [f"v{v}" for v in range(max(1, version - 2), version + 1)]
                faas.wait_for_cleanup(lambda: faas.vm.listdir(fn_dir) == sorted(["rootfs"] + kept),
                                      what="the versions beyond the kept ones to go")
            else:
                assert message is not None, f"not a JSON error: {body!r}"
                assert any(m in message for m in case["messages"]), \
                    f"message {message!r} has none of {case['messages']}"
                # The same refusal through the CLI, which streams the image (chunked).
                cli = faasd.faas("new", "fn", stdin_path=path)
                assert (cli.returncode, cli.stdout, cli.stderr) == (1, "", f"Error: {message}\n"), \
                    f"`faas new` said: {cli}"
                # No trace: the state dir (registry included) is exactly as before.
                assert faas.read_registry() == registry_before
                assert state_snapshot(faas, faasd) == state_before, "the state dir changed"
                faas.assert_handler_responds(d.ip, expected_body=hello_body())
            assert outside_snapshot(faas, outside) == victims, "the outside directory changed"
            faas.wait_for_cleanup()
        except AssertionError as e:
            problems.append(f"{name}: {e}")
    write_table(rows)
    assert problems == [], "\n".join(problems)
    assert faasd.healthy()
    assert faas.vm.listdir(f"{faasd.state_dir}/tmp") == []
