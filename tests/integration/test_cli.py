"""The conventions of the `faas` CLI: `version`, `help`, unknown verbs and usage errors
(`Error: ...`, exit 2), `new -f FILE`, `invoke`, `list --wide`, the socket permission
error, and faasd's duration flags."""

import json
import re

import pytest

from lib.helpers import DEPLOYED_RE, hello_body

pytestmark = pytest.mark.integration

VERBS = ["new", "ip", "list", "rm", "describe", "init", "version", "invoke", "logs", "help"]


def client_version(faasd) -> str:
    r = faasd.faas("--version", check=True)
    m = re.fullmatch(r"faas (\d+\.\d+\.\d+)\n", r.stdout)
    assert m, r
    return m.group(1)


def assert_usage_error(r, message_start: str):
    assert r.returncode == 2, r
    assert r.stdout == "", r
    assert r.stderr.startswith("Error: " + message_start), r.stderr


def assert_command_list(stderr: str):
    """The second line of an unknown or missing verb names every verb."""
    lines = stderr.splitlines()
    assert lines[1].startswith("Commands: "), stderr
    listed = lines[1][len("Commands: "):].split(", ")
    assert set(VERBS) <= set(listed), listed


# --- version and help ---------------------------------------------------------------

def test_version_prints_client_and_server(faas, faasd):
    version = client_version(faasd)
    status, body = faasd.api("GET", "/api/version")
    assert status == 200, body
    assert body["version"] == version and body["api"] == 1, body
    assert body["runtime"] == faasd.runtime, body
    r = faasd.faas("version")
    assert r.returncode == 0 and r.stderr == "", r
    assert r.stdout == f"faas {version}\nfaasd {version} (API 1)\n"


def test_version_without_faasd_prints_client_line_and_error(faasd_unstarted):
    version = client_version(faasd_unstarted)
    r = faasd_unstarted.faas("version")
    assert r.returncode == 1, r
    assert r.stdout == f"faas {version}\n"
    assert r.stderr.startswith(f"Error: cannot reach faasd at {faasd_unstarted.socket}: "), r


def test_help_prints_the_help_of_faas_and_of_a_verb(faasd_unstarted):
    r = faasd_unstarted.faas("help")
    assert r.returncode == 0 and r.stderr == "", r
    for verb in VERBS:
        assert re.search(rf"^\s+{verb}\s", r.stdout, re.MULTILINE), (verb, r.stdout)
    for verb in ("new", "invoke", "list"):
        r = faasd_unstarted.faas("help", verb)
        assert r.returncode == 0 and r.stderr == "", r
        assert r.stdout == faasd_unstarted.faas(verb, "--help").stdout
        assert "Usage:" in r.stdout, r.stdout


@pytest.mark.parametrize("argv", [("frobnicate",), ("help", "frobnicate"),
                                  ("--token", "t", "frobnicate", "-f")],
                         ids=["verb", "help-verb", "after-global-flag"])
def test_unknown_verb_is_a_usage_error_listing_the_verbs(faasd_unstarted, argv):
    r = faasd_unstarted.faas(*argv)
    assert_usage_error(r, 'unknown command "frobnicate"\n')
    assert_command_list(r.stderr)


def test_no_verb_is_a_usage_error_listing_the_verbs(faasd_unstarted):
    r = faasd_unstarted.faas()
    assert_usage_error(r, "no command given\n")
    assert_command_list(r.stderr)


# --- usage errors -------------------------------------------------------------------

