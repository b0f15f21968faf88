"""`faas init` as a command: the files it writes, the SDK it embeds, its refusals; and
how the Python projects (and examples/hello-python) stop when their base image is
missing. No daemon, no image built (tests/examples/test_examples.py builds and deploys
the projects)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "sdk"

FILES = {
    "c": {"handler.c", "Dockerfile", "build.sh", "README.md", "faas-sdk/faas.h",
          "faas-sdk/faas.c", "faas-sdk/faas-local-run"},
    "python": {"handler.py", "faas_handler.py", "Dockerfile", "build.sh", "README.md",
               "faas-sdk/faas-local-run", "faas-sdk/faas-python-base"},
    "stdio": {"handler.sh", "Dockerfile", "build.sh", "README.md", "faas-sdk/faas-stdio.c",
              "faas-sdk/faas.h", "faas-sdk/faas.c", "faas-sdk/faas-local-run"},
}
EXECUTABLE = {"build.sh", "faas-sdk/faas-local-run", "faas-sdk/faas-python-base"}
EMBEDDED = {  # project file -> its source in sdk/, byte for byte
    "faas-sdk/faas.h": "c/faas.h", "faas-sdk/faas.c": "c/faas.c",
    "faas-sdk/faas-stdio.c": "stdio/faas-stdio.c", "faas_handler.py": "python/faas_handler.py",
    "faas-sdk/faas-local-run": "tools/faas-local-run",
    "faas-sdk/faas-python-base": "tools/faas-python-base",
}


def init(faas_cli, *args, cwd=None):
    return subprocess.run([str(faas_cli), "init", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def tree(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("lang", sorted(FILES))
def test_init_writes_a_complete_project(faas_cli, tmp_path, lang):
    project = tmp_path / "my-fn"
    r = init(faas_cli, "--lang", lang, project)
    assert r.returncode == 0, r.stderr
    assert tree(project) == FILES[lang]
    lines = r.stdout.splitlines()
    assert lines[0] == f"✓ Created my-fn ({lang}) in {project}"
    assert {line.strip() for line in lines[1:len(FILES[lang]) + 1]} == \
        {f"{project}/{f}" for f in FILES[lang]}
    assert "faas new my-fn < my-fn.tar" in r.stdout
    for name in FILES[lang]:
        mode = (project / name).stat().st_mode
        assert bool(mode & stat.S_IXUSR) == (name in EXECUTABLE), name
        text = (project / name).read_bytes()
        assert b"{{" not in text or name in EMBEDDED, f"{name} has a placeholder left"
        if name in EMBEDDED:
            assert text == (SDK / EMBEDDED[name]).read_bytes(), f"{name} differs from sdk/"
    assert "localhost/my-fn:latest" in (project / "build.sh").read_text()


def test_init_derives_and_checks_names(faas_cli, tmp_path):
    r = init(faas_cli, "--lang", "c", "My Func/", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("✓ Created my-func (c) in My Func/")
    assert "  'My Func'/build.sh my-func.tar" in r.stdout  # quoted for the shell
    r = init(faas_cli, "--lang", "stdio", "--name", "other", tmp_path / "x")
    assert r.returncode == 0 and "got $REQUEST_METHOD" in (tmp_path / "x/handler.sh").read_text()
    assert "other got" in (tmp_path / "x/handler.sh").read_text()
    r = init(faas_cli, "--lang", "c", "--name", "Bad!", tmp_path / "y")
    assert r.returncode == 2 and "invalid function name" in r.stderr
    r = init(faas_cli, "--lang", "c", tmp_path / "___")
    assert r.returncode == 2 and "give one with --name" in r.stderr
    assert not (tmp_path / "y").exists() and not (tmp_path / "___").exists()


def test_init_refuses_to_overwrite(faas_cli, tmp_path):
    project = tmp_path / "fn"
    project.mkdir()
    (project / "README.md").write_text("mine\n")
    r = init(faas_cli, "--lang", "c", project)
    assert r.returncode == 1
    assert r.stderr == (f"Error: not overwriting {project}/README.md: faas init only creates new "
                        f"files (choose another directory or move them away)\n")
    assert tree(project) == {"README.md"}
    assert (project / "README.md").read_text() == "mine\n"
    # A symlink counts, even a dangling one; so does a file where a directory must go.
    (project / "README.md").unlink()
    os.symlink("/nonexistent", project / "Dockerfile")
    (project / "faas-sdk").write_text("")
    r = init(faas_cli, "--lang", "c", project)
    assert r.returncode == 1
    assert f"{project}/Dockerfile" in r.stderr and f"{project}/faas-sdk" in r.stderr
    assert tree(project) == {"faas-sdk"}
    # A second init into a finished project refuses too.
    other = tmp_path / "done"
    assert init(faas_cli, "--lang", "python", other).returncode == 0
    before = {p: (other / p).read_bytes() for p in tree(other)}
    r = init(faas_cli, "--lang", "python", other)
    assert r.returncode == 1 and "not overwriting" in r.stderr
    assert {p: (other / p).read_bytes() for p in tree(other)} == before


def test_init_refuses_a_file_as_directory(faas_cli, tmp_path):
    (tmp_path / "file").write_text("")
    r = init(faas_cli, "--lang", "c", tmp_path / "file")
    assert r.returncode == 1 and "exists and is not a directory" in r.stderr


def test_init_usage_errors(faas_cli, tmp_path):
    r = init(faas_cli, "--lang", "rust", tmp_path / "r")
    assert r.returncode == 2 and "rust not in {c,python,stdio}" in r.stderr
    r = init(faas_cli, tmp_path / "r")
    assert r.returncode == 2 and "--lang is required" in r.stderr
    r = init(faas_cli, "--help")
    assert r.returncode == 0 and "Existing files" in r.stdout
    assert not (tmp_path / "r").exists()


def build_without_base(build_sh: Path, out: Path, base: str = "") -> subprocess.CompletedProcess:
    """Runs a Python project's build.sh whose base image is not on this machine."""
    env = dict(os.environ, IMAGE=f"localhost/faas-test-never-built:{os.getpid()}")
    env.pop("BASE", None)
    if base:
        env["BASE"] = base
    return subprocess.run([str(build_sh), str(out)], env=env, capture_output=True, text=True,
                          timeout=120)


