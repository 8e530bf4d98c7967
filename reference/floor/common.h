/* What both floor servers share: the command line, the listener, a table
 * indexed by fd. `--listen HOST:PORT` (default 127.0.0.1:7000), then
 * "listening on HOST:PORT" on stderr once the socket listens, as
 * holdfast and tokio-echo print it (scripts/bench.sh waits for that line). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void die(const char *what) {
    perror(what);
    exit(1);
}

static inline void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Makes (*table)[index] exist, zeroed, growing the table by doubling. */
static inline void grow(void **table, size_t *len, size_t size, size_t index) {
    if (index < *len) return;
    size_t n = *len ? *len : 1024;
    while (n <= index) n *= 2;
    char *t = realloc(*table, n * size);
    if (!t) die("realloc");
    memset(t + *len * size, 0, (n - *len) * size);
    *table = t;
    *len = n;
}

static inline int listen_on(int argc, char **argv, int flags) {
    char addr[256] = "127.0.0.1:7000";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            snprintf(addr, sizeof addr, "%s", argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--listen HOST:PORT]\n", argv[0]);
            exit(2);
        }
    }
    char *colon = strrchr(addr, ':');
    if (!colon) { fprintf(stderr, "bad --listen %s\n", addr); exit(2); }
    *colon = 0;
    char *host = addr;
    if (host[0] == '[') { host++; host[strlen(host) - 1] = 0; }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    int err = getaddrinfo(host, colon + 1, &hints, &ai);
    if (err) { fprintf(stderr, "--listen %s:%s: %s\n", host, colon + 1, gai_strerror(err)); exit(2); }
    int fd = socket(ai->ai_family, SOCK_STREAM | flags, 0), one = 1;
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) die("bind"); /* "Address already in use" */
    if (listen(fd, 4096) < 0) die("listen");
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[INET6_ADDRSTRLEN] = "?";
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    inet_ntop(ss.ss_family, ss.ss_family == AF_INET6 ? (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                                     : (void *)&((struct sockaddr_in *)&ss)->sin_addr, h, sizeof h);
    fprintf(stderr, "listening on %s:%d\n", h, port);
    signal(SIGPIPE, SIG_IGN); /* a write to a reset connection is an error, not a signal */
    return fd;
}
