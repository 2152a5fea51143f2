/* httpget: one HTTP/1.1 GET on 127.0.0.1, the body read N bytes at a time and thrown away.
 *
 * What a Go client does (io.Copy reads 32 KiB per call straight from the socket: net/http's
 * bufio.Reader hands a large read through), without a runtime's own costs, so the server is
 * what the figure measures. Built by the benchmark suite at run time (gcc -O2); never part
 * of the product.
 *
 * usage: httpget HOST PORT PATH READ_SIZE
 * prints: STATUS BODY_BYTES SECONDS TTFB_SECONDS CONTENT_LENGTH(-1 if none) CONNECT_SECONDS
 * seconds: request written -> last byte read; ttfb: request written -> end of headers;
 * connect: the TCP handshake before the request (a client's first request pays it too).
 * exit 0 on a complete exchange (any status), 1 on a connection or protocol error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what) {
    fprintf(stderr, "httpget: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: httpget HOST PORT PATH READ_SIZE\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]);
    long read_size = atol(argv[4]);
    if (port <= 0 || port > 65535 || read_size < 1024 || read_size > (64L << 20)) {
        fprintf(stderr, "httpget: bad port or read size\n");
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "httpget: HOST must be an IPv4 address\n");
        return 2;
    }
    char *buf = malloc((size_t)read_size + HEAD_MAX);
    if (!buf) return fail("malloc");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return fail("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 300};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    double connecting = now();
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) return fail("connect");
    double connected = now() - connecting;

    char req[4096];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: registry-cache-bench-httpget\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n",
                     path, host, port);
    if (n <= 0 || n >= (int)sizeof req) {
        fprintf(stderr, "httpget: path too long\n");
        return 2;
    }
    double started = now();
    for (int off = 0; off < n;) {
        ssize_t w = write(fd, req + off, (size_t)(n - off));
        if (w < 0) return fail("write");
        off += (int)w;
    }

    /* Headers: read (READ_SIZE at a time) until the blank line; what follows is body. */
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have >= HEAD_MAX) {
            fprintf(stderr, "httpget: headers longer than %d bytes\n", HEAD_MAX);
            return 1;
        }
        size_t room = (size_t)read_size + HEAD_MAX - have;
        ssize_t r = read(fd, buf + have, room < (size_t)read_size ? room : (size_t)read_size);
        if (r < 0) return fail("read");
        if (r == 0) {
            fprintf(stderr, "httpget: connection closed inside the headers\n");
            return 1;
        }
        have += (size_t)r;
        end = memmem(buf, have, "\r\n\r\n", 4);
    }
    double ttfb = now() - started;
    *end = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        fprintf(stderr, "httpget: not an HTTP response\n");
        return 1;
    }
    long long length = -1;
    for (char *line = strstr(buf, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0) length = atoll(line + 17);
    }
    long long body = (long long)(have - (size_t)(end + 4 - buf));
    for (;;) {
        ssize_t r = read(fd, buf, (size_t)read_size);
        if (r < 0) {
            if (errno == EINTR) continue;
            return fail("read");
        }
        if (r == 0) break;
        body += r;
    }
    double seconds = now() - started;
    close(fd);
    printf("%d %lld %.6f %.6f %lld %.6f\n", status, body, seconds, ttfb, length, connected);
    return 0;
}
