"""Turns the config.json of a live faasd bundle into the template bench/floor runs.

    oci_template.py CONFIG OUT

Only what must differ between runs is rewritten: the source of the /control.sock
bind mount becomes "@BUNDLE@/control.sock" and cgroupsPath "/faasd-bench/@ID@"
(floor fills both in per run). Everything else (root, namespaces, mounts, seccomp,
limits, environment) stays as faasd wrote it.
"""

import json
import sys


def main(argv: list) -> int:
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        config = json.load(f)
    sockets = [m for m in config["mounts"] if m.get("destination") == "/control.sock"]
    if len(sockets) != 1:
        print("oci_template: expected one /control.sock mount", file=sys.stderr)
        return 1
    sockets[0]["source"] = "@BUNDLE@/control.sock"
    config["linux"]["cgroupsPath"] = "/faasd-bench/@ID@"
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(config, f, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
