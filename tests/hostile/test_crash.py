"""Crash consistency: faasd is killed with SIGKILL at chosen points of a redeploy and
restarted. Afterwards the function is either fully the old or fully the new version:
its answer, its registry record and its rootfs agree, nothing of the other version
is left (`images/NAME/` holds exactly `rootfs` and the current `vN`, no `.new-*`, an
empty `tmp/`), and its address and listener work.

The kill points are conditions, not delays: the upload still streaming (a held-open
upload whose spool directory exists), or a system call of the deploy, where `strace`
attached to faasd delivers the SIGKILL on entry (so the call never happens): the first
openat2 of the layer application, the copy of the layer data, the rename of the import
to vN, the swap of the `rootfs` link, the rename of the new registry over the old one,
the fsync of the state dir after it, and finally right after the deploy was answered.
Each kill point is proven by what the dead faasd left on disk.

The two versions differ in their command (/a is hello, /b is echo), so a record of
one applied to the rootfs of the other shows as a failing request, not just as a
wrong version number.
"""

import hashlib

import pytest

from lib.helpers import hello_body
from lib.images import make_docker_archive, tar_entry
from lib.vm import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREPARED = ["control.sock", "dev", "proc", "sys", "tmp"]  # what faasd adds to every rootfs


class Version:
    """One of the two images: the handler binary as /KEY (its command), the archive
    in the VM, and its answer to POST `ping`."""

    def __init__(self, faas, key, binary, answer):
        self.key, self.answer = key, answer
        self.cmd = [f"/{key}"]
        self.sha256 = hashlib.sha256(binary).hexdigest()
        self.archive = faas.put_archive(make_docker_archive(
            [[tar_entry(key, data=binary, mode=0o755)]], cmd=self.cmd), f"version-{key}.tar")


@pytest.fixture
def versions(faas, images):
    return {"a": Version(faas, "a", images.binary("hello").read_bytes(), hello_body("POST")),
            "b": Version(faas, "b", images.binary("echo").read_bytes(), "ping")}


def deploy_ok(faas, faasd, name, version):
    r = faasd.faas("new", name, stdin_path=version.archive)
    assert r.returncode == 0, f"{r}\n{faasd.log()[-3000:]}"
    return r.stdout.split(" at ")[1].split("\n")[0]


def assert_consistent(faas, faasd, name, ip, versions):
    """The function is one whole version; returns (version number, Version)."""
    state = faasd.state_dir
    record = faas.read_registry()[name]
    n = record["version"]
    [version] = [v for v in versions.values() if v.cmd == record["cmd"]]
    fn_dir = f"{state}/images/{name}"
    # Asked first, so that a mismatch below also says what a client gets.
    r = faas.make_request(ip, body="ping")
    answer = f"a request gets {r['status']} {r['body']!r}"
    # The serving version and those kept for a rollback, nothing else.
    kept = [v["version"] for v in record.get("versions", [])]
    assert faas.vm.listdir(fn_dir) == sorted(["rootfs"] + [f"v{k}" for k in [n] + kept]), \
        (f"registry says v{n} (cmd {record['cmd']}) and keeps {kept}, images/{name} holds "
         f"{faas.vm.listdir(fn_dir)}; {answer}")
    link = faas.vm.run(["readlink", f"{fn_dir}/rootfs"]).stdout.strip()
    assert link == f"v{n}", f"rootfs -> {link}, registry says v{n}; {answer}"
    assert faas.tree(f"{fn_dir}/v{n}") == sorted([version.key] + PREPARED)
    rootfs_file = faas.vm.read_file(f"{fn_dir}/v{n}/{version.key}")
    assert hashlib.sha256(rootfs_file).hexdigest() == version.sha256, "the rootfs is not whole"
    assert record["ip"] == ip and record["rootfs"] == f"{fn_dir}/rootfs"
    status, described = faasd.api("GET", f"/api/functions/{name}")
    assert status == 200 and "runtime" in described, described
    described.pop("runtime")  # live counters, not part of the record
    serving = {k: v for k, v in record.items() if k != "versions"}
    assert described == dict(serving, name=name), described
    # The spool of a deploy goes while it is answered: wait for it.
    wait_for(lambda: faas.vm.listdir(f"{state}/tmp") == [], 10, what="an empty tmp/")
    assert faasd.bundles() == []
    assert [p for p in faas.tree(f"{state}/images") if ".new-" in p or ".rootfs-" in p] == []
    assert faasd.faas_addresses() == [ip]
    assert r["status"] == 200 and r["complete"] and r["body"] == version.answer, \
        f"v{n} ({version.key}) answered {r}\n{faasd.log()[-2000:]}"
    faas.wait_for_cleanup()
    return n, version