def assert_no_base_error(r: subprocess.CompletedProcess, base: str, command: str, out: Path):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith(f"Error: the Python base image {base} is not on this machine."), \
        r.stderr
    assert f"\n  {command}\n" in r.stderr, r.stderr
    assert f"podman pull {base}\n" in r.stderr, r.stderr
    assert r.stdout == "" and not out.exists()
    assert subprocess.run(["podman", "image", "exists",
                           f"localhost/faas-test-never-built:{os.getpid()}"]).returncode == 1


def test_python_build_without_its_base_names_the_command_that_builds_it(faas_cli, tmp_path):
    """Without the base (no registry), build.sh stops before podman build and prints the
    exact command of the project that builds it; with BASE set, for that name."""
    project = tmp_path / "py-fn"
    assert init(faas_cli, "--lang", "python", project).returncode == 0
    base = "localhost/faas-test-no-such-base:none"
    r = build_without_base(project / "build.sh", tmp_path / "out.tar", base)
    assert_no_base_error(r, base, f"{project}/faas-sdk/faas-python-base {base}",
                         tmp_path / "out.tar")
    # The default comes from the Dockerfile's ARG BASE line, and so does the name checked.
    dockerfile = project / "Dockerfile"
    text = dockerfile.read_text()
    assert "\nARG BASE=python:3.11-slim\n" in text
    dockerfile.write_text(text.replace("ARG BASE=python:3.11-slim", f"ARG BASE={base}"))
    r = build_without_base(project / "build.sh", tmp_path / "out.tar")
    assert_no_base_error(r, base, f"{project}/faas-sdk/faas-python-base", tmp_path / "out.tar")


def test_python_base_command_usage(tmp_path):
    script = SDK / "tools/faas-python-base"
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "faas-python-base [--tar FILE] [IMAGE]" in r.stdout
    assert "localhost/python:3.11-slim" in r.stdout
    for args, error in ((["--tar"], "--tar needs a FILE"), (["--bogus"], "unknown option --bogus"),
                        (["a", "b"], "one IMAGE at most")):
        r = subprocess.run([str(script), *args], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith(f"Error: {error}"), (args, r.stderr)


def test_hello_python_example_without_its_base_names_the_command_that_builds_it(tmp_path):
    base = "localhost/faas-test-no-such-base:none"
    r = build_without_base(REPO / "examples/hello-python/build.sh", tmp_path / "out.tar", base)
    assert_no_base_error(r, base, f"{SDK}/tools/faas-python-base {base}", tmp_path / "out.tar")
