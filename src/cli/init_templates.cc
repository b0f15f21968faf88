#include "cli/init_templates.h"

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace faas::cli {
namespace {

// ---- shared pieces ----------------------------------------------------------------------

// How build.sh scripts start: where the project is, the image name, where to save it.
constexpr std::string_view kBuildPreamble = R"TPL(set -eu
here=$(cd "$(dirname "$0")" && pwd)
image=${IMAGE:-localhost/{{NAME}}:latest}
out=${1:-}
case $out in "" | /*) ;; *) out="$PWD/$out" ;; esac
)TPL";

// How they end: podman save when asked to.
constexpr std::string_view kBuildSave = R"TPL(if [ -n "$out" ]; then
  rm -f "$out"
  podman save -q -o "$out" "$image"
  echo "built $image, saved to $out"
else
  echo "built $image"
fi
)TPL";

// ---- C ------------------------------------------------------------------------------------

constexpr std::string_view kCHandler = R"TPL(/* {{NAME}}: a faasd function in C.
 *
 * faasd runs this program once per request, in a fresh container. faas_serve() (the C SDK
 * in faas-sdk/, documented in faas.h) receives the client from faasd, reads the request,
 * calls handle() and closes the connection; it answers a malformed request 4xx itself,
 * without calling handle(). Edit handle(), then ./build.sh. */
#include <stdio.h>
#include <string.h>

#include "faas.h"

static int handle(int client, const struct faas_request *req, void *ctx) {
  (void)ctx;
  char name[100];
  if (faas_query_param(req, "name", name, sizeof name) < 0) snprintf(name, sizeof name, "world");
  char body[512];
  int len = snprintf(body, sizeof body, "Hello, %s!\n{{NAME}} got %.20s %.200s with %zu body bytes.\n",
                     name, req->method, req->path, req->body_len);
  if (len < 0 || (size_t)len >= sizeof body) len = (int)strlen(body);
  /* What handle() returns is the exit status of the handler (faasd logs it). */
  return faas_respond(client, 200, "text/plain; charset=utf-8", body, (size_t)len) == 0 ? 0 : 1;
}

int main(void) {
  /* Set-up done here, before faas_serve() waits for the client (loading files, building
   * tables), runs ahead of the request when faasd's warm pool started this container. */
  return faas_serve(handle, NULL, NULL);
}
)TPL";

constexpr std::string_view kCDockerfile =
    R"TPL(# {{NAME}}: a faasd function in C. The image holds one static binary and nothing else;
# build.sh compiles it on this machine and puts it in the build context.
FROM scratch
COPY handler /handler
CMD ["/handler"]
)TPL";

constexpr std::string_view kCBuildHead = R"TPL(#!/bin/sh
# Builds the image of the faasd function {{NAME}} with podman.
#   ./build.sh           compiles *.c statically and builds localhost/{{NAME}}:latest
#   ./build.sh OUT.tar   the same, then writes the image to OUT.tar (podman save) for
#                        faas new {{NAME}} < OUT.tar
# IMAGE=name:tag changes the image name, CFLAGS the compiler flags. The image is FROM
# scratch, so the handler is compiled here, statically: this needs gcc and the static C
# library (Debian: build-essential), and podman.
)TPL";

