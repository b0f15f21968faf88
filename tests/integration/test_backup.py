"""Backing up the state dir of a running faasd, as docs/OPERATIONS.md says, and
restoring it into an empty state dir: every function serves again, with its kept
versions."""

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.vmtest
def test_live_backup_restores_every_function_and_its_versions(faas, faasd):
    a = faas.deploy_handler("a", "hello")
    b = faas.deploy_handler("b", "echo")
    faas.deploy_handler("a", "echo")  # a serves version 2; version 1 is kept
    faas.assert_handler_responds(a.ip, expected_body="v2", body="v2")
    registry = faas.read_registry()
    logged = faasd.faas("logs", "a", "--json", check=True).stdout
    assert '"stream":"request"' in logged, logged
    backup = f"{faasd.state_dir}.backup.tar"

    # While faasd serves: the registry first, then the trees it names.
    faas.vm.run(["tar", "--create", "--file", backup, "--xattrs", "--xattrs-include=*",
                 "--directory", faasd.state_dir, "registry.json", "images", "logs"])
    faas.assert_handler_responds(a.ip, expected_body="v2", body="v2")
    assert faasd.stop() == 0

    faas.vm.run(f"find {faasd.state_dir} -mindepth 1 -delete")
    assert faas.vm.listdir(faasd.state_dir) == []
    faas.vm.run(["tar", "--extract", "--file", backup, "--xattrs", "--xattrs-include=*",
                 "--same-owner", "--preserve-permissions", "--directory", faasd.state_dir])
    faasd.start()

    assert faas.read_registry() == registry
    assert faasd.faas("logs", "a", "--json", check=True).stdout == logged
    assert faasd.faas_addresses() == [a.ip, b.ip]
    faas.assert_handler_responds(a.ip, expected_body="restored", body="restored")
    faas.assert_handler_responds(b.ip, expected_body="restored", body="restored")
    r = faasd.faas("rollback", "a", check=True)
    assert r.stdout == f"✓ Rolled back a from v2 to v1 at {a.ip}\n"
    faas.assert_handler_responds(a.ip)  # hello again
