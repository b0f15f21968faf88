/* faas.h: the C SDK for faasd handlers (C11, libc only, links statically).
 *
 * A faasd handler serves one HTTP request and exits. faasd starts it in a fresh
 * container per TCP connection; the handler connects to the unix socket
 * $FAAS_CONTROL_SOCKET (/control.sock), receives the accepted client socket there,
 * speaks HTTP/1.1 on it and exits. A function deployed with `faas new --reuse N` serves
 * up to N clients in turn from one container: faas_serve() does that by itself.
 * docs/HANDLER_PROTOCOL.md has the whole contract.
 *
 * The smallest handler with this SDK:
 *
 *   #include "faas.h"
 *   static int hello(int client, const struct faas_request *req, void *ctx) {
 *     (void)req, (void)ctx;
 *     return faas_respond(client, 200, "text/plain", "hi\n", 3) == 0 ? 0 : 1;
 *   }
 *   int main(void) { return faas_serve(hello, NULL, NULL); }
 *
 * Build it statically so the image can be FROM scratch:
 *   gcc -static -O2 -o handler handler.c faas.c
 *
 * Conventions: functions that can fail take `char *err, size_t errlen` and write a
 * one-line, NUL-terminated reason there (err may be NULL). FAAS_ERR_MAX is enough
 * for every message. Nothing here prints, exits or installs signal handlers, except
 * faas_serve(), which logs failures to stderr. Writes use MSG_NOSIGNAL, so a client
 * that goes away yields an error return, not SIGPIPE. Not thread-safe per request
 * (a handler has one request); no global state.
 */
#ifndef FAAS_SDK_FAAS_H_
#define FAAS_SDK_FAAS_H_

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Room for any error message of this SDK, NUL included. */
#define FAAS_ERR_MAX 256

/* Where the control socket is when $FAAS_CONTROL_SOCKET is unset or empty. */
#define FAAS_DEFAULT_CONTROL_SOCKET "/control.sock"

/* Receives the client connection from faasd: connects to $FAAS_CONTROL_SOCKET
 * (default /control.sock), receives exactly one fd with the 6-byte payload "SOCKET"
 * (SCM_RIGHTS), closes the control socket and returns the fd: a connected TCP
 * socket, blocking, close-on-exec. Call it once per client: once, unless the function
 * reuses its containers (faas_reuse() > 1); then again after closing each client, for
 * the next one. faasd kills a container whose handler has not connected within its
 * connect timeout (5 s from the start); set-up done before the first call, within that
 * time, is off the request's path when faasd's warm pool started the container ahead of
 * its request. The wait for the client has no timeout: a pooled handler may wait
 * minutes, and faasd alone ends a container it no longer needs.
 * Returns -1 with a message in err and errno set when the socket is missing (ENOENT,
 * ECONNREFUSED: not running under faasd or faas-local-run, or, on a later call, faasd
 * has no more clients for this container), faasd closes it without a client (EPROTO),
 * or the message is not exactly "SOCKET" with one fd (EPROTO; any fds received are
 * closed). */
int faas_accept(char *err, size_t errlen);

/* How many clients this process may serve in turn: $FAAS_REUSE, which faasd sets from
 * `faas new --reuse N` (1 when it is unset, not a number or below 1). Leaves errno
 * alone. */
int faas_reuse(void);

/* One header field. In a request both point into the request's own storage. */
struct faas_header {
  const char *name;  /* as sent; compare with strcasecmp or use faas_get_header() */
  const char *value; /* leading and trailing spaces and tabs removed */
};

/* A parsed request. Every string is NUL-terminated and valid until
 * faas_request_free(). */
struct faas_request {
  /* As sent, e.g. "GET" (methods are case-sensitive). */
  const char *method;
  /* The target up to '?', not percent-decoded, e.g. "/a%20b". Of an absolute-form target
   * ("http://host/a") only the path is kept. */
  const char *path;
  /* What follows the first '?', "" when there is none. */
  const char *query;
  /* 1 for HTTP/1.1, 0 for HTTP/1.0. */
  int version_minor;
  /* The header fields in the order received, duplicates kept. */
  const struct faas_header *headers;
  size_t header_count;
  /* body_len bytes (chunked bodies decoded), then a NUL that is not counted. Never NULL
   * after success: "" when there is no body. */
  const char *body;
  size_t body_len;
  void *storage_; /* private */
};

/* Bounds on what faas_read_request() accepts. A zero field takes its default. */
struct faas_limits {
  /* Request line + header fields, bytes (64 KiB). Beyond: 431, or 414 when the request
   * line alone is longer. */
  size_t max_head;
  /* Header fields (100). Beyond: 431. */
  size_t max_headers;
  /* Body bytes after chunked decoding (16 MiB). Beyond: 413. */
  size_t max_body;
  /* Milliseconds to read the whole request (15000), then 408. -1: no limit. */
  int timeout_ms;
};

