"""Many requests in a row or at once: all answered, nothing leaked in faasd."""

import pytest

from lib.helpers import SlowUpload, hello_body

pytestmark = pytest.mark.integration


def assert_all_hello(results, count):
    assert len(results) == count
    bad = [r for r in results if not (r["status"] == 200 and r["complete"]
                                       and r["body"] == hello_body())]
    assert bad == [], f"{len(bad)} of {count} requests failed, first: {bad[:3]}"


def warm_up(faas, ip):
    """A few requests first, so lazily created fds (epoll, timers) exist before counting."""
    assert_all_hello(faas.make_requests(ip, count=3), 3)
    faas.wait_for_cleanup()


def test_no_fd_leak_after_50_requests(faas, faasd):
    d = faas.deploy_handler("hello")
    warm_up(faas, d.ip)
    before = faasd.fds()
    assert_all_hello(faas.make_requests(d.ip, count=50), 50)
    faas.wait_for_cleanup()
    after = faasd.fds()
    leaked = {fd: t for fd, t in after.items() if before.get(fd) != t}
    assert len(after) == len(before) and leaked == {}, f"fds before {before}, leaked {leaked}"


def test_20_concurrent_requests_all_succeed(faas, faasd):
    d = faas.deploy_handler("hello")
    results = faas.make_requests(d.ip, count=20, concurrency=20, timeout=60)
    assert_all_hello(results, 20)
    faas.wait_for_cleanup(timeout=30)
    assert faas.count_bundles() == 0
    assert faas.get_process_count() == 0


# A short burst for the VM too, where TCG makes each container start ~20x slower:
# the connect timeout is raised so that slowness is not mistaken for a failure.
@pytest.mark.vmtest
@pytest.mark.faasd_args("--connect-timeout", "60000")
def test_5_concurrent_requests_all_succeed_and_clean_up(faas, faasd):
    d = faas.deploy_handler("hello")
    results = faas.make_requests(d.ip, count=5, concurrency=5, timeout=90)
    assert_all_hello(results, 5)
    faas.wait_for_cleanup(timeout=60)
    assert faas.count_bundles() == 0
    assert faas.get_process_count() == 0


def test_100_sequential_requests_no_leaks(faas, faasd):
    d = faas.deploy_handler("hello")
    warm_up(faas, d.ip)
    fds_before = faasd.fd_count()
    assert faas.get_process_count() == 0
    assert_all_hello(faas.make_requests(d.ip, count=100), 100)
    faas.wait_for_cleanup()
    assert faas.count_bundles() == 0
    assert faasd.runc_containers() == []
    assert faas.get_process_count() == 0
    assert faasd.fd_count() == fds_before
    assert faasd.log().count(": exit 0 in ") == 103


@pytest.mark.faasd_args("--connect-timeout", "1000", "--run-timeout", "1000")
def test_no_fd_leak_on_error_paths(faas, faasd):
    """Timeouts, crashes, early closes, refused deploys and aborted uploads, three
    times over: faasd's fd table ends where it started."""
    # The two that never connect would fail the deploy's start check.
    ips = {h: faas.deploy_handler(h, h, options=("--no-start-check",)).ip
           for h in ("never-connects", "sleeps-forever", "closes-early", "exit-nonzero")}
    garbage = faas.put_archive(b"not an image\n" * 1000, "garbage.tar")

    def round_of_errors(i):
        clients = [faas.vm.spawn(["/usr/bin/python3", faas.client, ip, "-n", "2", "-c", "2",
                                  "--timeout", "20"], log_name="client") for ip in ips.values()]
        for name in ("Bad", "ok-name"):
            faasd.api("POST", "/api/new", headers={"X-Image-Name": name}, body_path=garbage)
        faasd.api("GET", "/api/ip/nope")
        SlowUpload(faas, f"aborted{i}").abort()
        faas.wait_for_cleanup(lambda: f"deploy of aborted{i} failed" in faasd.log(),
                              what="the aborted upload to fail")
        for c in clients:
            assert c.wait(timeout=30) == 0
        faas.wait_for_cleanup()

    round_of_errors(0)  # warm-up: lazily created fds exist from here on
    before = faasd.fds()
    for i in range(1, 4):
        round_of_errors(i)
    after = faasd.fds()
    leaked = {fd: t for fd, t in after.items() if before.get(fd) != t}
    assert len(after) == len(before) and leaked == {}, f"fds before {before}, leaked {leaked}"