def attach_killer(faas, faasd, *strace_args):
    """strace attached to every thread of faasd, to SIGKILL it on entry to the system
    call the arguments select (the call itself is then never made)."""
    tracer = faas.vm.spawn(["strace", "-f", "-o", "/dev/null", *strace_args,
                            "-p", str(faasd.pid)], log_name="strace")
    wait_for(lambda: "attached" in tracer.stderr_text() or tracer.poll() is not None, 15,
             what="strace to attach to faasd")
    assert tracer.poll() is None, tracer.stderr_text()
    return tracer


def held_upload(faas, faasd, name, archive, head_bytes=65536):
    """A deploy whose upload stays open after `head_bytes` (like lib.helpers.SlowUpload,
    for any archive). Returns the two processes to kill afterwards."""
    vm = faas.vm
    fifo = f"{vm.run_dir}/held-{name}.fifo"
    vm.run(["rm", "-f", fifo])
    vm.run(["mkfifo", fifo])
    writer = vm.spawn(f"exec > {fifo}; head -c {head_bytes} {archive}; exec sleep 600",
                      log_name="held-writer")
    uploader = vm.spawn(["curl", "-sS", "-o", "/dev/null", "--unix-socket", faasd.socket,
                         "-X", "POST", "-H", f"X-Image-Name: {name}",
                         "-H", "Transfer-Encoding: chunked", "-T", fifo,
                         "http://faasd/api/new"], log_name="held-upload")
    return writer, uploader


def disk_state(faas, faasd, name):
    """What a dead faasd left of NAME: its directory, where `rootfs` points, the
    registry's version of it and the registry's temp files."""
    fn_dir = f"{faasd.state_dir}/images/{name}"
    entries = faas.vm.listdir(fn_dir)
    link = faas.vm.run(["readlink", f"{fn_dir}/rootfs"], check=False).stdout.strip()
    registry = faas.read_registry()
    tmp = [e for e in faas.vm.listdir(faasd.state_dir) if e.startswith("registry.json.tmp")]
    return {"entries": entries, "link": link, "registered": registry[name]["version"],
            "registry_tmp": len(tmp)}


# (label, how, the version faasd must come back with, what the dead faasd must have
# left on disk: proof that the kill hit that point; {old}/{new} are version numbers).
# A deploy's commit makes three renames on the loop thread, in this order: the import to
# vN, the new `rootfs` link over the old, the new registry over the old; then
# fsyncs the state dir (its second fsync: the first is the registry's temp file).
KILL_POINTS = [
    ("upload streaming, spool dir exists", "held-upload", "old",
     lambda d, old, new: f"v{old}" in d["entries"] and f"v{new}" not in d["entries"]
     and d["link"] == f"v{old}"),
    ("layer application starts (first openat2)", ("openat2", 1), "old",
     lambda d, old, new: any(e.startswith(".new-") for e in d["entries"])),
    ("layer data being written (first pwrite64)", ("pwrite64", 1), "old",
     lambda d, old, new: any(e.startswith(".new-") for e in d["entries"])),
    ("rename of the import to vN (1st rename)", ("rename", 1), "old",
     lambda d, old, new: any(e.startswith(".new-") for e in d["entries"])
     and f"v{new}" not in d["entries"]),
    ("swap of the rootfs link (2nd rename)", ("rename", 2), "old",
     lambda d, old, new: f"v{new}" in d["entries"] and d["link"] == f"v{old}"),
    ("rename of the new registry.json (3rd rename)", ("rename", 3), "old",
     lambda d, old, new: d["link"] == f"v{new}" and d["registered"] == old
     and d["registry_tmp"] == 1),
    ("fsync of the state dir after the registry rename", ("fsync", 2), "new",
     lambda d, old, new: d["link"] == f"v{new}" and d["registered"] == new),
    ("right after the deploy was answered", "after", "new",
     lambda d, old, new: d["link"] == f"v{new}" and d["registered"] == new),
]