# Each kind: CLI11's own (a missing argument, an unexpected one, a bad value of a typed
# option, a range, exclusive options, an unknown flag) and the checks made after parsing.
USAGE_ERRORS = [
    (("new", "fn", "--memory", "lots"), "invalid memory 'lots'"),
    (("new", "fn", "--cpus", "0"), "invalid cpus '0'"),
    (("new", "fn", "--timeout", "soon"), "invalid timeout 'soon'"),
    (("new", "fn", "--connect-timeout", "0s"), "invalid connect timeout '0s'"),
    (("new", "fn", "--warm", "65"), "invalid warm '65'"),
    (("new", "fn", "--warm", "5", "--warm-max", "2"), "warm (5) is above warm-max (2)"),
    (("new", "fn", "--env", "NOEQUALS"), "invalid env 'NOEQUALS'"),
    (("new", "fn", "--pids", "0"), "--pids: Value 0 not in range"),
    (("new", "fn", "--warm", "many"), "Could not convert: --warm = many"),
    (("new",), "NAME is required"),
    (("new", "Bad_Name"), "invalid function name"),
    (("ip", "fn", "extra"), "The following argument was not expected: extra"),
    (("list", "--bogus"), "The following argument was not expected: --bogus"),
    (("list", "--json", "--wide"), "--json excludes --wide"),
    (("rm",), "NAME is required"),
    (("--socket",), "--socket: 1 required TEXT missing"),
    (("invoke", "fn", "-H", "no colon"), "invalid header 'no colon'"),
    (("invoke", "fn", "-X", "GET /x"), "invalid method 'GET /x'"),
    (("invoke", "fn", "--path", "/a b"), "invalid --path '/a b'"),
    (("invoke", "fn", "-d", "@/nonexistent/body"), "cannot read the data of -d @/nonexistent"),
]


@pytest.mark.parametrize("argv,message", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_error_has_error_prefix_and_exit_2_and_changes_nothing(faas, faasd, argv, message):
    faas.deploy_handler("fn", "hello")
    registry = faas.read_registry()
    r = faasd.faas(*argv, stdin_path=faas.image("echo"))
    assert_usage_error(r, message)
    assert faas.read_registry() == registry
    assert faas.vm.listdir(f"{faasd.state_dir}/images") == ["fn"]


# --- faas new -f FILE ---------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-f", "--file"])
def test_new_reads_the_image_from_a_file(faas, faasd, flag):
    r = faasd.faas("new", "hello", flag, faas.image("hello"))
    assert r.returncode == 0 and r.stderr == "", r
    m = DEPLOYED_RE.match(r.stdout)
    assert m and m.group(1) == "hello", r.stdout
    faas.assert_handler_responds(m.group(2))


def test_new_file_dash_is_stdin(faas, faasd):
    r = faasd.faas("new", "hello", "-f", "-", stdin_path=faas.image("hello"))
    assert r.returncode == 0 and DEPLOYED_RE.match(r.stdout), r


def test_new_missing_file_is_a_usage_error_before_any_request(faas_unstarted, faasd_unstarted):
    # No faasd runs: an error about the file proves faas never tried to reach it.
    r = faasd_unstarted.faas("new", "hello", "-f", "/nonexistent/image.tar")
    assert_usage_error(r, "cannot open the image /nonexistent/image.tar: No such file or directory")


def test_new_empty_file_is_a_usage_error(faas, faasd):
    path = faas.put_archive(b"", "empty.tar")
    r = faasd.faas("new", "hello", "-f", path)
    assert_usage_error(r, f"no image in {path}: it is empty")
    assert faas.read_registry(missing_ok=True) == {}


# --- faas invoke ----------------------------------------------------------------------

@pytest.fixture
def hello(faas, faasd):
    return faas.deploy_handler("hello", "hello")


@pytest.fixture
def mirror(faas, faasd):
    return faas.deploy_handler("mirror", "mirror")


def split_mirrored(text: str):
    """The request the mirror handler got: (request line, {lower-case header: value}, body)."""
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, v in
                   (line.split(":", 1) for line in lines[1:]))
    return lines[0], headers, body


def test_invoke_get_prints_the_body(faasd, hello):
    r = faasd.faas("invoke", "hello")
    assert r.returncode == 0 and r.stderr == "", r
    assert r.stdout == hello_body("GET", "/")


