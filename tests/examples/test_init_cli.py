"""`faas init` as a command: the files it writes, the SDK it embeds, its refusals.
No daemon, no images (tests/examples/test_examples.py builds and deploys the projects)."""

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
               "faas-sdk/faas-local-run"},
    "stdio": {"handler.sh", "Dockerfile", "build.sh", "README.md", "faas-sdk/faas-stdio.c",
              "faas-sdk/faas.h", "faas-sdk/faas.c", "faas-sdk/faas-local-run"},
}
EXECUTABLE = {"build.sh", "faas-sdk/faas-local-run"}
EMBEDDED = {  # project file -> its source in sdk/, byte for byte
    "faas-sdk/faas.h": "c/faas.h", "faas-sdk/faas.c": "c/faas.c",
    "faas-sdk/faas-stdio.c": "stdio/faas-stdio.c", "faas_handler.py": "python/faas_handler.py",
    "faas-sdk/faas-local-run": "tools/faas-local-run",
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