def crash_during_redeploy(faas, faasd, how, name, version):
    state = faasd.state_dir
    if how == "held-upload":
        writer, uploader = held_upload(faas, faasd, name, version.archive)
        wait_for(lambda: faas.vm.listdir(f"{state}/tmp"), 15, what="the import to spool")
        faasd.kill9()
        for p in (uploader, writer):
            p.kill(9)
            p.wait(10)
        return
    if how == "after":
        deploy_ok(faas, faasd, name, version)
        faasd.kill9()
        return
    syscall, when = how
    tracer = attach_killer(faas, faasd, "-e", f"trace={syscall}",
                           "-e", f"inject={syscall}:signal=KILL:when={when}")
    client = faas.vm.spawn(
        f"exec {faasd.faas_bin} --socket {faasd.socket} new {name} < {version.archive}",
        log_name="deploy")
    rc = faasd.proc.wait(timeout=60)
    assert rc == -9, f"faasd exited {rc} instead of being killed:\n{faasd.log()[-3000:]}"
    tracer.wait(timeout=20)
    assert client.wait(timeout=30) != 0, "the deploy was answered although faasd was killed"
    assert client.stderr_text().startswith("Error: lost the connection to faasd"), \
        client.stderr_text()


def test_kill9_during_redeploy_leaves_one_whole_version(faas, faasd, versions):
    """Regression: Redeploy points `rootfs` at the new vN before it saves the registry.
    Killed in between, faasd came back with the registry's old record but the link on
    the new rootfs, deleted the old version as stale and served the old command on the
    new rootfs (502 for every request). Start-up now trusts the registry: it re-points
    `rootfs` at the registry's version and removes every other one."""
    name = "fn"
    ip = deploy_ok(faas, faasd, name, versions["a"])
    number, current = assert_consistent(faas, faasd, name, ip, versions)
    outcomes, problems = [], []
    for label, how, expected, left in KILL_POINTS:
        new = versions["b" if current.key == "a" else "a"]
        crash_during_redeploy(faas, faasd, how, name, new)
        dead = disk_state(faas, faasd, name)
        assert left(dead, number, number + 1), f"killed at {label}, faasd left {dead}"
        faasd.start()
        try:
            got_number, got = assert_consistent(faas, faasd, name, ip, versions)
            outcome = "new" if got is new else "old"
            outcomes.append(f"{label}: {outcome} (v{got_number})")
            assert outcome == expected, f"came back with the {outcome} version, not the {expected}"
            assert got_number == (number + 1 if outcome == "new" else number)
        except AssertionError as e:
            problems.append(f"killed at {label}: {e}")
            # Carry on from whatever faasd serves now.
            record = faas.read_registry()[name]
            got_number = record["version"]
            got = next(v for v in versions.values() if v.cmd == record["cmd"])
            # Bring the function back to a consistent state for the next point.
            deploy_ok(faas, faasd, name, got)
            got_number, got = assert_consistent(faas, faasd, name, ip, versions)
        number, current = got_number, got
    print("\n".join(outcomes))
    assert problems == [], "\n".join(problems)


# A first deploy (DeployNew) makes the same renames; its registry save is what makes
# the function exist.
FIRST_DEPLOY_POINTS = [
    ("rename of the import to v1 (1st rename)", ("rename", 1), "absent"),
    ("creation of the rootfs link (2nd rename)", ("rename", 2), "absent"),
    ("rename of the new registry.json (3rd rename)", ("rename", 3), "absent"),
    ("fsync of the state dir after the registry rename", ("fsync", 2), "present"),
]


@pytest.mark.parametrize("label,how,expected", FIRST_DEPLOY_POINTS,
                         ids=[p[0].split(" (")[0].replace(" ", "-") for p in FIRST_DEPLOY_POINTS])
def test_kill9_during_first_deploy_leaves_all_or_nothing(faas, faasd, versions, label, how,
                                                        expected):
    """Killed before the registry names the function, faasd must come back without a
    trace of it: no registry entry, no address, and no images/NAME directory.

    Regression: killed between the creation of the `rootfs` link and the registry
    rename of a first deploy, images/NAME/{rootfs,v1} stayed for good. Start-up now
    removes images/NAME when NAME is not in the registry."""
    crash_during_redeploy(faas, faasd, how, "fn", versions["a"])
    faasd.start()
    images = faas.vm.listdir(f"{faasd.state_dir}/images")
    if expected == "present":
        ip = faas.read_registry()["fn"]["ip"]
        assert assert_consistent(faas, faasd, "fn", ip, versions)[0] == 1
        return
    assert faas.read_registry(missing_ok=True) == {}
    assert faasd.faas_addresses() == []
    assert images == [], (f"killed at {label}: the function is not registered, yet "
                          f"images/ holds {faas.tree(f'{faasd.state_dir}/images')}")
    # The name deploys afresh.
    ip = deploy_ok(faas, faasd, "fn", versions["b"])
    assert assert_consistent(faas, faasd, "fn", ip, versions)[0] == 1
