"""hello-python: the smallest useful faasd function with the Python SDK. Answers
"Hello, NAME!\n" where NAME is the query parameter `name` (default "world")."""
import sys

from faas_handler import serve


def hello(request):
    return 200, {"Content-Type": "text/plain; charset=utf-8"}, \
        f"Hello, {request.arg('name', 'world')}!\n"


if __name__ == "__main__":
    sys.exit(serve(hello))
