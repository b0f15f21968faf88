"""Fixtures of tests/examples: image archives of examples/* and of `faas init` projects,
built on the test host once per test run with their own build scripts, exactly as a user
would build them.

    python_base      the Python base (localhost/python:3.11-slim), built by the command
                     users run without a registry, sdk/tools/faas-python-base (its
                     tarball cached by tests/lib/images.py); the Python examples and
                     projects build FROM their default python:3.11-slim, which is it
    example_archive  example_archive("hello-c") -> Path of `podman save` output
    init_archive     init_archive("c") -> (function name, Path): `faas init --lang c`, then
                     the project's build.sh
    faas_cli         path of the built `faas` (on the host: init needs no daemon)

Images get a per-session tag (localhost/faas-test-example-NAME:SESSION) and are removed
at the end of the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.images import PYTHON_BASE_TAG  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SDK = REPO / "sdk"
# Warnings are errors for everything the tests compile.
STRICT_CFLAGS = "-O2 -Wall -Wextra -Werror"


class BuildError(AssertionError):
    pass


def run_build(argv, env, cwd=None, timeout=600):
    p = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise BuildError(f"{' '.join(map(str, argv))} exited {p.returncode}:\n"
                         f"--- stdout ---\n{p.stdout[-3000:]}\n--- stderr ---\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="session")
def faas_cli(build_dir) -> Path:
    return Path(build_dir) / "faas"


@pytest.fixture(scope="session")
def python_base(images) -> str:
    """The suite's Python base, imported into podman (tests/lib/images.py builds it)."""
    with images._lock():
        images._ensure_python_base()
    return PYTHON_BASE_TAG


class _Builds:
    """Builds, caches for the session, and finally removes, the images of one session."""

    def __init__(self, out: Path):
        self.out = out
        self.session = f"s{os.getpid()}"
        self.archives = {}
        self.tags = []

    def build(self, key: str, script: Path, extra_env: dict) -> Path:
        if key in self.archives:
            return self.archives[key]
        tag = f"localhost/faas-test-example-{key}:{self.session}"
        archive = self.out / f"{key}.tar"
        env = dict(os.environ, IMAGE=tag, CFLAGS=STRICT_CFLAGS, **extra_env)
        self.tags.append(tag)
        run_build([script, archive], env)
        assert archive.stat().st_size > 0
        self.archives[key] = archive
        return archive

    def cleanup(self):
        if self.tags:
            subprocess.run(["podman", "rmi", "-f", *self.tags], capture_output=True)


@pytest.fixture(scope="session")
def _builds(tmp_path_factory):
    builds = _Builds(tmp_path_factory.mktemp("example-images"))
    yield builds
    builds.cleanup()


PYTHON_EXAMPLES = {"hello-python"}


@pytest.fixture(scope="session")
def example_archive(_builds, request):
    def build(name: str) -> Path:
        if name in PYTHON_EXAMPLES:
            request.getfixturevalue("python_base")
        return _builds.build(name, EXAMPLES / name / "build.sh", {})
    return build


@pytest.fixture(scope="session")
def init_archive(_builds, faas_cli, tmp_path_factory, request):
    def build(lang: str):
        name = f"init-{lang}"
        project = tmp_path_factory.mktemp("init") / name
        r = subprocess.run([str(faas_cli), "init", "--lang", lang, str(project)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"faas init --lang {lang} failed: {r.stderr}"
        if lang == "python":
            request.getfixturevalue("python_base")
        return name, _builds.build(name, project / "build.sh", {})
    return build