def test_invoke_method_and_path(faasd, hello):
    r = faasd.faas("invoke", "hello", "-X", "PUT", "--path", "/a/b?x=1")
    assert r.returncode == 0, r
    assert r.stdout == hello_body("PUT", "/a/b?x=1")
    r = faasd.faas("invoke", "hello", "--path", "relative")
    assert r.stdout == hello_body("GET", "/relative"), r


def test_invoke_post_data_and_headers(faasd, mirror):
    r = faasd.faas("invoke", "mirror", "-d", "a=1&b=2", "-H", "X-Test: yes",
                   "--header", "Content-Type: text/plain")
    assert r.returncode == 0, r
    line, headers, body = split_mirrored(r.stdout)
    assert line == "POST / HTTP/1.1"
    assert headers["x-test"] == "yes" and headers["content-type"] == "text/plain", headers
    assert headers["content-length"] == "7" and "expect" not in headers, headers
    assert body == "a=1&b=2"


def test_invoke_data_from_file_and_stdin(faas, faasd, mirror):
    data = bytes(range(256)) * 64
    path = faas.put_archive(data, "body.bin")
    r = faasd.faas("invoke", "mirror", "-X", "PUT", "-d", "@" + path)
    assert r.returncode == 0, r
    head, _, body = r.stdout_bytes.partition(b"\r\n\r\n")
    assert head.startswith(b"PUT / HTTP/1.1\r\n"), head
    assert body == data
    r = faas.vm.run([faasd.faas_bin, "--socket", faasd.socket, "invoke", "mirror", "-d", "@-"],
                    input=b"from stdin\n", check=False)
    assert r.returncode == 0, r
    assert split_mirrored(r.stdout)[2] == "from stdin\n"


def test_invoke_include_prints_status_line_and_headers(faasd, hello):
    r = faasd.faas("invoke", "hello", "-i")
    assert r.returncode == 0, r
    head, _, body = r.stdout.partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK", lines
    assert "Content-Type: text/plain" in lines[1:], lines
    assert body == hello_body("GET", "/")


@pytest.mark.parametrize("status,code", [(500, 1), (503, 1), (404, 0), (201, 0)])
def test_invoke_exit_status_follows_the_answer(faasd, mirror, status, code):
    r = faasd.faas("invoke", "mirror", "-i", "--path", f"/status/{status}")
    assert r.returncode == code, r
    assert r.stdout.startswith(f"HTTP/1.1 {status} "), r.stdout
    assert r.stderr == "", r


def test_invoke_faasds_own_502_exits_1(faas, faasd):
    faas.deploy_handler("broken", "exit-nonzero", options=("--no-start-check",))
    r = faasd.faas("invoke", "broken")
    assert r.returncode == 1, r
    assert r.stdout == "Bad Gateway\n"
    faas.wait_for_cleanup()


def test_invoke_without_an_answer_exits_1(faas, faasd):
    faas.deploy_handler("mute", "closes-early")
    r = faasd.faas("invoke", "mute")
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr.startswith(
        f"Error: invoke mute: no whole answer from http://{faas.get_handler_ip('mute')}:80/: "), r
    faas.wait_for_cleanup()


def test_invoke_unknown_function_exits_1(faasd):
    r = faasd.faas("invoke", "nope")
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == "Error: no function named 'nope'\n"


@pytest.mark.faasd_args("--port", "8080")
def test_invoke_uses_the_port_faasd_serves_functions_on(faas, faasd, hello):
    status, body = faasd.api("GET", "/api/ip/hello")
    assert status == 200 and body == {"name": "hello", "ip": hello.ip, "port": 8080}, body
    r = faasd.faas("invoke", "hello")
    assert r.returncode == 0 and r.stdout == hello_body("GET", "/"), r


# --- faas list --wide -----------------------------------------------------------------

def wide_rows(faasd) -> list:
    r = faasd.faas("list", "--wide", check=True)
    return [line.split() for line in r.stdout.splitlines()]


