#!/usr/bin/python3
"""Guest agent of the qemu test VM (runs INSIDE the guest; stdlib only).

Started by the guest's busybox init (respawned if it dies):
    /usr/bin/python3 -I -S -u vmagent.py /dev/virtio-ports/vmt.agent

Protocol: one JSON object per line in each direction over the virtio-serial port.
Every request has an "id" and an "op"; its reply carries the same "id". Bytes travel
base64-encoded. Each request runs in its own thread, so a long command does not block
others. Ops:

  ping                          -> {ok, pid, boot_id, uptime}
  run   {cmd, timeout, stdin | stdin_file, env, cwd}   (stdin_file is deleted after use)
                                -> {rc, stdout, stderr, timed_out}
        cmd: a str (run with /bin/sh -c) or an argv list. rc follows Popen: -N = signal N.
        On timeout the whole session of the command is SIGKILLed (killpg).
  spawn {cmd, env, cwd, stdout, stderr}      (stdout/stderr: file paths, e.g. on /mnt/xfer)
                                -> {handle, pid}; later an unsolicited
                                   {event: "exit", handle, pid, rc} when it exits
  signal {handle, sig, group}   -> {ok, rc}   (rc: the exit code if it had already exited)
  status {handles}              -> {status: {handle: rc or null}}
  write_file {path, data | src, mode}        atomic (temp file + rename)
  read_file  {path, inline_max, dst}         -> {data} or {size, dst} (copied to dst)
  mount_tmpfs {paths}           -> {ok}      mkdir -p + a fresh tmpfs (mode 0755) on each
  reset {umount}                -> {killed, errors}
        SIGKILLs every process except init, the agent and kernel threads, forgets all
        spawn handles, unmounts the given paths, removes every cgroup below the root,
        deletes IPv4 addresses on lo other than 127.0.0.1/8 and links other than lo.
Errors: {error: {type, errno, strerror, message}}.

Pitfalls handled: read() on the port returns 0 (EOF) while no host client is connected,
so the agent sleeps and retries; writes block until a client connects.
"""

import base64
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
PF_KTHREAD = 0x00200000
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


