"""Python twin of tests/handlers/hello: takes the client socket from faasd and
answers "Hello from FaaS handler!\n\nRequest: <request line>\n". Stdlib only."""
import os
import socket
import sys


def receive_client():
    path = os.environ.get("FAAS_CONTROL_SOCKET", "/control.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        control.connect(path)
        msg, fds, _flags, _addr = socket.recv_fds(control, 16, 1)
    if msg != b"SOCKET" or len(fds) != 1:
        sys.exit("unexpected message on control socket")
    return socket.socket(fileno=fds[0])


def main():
    client = receive_client()
    request = b""
    while b"\r\n\r\n" not in request and len(request) < 8192:
        chunk = client.recv(8192 - len(request))
        if not chunk:
            break
        request += chunk
    line = request.split(b"\r\n", 1)[0].decode("latin-1")
    body = f"Hello from FaaS handler!\n\nRequest: {line}\n".encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    client.sendall(head + body)
    client.shutdown(socket.SHUT_WR)
    client.close()


main()