constexpr std::string_view kCBuildBody = R"TPL(ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# shellcheck disable=SC2086 # CFLAGS is a list of flags
gcc -static -s ${CFLAGS:--O2 -Wall -Wextra} -I "$here/faas-sdk" -o "$ctx/handler" \
  "$here"/*.c "$here/faas-sdk/faas.c"
cp "$here/Dockerfile" "$ctx/"
podman build -q --isolation chroot -t "$image" "$ctx" >/dev/null
)TPL";

constexpr std::string_view kCReadme = R"TPL(# {{NAME}}

A faasd function in C, made by `faas init --lang c`.

| file | what it is |
|---|---|
| `handler.c` | your code: `handle()` answers one request |
| `faas-sdk/faas.h`, `faas-sdk/faas.c` | the C SDK; `faas.h` documents it |
| `faas-sdk/faas-local-run` | runs the handler on this machine, without faasd |
| `Dockerfile` | `FROM scratch` with the static handler as `/handler` |
| `build.sh` | compiles on this machine (static) and builds the image with podman |

Build, deploy and call it:

    ./build.sh {{NAME}}.tar
    faas new {{NAME}} < {{NAME}}.tar
    curl "http://$(faas ip {{NAME}})/?name=you"

Try it without faasd (Python 3 runs `faas-local-run`):

    gcc -O2 -Wall -I faas-sdk -o handler handler.c faas-sdk/faas.c
    faas-sdk/faas-local-run -- ./handler &
    curl "http://127.0.0.1:8080/?name=you"

Inside faasd the handler serves one request per process (with `faas new --reuse N`, up
to N in turn: `faas_serve()` loops, and `faas-local-run --reuse N` tries it here) and
must connect to faasd within 5 s of its start and finish within 30 s of getting its
client. With a warm pool (`faas new --warm 1`) faasd starts containers ahead of their
requests, so set-up in `main()` before `faas_serve()` (within the 5 s) runs before the
request arrives; a cold start (the default) waits for it. The container has a read-only
root with a 64 MB tmpfs on `/tmp`, no network but the client's socket, no capabilities,
512 MB of memory and one CPU. What it prints on stdout and stderr goes to faasd's log. The whole contract is
`docs/HANDLER_PROTOCOL.md` in faasd's source tree.
)TPL";

// ---- Python -------------------------------------------------------------------------------

constexpr std::string_view kPyHandler = R"TPL("""{{NAME}}: a faasd function in Python.

faasd runs this script once per request, in a fresh container. serve() (the SDK in
faas_handler.py, standard library only) receives the client from faasd, reads the
request, calls handle() and sends what it returns. It answers a malformed request 4xx
itself, without calling handle(), and an exception in handle() 500 (the traceback goes
to faasd's log). Edit handle(), then ./build.sh.
"""
import sys

from faas_handler import serve

# Set-up at module level (imports, loading data) runs before serve() waits for the
# client: ahead of the request when faasd's warm pool started this container.


def handle(request):
    """request has method, path, query, headers, body (bytes), header(name) and
    arg(name). Return (status, headers, body), (status, body) or just a body."""
    name = request.arg("name", "world")
    text = (f"Hello, {name}!\n"
            f"{{NAME}} got {request.method} {request.path} with {len(request.body)} body bytes.\n")
    return 200, {"Content-Type": "text/plain; charset=utf-8"}, text


if __name__ == "__main__":
    sys.exit(serve(handle))
)TPL";

constexpr std::string_view kPyDockerfile =
    R"TPL(# {{NAME}}: a faasd function in Python: handler.py and the SDK faas_handler.py.
# BASE is any image with python3 (3.9 or later) on its PATH. The default is a registry's
# python:3.11-slim, or the local image of that name faas-sdk/faas-python-base builds
# without a registry (Debian bookworm's python3). build.sh reads this line.
ARG BASE=python:3.11-slim
FROM ${BASE}
# The root filesystem is read-only under faasd: do not try to write .pyc files.
ENV PYTHONDONTWRITEBYTECODE=1
COPY *.py /app/
CMD ["python3", "/app/handler.py"]
)TPL";

constexpr std::string_view kPyBuildHead = R"TPL(#!/bin/sh
# Builds the image of the faasd function {{NAME}} with podman.
#   ./build.sh           builds localhost/{{NAME}}:latest from the *.py files here
#   ./build.sh OUT.tar   the same, then writes the image to OUT.tar (podman save) for
#                        faas new {{NAME}} < OUT.tar
# IMAGE=name:tag changes the image name; BASE=image the Python base image (default: the
# Dockerfile's, python:3.11-slim). The base must be on this machine: without a registry,
# faas-sdk/faas-python-base builds it from this machine's apt sources.
)TPL";

constexpr std::string_view kPyBuildBody =
    R"TPL(base=${BASE:-$(sed -n 's/^ARG BASE=//p' "$here/Dockerfile")}
if ! podman image exists "$base"; then
  echo "Error: the Python base image $base is not on this machine. Build it without a" >&2
  echo "registry (Debian bookworm with python3, from this machine's apt sources):" >&2
  echo "  $here/faas-sdk/faas-python-base${BASE:+ $BASE}" >&2
  echo "or pull it from a registry: podman pull $base" >&2
  exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$here"/*.py "$ctx/"
podman build -q --isolation chroot --build-arg "BASE=$base" -t "$image" "$ctx" >/dev/null
)TPL";

constexpr std::string_view kPyReadme = R"TPL(# {{NAME}}

A faasd function in Python, made by `faas init --lang python`.

| file | what it is |
|---|---|
| `handler.py` | your code: `handle(request)` answers one request |
| `faas_handler.py` | the Python SDK (standard library only; its docstrings document it) |
| `faas-sdk/faas-local-run` | runs the handler on this machine, without faasd |
| `faas-sdk/faas-python-base` | builds the base image without a registry (see below) |
| `Dockerfile` | `FROM ${BASE}` (default `python:3.11-slim`) with the `*.py` files in `/app` |
| `build.sh` | builds the image with podman |

The base image must be on this machine first (`build.sh` says so when it is not). With
a registry, `podman pull python:3.11-slim`. Without one, build it once from this
machine's apt sources: Debian bookworm with its python3 (3.11), made by mmdebstrap and
imported into podman as `localhost/python:3.11-slim`, which `FROM python:3.11-slim`
then finds (a few minutes; needs `apt-get install mmdebstrap`):

    faas-sdk/faas-python-base

Build, deploy and call it:

    ./build.sh {{NAME}}.tar          # or: BASE=localhost/your-python-base ./build.sh {{NAME}}.tar
    faas new {{NAME}} < {{NAME}}.tar
    curl "http://$(faas ip {{NAME}})/?name=you"

Try it without faasd:

    faas-sdk/faas-local-run -- python3 handler.py &
    curl "http://127.0.0.1:8080/?name=you"

Every request gets a new Python process (with `faas new --reuse N`, one process serves up
to N in turn: `serve()` loops, module-level state carries over, and `faas-local-run
--reuse N` tries it here). Imports and other module-level set-up run before `serve()`
waits for the client: with a warm pool (`faas new --warm 1`) that happens before the
request arrives, but a cold start (the default) pays it, so keep it lean; if nothing
comes from `site-packages`, `CMD ["python3", "-S", ...]` starts faster. Inside faasd the
handler must connect to faasd within 5 s of its start and finish within 30 s of getting its
client. Its container has a read-only root with a 64 MB tmpfs on `/tmp`, no network but
the client's socket, no capabilities, 512 MB of memory and one CPU. What it prints goes
to faasd's log. The whole contract is `docs/HANDLER_PROTOCOL.md` in faasd's source tree.
)TPL";

// ---- stdio --------------------------------------------------------------------------------

constexpr std::string_view kShHandler =
    R"TPL(# {{NAME}}: a faasd function in shell, run by faas-stdio once per request.
#
# The request body is on stdin; the rest of the request is in CGI variables:
# REQUEST_METHOD, PATH_INFO (decoded), QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH and
# HTTP_<HEADER> (e.g. HTTP_USER_AGENT). What the script prints is the answer: 200, as
# text/plain. A non-zero exit answers 500, and stderr goes to faasd's log.
# busybox runs it: the commands are busybox's applets (busybox --list), and no others.
name=world
query="&$QUERY_STRING"
case $query in
*"&name="*)
  name=${query#*&name=}
  name=$(httpd -d "${name%%&*}") # URL-decodes
  ;;
esac
bytes=$(wc -c)
echo "Hello, $name!"
echo "{{NAME}} got $REQUEST_METHOD $PATH_INFO with $bytes body bytes."
)TPL";

constexpr std::string_view kShDockerfile =
    R"TPL(# {{NAME}}: a shell function: faas-stdio runs handler.sh with busybox for each request.
# build.sh compiles faas-stdio statically and copies a static busybox into the context.
FROM scratch
COPY faas-stdio /faas-stdio
COPY busybox /bin/busybox
COPY handler.sh /handler.sh
CMD ["/faas-stdio", "/bin/busybox", "sh", "/handler.sh"]
)TPL";

constexpr std::string_view kShBuildHead = R"TPL(#!/bin/sh
# Builds the image of the faasd function {{NAME}} with podman.
#   ./build.sh           builds localhost/{{NAME}}:latest
#   ./build.sh OUT.tar   the same, then writes the image to OUT.tar (podman save) for
#                        faas new {{NAME}} < OUT.tar
# IMAGE=name:tag changes the image name, BUSYBOX the busybox to copy (default
# /bin/busybox: it must be static, as Debian's busybox-static installs it). faas-stdio is
# compiled here, statically: this needs gcc and the static C library (build-essential).
)TPL";

constexpr std::string_view kShBuildBody = R"TPL(busybox=${BUSYBOX:-/bin/busybox}
if [ ! -x "$busybox" ]; then
  echo "build.sh: no busybox at $busybox (Debian: apt-get install busybox-static)" >&2
  exit 1
fi
if command -v readelf >/dev/null && readelf -l "$busybox" | grep -q INTERP; then
  echo "build.sh: $busybox is dynamically linked; the image needs a static one" \
    "(Debian: apt-get install busybox-static)" >&2
  exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# shellcheck disable=SC2086 # CFLAGS is a list of flags
gcc -static -s ${CFLAGS:--O2 -Wall -Wextra} -I "$here/faas-sdk" -o "$ctx/faas-stdio" \
  "$here/faas-sdk/faas-stdio.c" "$here/faas-sdk/faas.c"
cp "$busybox" "$ctx/busybox"
cp "$here/Dockerfile" "$here/handler.sh" "$ctx/"
podman build -q --isolation chroot -t "$image" "$ctx" >/dev/null
)TPL";

constexpr std::string_view kShReadme = R"TPL(# {{NAME}}

A faasd function in shell, made by `faas init --lang stdio`: `faas-stdio` receives each
request, runs `busybox sh handler.sh` with the body on stdin and CGI variables in the
environment, and answers with what the script printed.

| file | what it is |
|---|---|
| `handler.sh` | your code |
| `faas-sdk/faas-stdio.c` | the shim; the comment at its top documents it |
| `faas-sdk/faas.h`, `faas-sdk/faas.c` | the C SDK the shim is built on |
| `faas-sdk/faas-local-run` | runs the function on this machine, without faasd |
| `Dockerfile` | `FROM scratch` with faas-stdio, a static busybox and `handler.sh` |
| `build.sh` | compiles faas-stdio (static) and builds the image with podman |

Build, deploy and call it:

    ./build.sh {{NAME}}.tar
    faas new {{NAME}} < {{NAME}}.tar
    curl "http://$(faas ip {{NAME}})/?name=you" -d 'some body'

Try it without faasd:

    gcc -O2 -I faas-sdk -o faas-sdk/faas-stdio faas-sdk/faas-stdio.c faas-sdk/faas.c
    faas-sdk/faas-local-run -- faas-sdk/faas-stdio busybox sh handler.sh &
    curl "http://127.0.0.1:8080/?name=you" -d 'some body'

Any program that reads stdin and writes stdout works the same way: put it (static, or
with its libraries) in the image and name it in CMD, e.g.
`CMD ["/faas-stdio", "/bin/busybox", "wc", "-c"]`. A warm pool (`faas new --warm 1`)
starts faas-stdio ahead of the request, but the program runs only once the request has
arrived, so its start-up is on the request's path. Inside faasd the function must finish within 30 s of
getting its client (faas-stdio answers 504 at 25 s). Its container has a read-only root
with a 64 MB tmpfs on `/tmp`, no network, no capabilities, 512 MB of memory and one CPU.
The whole contract is `docs/HANDLER_PROTOCOL.md` in faasd's source tree.
)TPL";

// ---- next steps -------------------------------------------------------------------------

constexpr std::string_view kNextCompiled = R"TPL(Next:
  {{DIR}}/build.sh {{NAME}}.tar        # compile, podman build, podman save
  faas new {{NAME}} < {{NAME}}.tar
  curl "http://$(faas ip {{NAME}})/?name=you"
)TPL";

constexpr std::string_view kNextPython = R"TPL(Next:
  {{DIR}}/faas-sdk/faas-python-base    # once, without a registry: a local python:3.11-slim
  {{DIR}}/build.sh {{NAME}}.tar        # podman build (BASE=image picks the Python base)
  faas new {{NAME}} < {{NAME}}.tar
  curl "http://$(faas ip {{NAME}})/?name=you"
)TPL";

std::string Join(std::initializer_list<std::string_view> parts) {
  std::string text;
  for (std::string_view part : parts) text += part;
  return text;
}

TemplateFile Sdk(std::string_view path, std::string_view source, bool executable = false) {
  return {path, std::string(source), executable, /*verbatim=*/true};
}