/* Reads one request from `fd` into *req.
 *
 * Returns 0 when *req holds a complete request: then call faas_request_free().
 * Otherwise *req holds nothing to free and the return value says what to do:
 *   400, 408, 413, 414, 431, 500, 501, 505: the HTTP status to answer with; err says why
 *     (a bad request line, header or chunk size, a body shorter than its
 *     Content-Length, conflicting Content-Length / Transfer-Encoding, a timeout,
 *     a size limit, out of memory, a transfer coding other than chunked, an HTTP
 *     version other than 1.0 and 1.1). faas_respond_error(fd, status, err) answers it.
 *   -1: the connection failed, or closed before a single byte arrived; there is
 *     nobody to answer.
 * limits may be NULL (all defaults). Bare LF line ends are accepted, obsolete line
 * folding and bare CR are not. Bytes after the body (pipelining) are ignored. An
 * HTTP/1.1 request with "Expect: 100-continue" and a body within the limits gets the
 * interim "HTTP/1.1 100 Continue" before the body is read. */
int faas_read_request(int fd, struct faas_request *req, const struct faas_limits *limits, char *err,
                      size_t errlen);

/* Frees what faas_read_request() allocated; safe on a zeroed or freed request. */
void faas_request_free(struct faas_request *req);

/* The value of the first header field called `name` (case-insensitive), or NULL. */
const char *faas_get_header(const struct faas_request *req, const char *name);

/* Finds `name` in the query string (key=value pairs separated by '&'; '+' and %XX
 * decoded in keys and values) and copies the first value, decoded and
 * NUL-terminated, to out. Returns its length, -1 when the key is absent (out is
 * ""), -2 when the value needs more than outlen bytes (out is ""). A key without
 * '=' has the value "". */
ssize_t faas_query_param(const struct faas_request *req, const char *name, char *out,
                         size_t outlen);

/* Writes a complete response: status line, Content-Type (omitted when NULL),
 * Content-Length, "Connection: close", then the body. Returns 0, or -1 with errno
 * set (EINVAL for a status outside 200..599; EPIPE/ECONNRESET when the client went
 * away). Send one response per request, then faas_close(). */
int faas_respond(int fd, int status, const char *content_type, const void *body, size_t len);

/* Like faas_respond() with your own header fields (Content-Type among them if you
 * want one). Content-Length and "Connection: close" are added; do not pass them.
 * Fails with EINVAL, writing nothing, when a name or value holds CR, LF or NUL, or
 * a name is empty or has a ':' or whitespace. For 204 and 304 no body and no
 * Content-Length are sent. */
int faas_respond_headers(int fd, int status, const struct faas_header *headers, size_t count,
                         const void *body, size_t len);

/* Answers `status` with a text/plain body "<message>\n" (the reason phrase when
 * message is NULL or empty). For the statuses faas_read_request() returns. */
int faas_respond_error(int fd, int status, const char *message);

/* The reason phrase of a status ("Not Found"), "Unknown" for unlisted ones. */
const char *faas_reason(int status);

/* Ends the connection politely: shuts down the sending side, so the client sees the
 * end of the response, then discards what the client still sends (at most 1 MiB,
 * for at most 2 s) until it closes, and closes fd. Closing a socket with unread
 * input would reset the connection, and the client could lose the response. */
void faas_close(int fd);

/* What faas_serve() calls with the parsed request. It answers through `client`
 * (faas_respond...) and must not close it. Its return value becomes the exit status
 * of the handler process. */
typedef int (*faas_handler_fn)(int client, const struct faas_request *req, void *ctx);

/* The whole life of a handler in one call: faas_accept(), faas_read_request() with
 * `limits` (NULL: defaults), then fn, or the 4xx/5xx answer itself when the request
 * is malformed, then faas_close(); all of it up to faas_reuse() times, one client after
 * the other. No client stays open and nothing allocated for a request outlives it; what
 * fn keeps in ctx or in globals is seen by the next request. After a client, a refused
 * connect (ECONNREFUSED, ENOENT) is faasd having no more clients for this container: the
 * loop ends there, quietly. Failures are logged to stderr as "faas: ...".
 * Returns the exit status for main(): that of the last client (fn's, 0 after answering
 * a malformed request), 1 when there was no client to answer or faas_accept() failed
 * otherwise. */
int faas_serve(faas_handler_fn fn, const struct faas_limits *limits, void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* FAAS_SDK_FAAS_H_ */