def test_list_wide_adds_version_status_and_deploy_time(faas, faasd):
    faas.deploy_handler("cold", "hello")
    faas.deploy_handler("cold", "hello")  # v2
    faas.deploy_handler("pooled", "hello", options=("--warm", "1"))
    faas.wait_pool_ready("pooled", 1)
    registry = faas.read_registry()
    rows = wide_rows(faasd)
    assert rows[0] == ["Name", "IP", "Command", "Version", "Status", "Deployed"]
    assert rows[1] == ["cold", registry["cold"]["ip"], "/handler", "v2", "idle",
                       registry["cold"]["deployed_at"]]
    assert rows[2] == ["pooled", registry["pooled"]["ip"], "/handler", "v1", "warm",
                       registry["pooled"]["deployed_at"]]
    # The default table keeps its three columns.
    assert faas.list_table() == [["Name", "IP", "Command"],
                                 ["cold", registry["cold"]["ip"], "/handler"],
                                 ["pooled", registry["pooled"]["ip"], "/handler"]]


def test_list_wide_shows_a_function_serving(faas, faasd):
    faas.deploy_handler("slow", "slow", options=("--env", "SLEEP_MS=3000"))
    ip = faas.get_handler_ip("slow")
    running = faas.start_requests(ip, count=1)
    faas.wait_runtime("slow", lambda rt: rt["active"] == 1, what="a request of slow running")
    assert wide_rows(faasd)[1][4] == "serving"
    assert running.results()[0]["status"] == 200
    faas.wait_for_cleanup()


# --- the socket's permission error ------------------------------------------------------

def test_socket_permission_error_says_to_run_as_root(faas, faasd):
    r = faas.vm.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                     faasd.faas_bin, "--socket", faasd.socket, "list"], check=False)
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == (f"Error: permission denied on {faasd.socket}: faasd's socket is root's "
                        "alone, run faas as root (e.g. with sudo)\n")


# --- faasd's durations ------------------------------------------------------------------

@pytest.mark.faasd_args("--connect-timeout", "2s", "--run-timeout", "1500",
                        "--drain-timeout", "1m", "--first-byte-timeout", "0")
def test_faasd_time_flags_take_units_and_bare_numbers_keep_their_unit(faas, faasd):
    faas.deploy_handler("hello")
    limits = faas.describe("hello")["limits"]
    assert limits["connect_timeout_ms"] == 2000, limits
    assert limits["timeout_ms"] == 1500, limits  # a bare --run-timeout is ms, as before
    faas.assert_handler_responds(faas.get_handler_ip("hello"))
    faas.wait_for_cleanup()


@pytest.mark.parametrize("flag,value", [("--run-timeout", "soon"), ("--drain-timeout", "5x"),
                                        ("--connect-timeout", "0"), ("--idle-timeout", "1y")])
def test_faasd_bad_duration_is_refused_at_start(faasd_unstarted, flag, value):
    r = faasd_unstarted.vm.run(faasd_unstarted.command(flag, value), check=False, timeout=30)
    assert r.returncode == 2, r
    assert r.stderr.startswith(f"Error: invalid {flag} '{value}': "), r.stderr


@pytest.mark.parametrize("args,message", [
    (("--bogus",), "The following argument was not expected: --bogus"),
    (("--warm", "x"), "--warm: Value x not in range 0 to 64"),
])
def test_faasd_bad_flag_is_a_usage_error(faasd_unstarted, args, message):
    r = faasd_unstarted.vm.run([faasd_unstarted.faasd_bin, *args], check=False, timeout=30)
    assert r.returncode == 2, r
    assert r.stderr == f"Error: {message}\nRun 'faasd --help' for usage.\n"


def test_faasd_help_shows_the_duration_forms(faasd_unstarted):
    r = faasd_unstarted.vm.run([faasd_unstarted.faasd_bin, "--help"], check=True)
    assert "Durations: 500ms, 5s, 2m or 1h." in r.stdout, r.stdout