class Agent:
    def __init__(self, port: str):
        self.port = port
        self.fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)
        self.wlock = threading.Lock()
        self.hlock = threading.Lock()
        self.handles = {}      # handle -> Popen
        self.next_handle = 0

    # --- transport -------------------------------------------------------------------
    def send(self, obj) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        with self.wlock:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self.fd, view)
                except InterruptedError:
                    continue
                except OSError as e:
                    # No host client: the write fails or blocks; retry a little later.
                    print(f"vmagent: write failed: {e}", file=sys.stderr)
                    time.sleep(0.05)
                    continue
                view = view[n:]

    def serve(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except InterruptedError:
                continue
            except OSError as e:
                print(f"vmagent: read failed: {e}", file=sys.stderr)
                time.sleep(0.05)
                continue
            if not chunk:
                # EOF: no host client connected. Drop a partial line and wait.
                buf = b""
                time.sleep(0.05)
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    threading.Thread(target=self.handle, args=(line,), daemon=True).start()

    def handle(self, line: bytes) -> None:
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            op = req.get("op", "run")
            fn = getattr(self, "op_" + op, None)
            if fn is None:
                raise ValueError(f"unknown op {op!r}")
            reply = fn(req)
        except OSError as e:
            reply = {"error": {"type": type(e).__name__, "errno": e.errno,
                               "strerror": e.strerror, "message": str(e)}}
        except Exception as e:  # noqa: BLE001 - reported to the host
            reply = {"error": {"type": type(e).__name__, "errno": None, "strerror": None,
                               "message": f"{e}\n{traceback.format_exc()}"}}
        reply["id"] = rid
        self.send(reply)

    # --- helpers -----------------------------------------------------------------------
    @staticmethod
    def _argv(cmd):
        if isinstance(cmd, str):
            return ["/bin/sh", "-c", cmd]
        return [str(c) for c in cmd]

    @staticmethod
    def _env(req):
        env = dict(BASE_ENV)
        env.update(req.get("env") or {})
        return env

    # --- ops ---------------------------------------------------------------------------
    def op_ping(self, req):
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return {"ok": True, "pid": os.getpid(), "boot_id": boot_id, "uptime": uptime}

    def op_run(self, req):
        argv = self._argv(req["cmd"])
        stdin = req.get("stdin")
        data = base64.b64decode(stdin) if stdin is not None else None
        stdin_spec = subprocess.PIPE if data is not None else subprocess.DEVNULL
        if req.get("stdin_file"):
            stdin_spec = open(req["stdin_file"], "rb")
        timeout = req.get("timeout")
        try:
            p = subprocess.Popen(argv, stdin=stdin_spec,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 cwd=req.get("cwd") or "/", env=self._env(req),
                                 start_new_session=True)
        except OSError as e:
            # Like a shell: 127 for a missing program, 126 for one that cannot run.
            rc = 127 if e.errno == 2 else 126
            return {"rc": rc, "stdout": "", "timed_out": False,
                    "stderr": base64.b64encode(f"vmagent: {argv[0]}: {e}\n".encode()).decode()}
        finally:
            if req.get("stdin_file"):
                stdin_spec.close()
                os.unlink(req["stdin_file"])
        timed_out = False
        try:
            out, err = p.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                out, err = p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                # Something outside the session still holds the pipes: give up on them.
                out, err = b"", b"vmagent: output pipes still open after the kill\n"
                for f in (p.stdout, p.stderr):
                    try:
                        f.close()
                    except OSError:
                        pass
                p.wait()
        return {"rc": p.returncode, "timed_out": timed_out,
                "stdout": base64.b64encode(out or b"").decode(),
                "stderr": base64.b64encode(err or b"").decode()}

    def op_spawn(self, req):
        argv = self._argv(req["cmd"])
        with open(req["stdout"], "wb") as fo, open(req["stderr"], "wb") as fe:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                 cwd=req.get("cwd") or "/", env=self._env(req),
                                 start_new_session=True)
        with self.hlock:
            self.next_handle += 1
            h = self.next_handle
            self.handles[h] = p
        threading.Thread(target=self._reap, args=(h, p), daemon=True).start()
        return {"handle": h, "pid": p.pid}

    def _reap(self, h, p):
        rc = p.wait()
        self.send({"event": "exit", "handle": h, "pid": p.pid, "rc": rc})

    def op_signal(self, req):
        with self.hlock:
            p = self.handles.get(req["handle"])
        if p is None:
            return {"ok": False, "rc": None, "message": "unknown handle"}
        sig = int(req.get("sig", signal.SIGTERM))
        if p.poll() is not None:
            return {"ok": False, "rc": p.returncode}
        try:
            if req.get("group"):
                os.killpg(p.pid, sig)
            else:
                p.send_signal(sig)
        except ProcessLookupError:
            pass
        return {"ok": True, "rc": p.poll()}

    def op_status(self, req):
        with self.hlock:
            out = {}
            for h in req.get("handles") or list(self.handles):
                p = self.handles.get(int(h))
                out[str(h)] = None if p is None else p.poll()
        return {"status": out}

    def op_write_file(self, req):
        path = req["path"]
        tmp = f"{path}.vmagent-tmp-{threading.get_ident()}"
        try:
            if "src" in req:
                shutil.copyfile(req["src"], tmp)
                os.unlink(req["src"])
            else:
                with open(tmp, "wb") as f:
                    f.write(base64.b64decode(req.get("data", "")))
            os.chmod(tmp, int(req.get("mode", 0o644)))
            os.rename(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return {"ok": True}

    def op_read_file(self, req):
        path = req["path"]
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= int(req.get("inline_max", 1 << 20)) or not req.get("dst"):
                return {"data": base64.b64encode(f.read()).decode()}
            with open(req["dst"], "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        return {"size": size, "dst": req["dst"]}

    def op_mount_tmpfs(self, req):
        for path in req["paths"]:
            os.makedirs(path, exist_ok=True)
            if _libc.mount(b"faasd-test", path.encode(), b"tmpfs", 0, b"mode=0755") != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), path)
        return {"ok": True}

    def op_reset(self, req):
        errors, killed = [], []
        with self.hlock:
            self.handles.clear()
        me = os.getpid()
        for _ in range(50):
            victims = []
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) in (1, me):
                    continue
                info = _proc_info(int(entry))
                if info is None or info["kthread"]:
                    continue
                victims.append(info)
            if not victims:
                break
            for v in victims:
                if v["pid"] not in {k["pid"] for k in killed}:
                    killed.append(v)
                try:
                    os.kill(v["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        else:
            errors.append("processes survive SIGKILL: "
                          + ", ".join(f"{v['pid']} {v['cmdline']}" for v in victims))
        for path in sorted(req.get("umount") or [], key=len, reverse=True):
            for mnt in reversed(_mounts_under(path)):
                if _libc.umount2(mnt.encode(), MNT_DETACH) != 0:
                    errors.append(f"umount {mnt}: {os.strerror(ctypes.get_errno())}")
        errors += _remove_cgroups("/sys/fs/cgroup")
        errors += _reset_network()
        return {"killed": killed, "errors": errors}


def _proc_info(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")[:-1]
        with open(f"/proc/{pid}/cgroup") as f:
            cgroup = f.read().strip()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] == "Z":
        return None  # reaped by its parent (init or the agent)
    return {"pid": pid, "ppid": int(fields[1]), "comm": stat[stat.find("(") + 1:stat.rfind(")")],
            "kthread": bool(int(fields[6]) & PF_KTHREAD),
            "cmdline": " ".join(c.decode(errors="replace") for c in cmdline), "cgroup": cgroup}


def _mounts_under(path):
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt = line.split()[1].replace("\\040", " ")
            if mnt == path or mnt.startswith(path.rstrip("/") + "/"):
                out.append(mnt)
    return out


def _remove_cgroups(root):
    errors = []
    for dirpath, dirnames, _ in sorted(os.walk(root), key=lambda t: -t[0].count("/")):
        if dirpath == root:
            continue
        for attempt in range(20):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if attempt == 19:
                    errors.append(f"rmdir cgroup {dirpath}: {e}")
                time.sleep(0.05)
    return errors


def _reset_network():
    """Removes what tests add to the guest's network: addresses on lo other than
    127.0.0.1/8 (and ::1), and links other than lo. Cheap when there is nothing."""
    errors = []
    links = [n for n in os.listdir("/sys/class/net") if n != "lo"]
    extra_local = False
    try:
        with open("/proc/net/fib_trie") as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            if "/32 host LOCAL" in line and i > 0:
                ip = lines[i - 1].split()[-1]
                if not ip.startswith("127."):
                    extra_local = True
    except OSError:
        extra_local = True
    cmds = [["ip", "link", "del", n] for n in links]
    if extra_local or links:
        cmds.append(["ip", "-4", "addr", "flush", "dev", "lo"])
        cmds.append(["ip", "addr", "add", "127.0.0.1/8", "scope", "host", "dev", "lo"])
    for c in cmds:
        p = subprocess.run(c, capture_output=True, env=BASE_ENV)
        if p.returncode != 0 and c[1] != "link":
            errors.append(f"{' '.join(c)}: {p.stderr.decode(errors='replace').strip()}")
    return errors


def main():
    port = sys.argv[1] if len(sys.argv) > 1 else "/dev/virtio-ports/vmt.agent"
    for _ in range(100):
        if os.path.exists(port):
            break
        found = _find_port(os.path.basename(port))
        if found:
            port = found
            break
        time.sleep(0.1)
    Agent(port).serve()


def _find_port(name):
    """/dev/vportNpM of the virtio-serial port called `name` (there is no udev)."""
    base = "/sys/class/virtio-ports"
    try:
        entries = os.listdir(base)
    except OSError:
        return None
    for e in entries:
        try:
            with open(f"{base}/{e}/name") as f:
                if f.read().strip() == name and os.path.exists(f"/dev/{e}"):
                    return f"/dev/{e}"
        except OSError:
            pass
    return None


if __name__ == "__main__":
    main()