std::vector<Template> MakeTemplates() {
  const std::string c_build = Join({kCBuildHead, kBuildPreamble, kCBuildBody, kBuildSave});
  const std::string py_build = Join({kPyBuildHead, kBuildPreamble, kPyBuildBody, kBuildSave});
  const std::string sh_build = Join({kShBuildHead, kBuildPreamble, kShBuildBody, kBuildSave});
  return {
      {"c",
       "C with the C SDK: a static binary in a FROM scratch image",
       {{"handler.c", std::string(kCHandler)},
        {"Dockerfile", std::string(kCDockerfile)},
        {"build.sh", c_build, true},
        {"README.md", std::string(kCReadme)},
        Sdk("faas-sdk/faas.h", kSdkFaasH),
        Sdk("faas-sdk/faas.c", kSdkFaasC),
        Sdk("faas-sdk/faas-local-run", kSdkFaasLocalRun, true)},
       kNextCompiled},
      {"python",
       "Python 3 with the Python SDK (stdlib only) on a Python base image",
       {{"handler.py", std::string(kPyHandler)},
        Sdk("faas_handler.py", kSdkFaasHandlerPy),
        {"Dockerfile", std::string(kPyDockerfile)},
        {"build.sh", py_build, true},
        {"README.md", std::string(kPyReadme)},
        Sdk("faas-sdk/faas-local-run", kSdkFaasLocalRun, true),
        Sdk("faas-sdk/faas-python-base", kSdkFaasPythonBase, true)},
       kNextPython},
      {"stdio",
       "a shell script run by faas-stdio and busybox (stdin = body, stdout = answer)",
       {{"handler.sh", std::string(kShHandler)},
        {"Dockerfile", std::string(kShDockerfile)},
        {"build.sh", sh_build, true},
        {"README.md", std::string(kShReadme)},
        Sdk("faas-sdk/faas-stdio.c", kSdkFaasStdioC),
        Sdk("faas-sdk/faas.h", kSdkFaasH),
        Sdk("faas-sdk/faas.c", kSdkFaasC),
        Sdk("faas-sdk/faas-local-run", kSdkFaasLocalRun, true)},
       kNextCompiled},
  };
}

void ReplaceAll(std::string& text, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  for (size_t pos = text.find(from); pos != std::string::npos;
       pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
}

}  // namespace

const std::vector<Template>& Templates() {
  static const std::vector<Template>* templates = new std::vector<Template>(MakeTemplates());
  return *templates;
}

const Template* FindTemplate(std::string_view lang) {
  for (const Template& t : Templates()) {
    if (t.lang == lang) return &t;
  }
  return nullptr;
}

std::string RenderTemplate(std::string_view text, std::string_view name, std::string_view dir) {
  std::string out(text);
  ReplaceAll(out, "{{NAME}}", name);
  ReplaceAll(out, "{{DIR}}", dir);
  return out;
}

}  // namespace faas::cli
