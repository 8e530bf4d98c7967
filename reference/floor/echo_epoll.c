/* The floor, epoll: a minimal echo server for `make bench` (issue 18).
 *
 * One thread, one level-triggered epoll loop, non-blocking sockets, one
 * shared 64 KiB read buffer. Each readable connection gets one read(2), then
 * one write(2) of what was read. Bytes the socket did not take are copied to
 * a per-connection pending buffer; the connection then waits for EPOLLOUT
 * only (no reads) until they are all written. Like holdfast and tokio-echo it
 * sets TCP_NODELAY. Nothing else: no timeouts, no metrics, no limits.
 *
 *   cc -O2 -Wall -Wextra -o echo_epoll echo_epoll.c
 *   ./echo_epoll --listen 127.0.0.1:7000   # prints "listening on ..." on stderr
 */
#include "common.h"
#include <sys/epoll.h>

struct conn { char *pend; size_t off, len; };
static struct conn *conns;
static size_t nconns;
static char buf[64 * 1024];

static void watch(int ep, int op, int fd, uint32_t events) {
    struct epoll_event ev = { .events = events, .data.fd = fd };
    if (epoll_ctl(ep, op, fd, &ev) < 0) die("epoll_ctl");
}

static void drop(int fd) {
    free(conns[fd].pend);
    conns[fd] = (struct conn){ 0 };
    close(fd); /* also leaves the epoll set */
}

/* Writes [data, data+len); keeps what the socket did not take. 0: close. */
static int flush(int ep, int fd, const char *data, size_t len, int pending) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) return 0;
        if (n < 0) break;
        data += n;
        len -= (size_t)n;
    }
    struct conn *c = &conns[fd];
    if (len == 0) {
        if (pending) { c->off = c->len = 0; watch(ep, EPOLL_CTL_MOD, fd, EPOLLIN); }
        return 1;
    }
    if (!pending) { /* first partial write: keep the rest, stop reading */
        char *p = realloc(c->pend, len);
        if (!p) die("realloc");
        memcpy(p, data, len);
        c->pend = p;
        c->off = 0;
        c->len = len;
        watch(ep, EPOLL_CTL_MOD, fd, EPOLLOUT);
    } else {
        c->off = c->len - len;
    }
    return 1;
}

int main(int argc, char **argv) {
    int lfd = listen_on(argc, argv, SOCK_NONBLOCK);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    watch(ep, EPOLL_CTL_ADD, lfd, EPOLLIN);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    nodelay(cfd);
                    grow((void **)&conns, &nconns, sizeof *conns, (size_t)cfd);
                    watch(ep, EPOLL_CTL_ADD, cfd, EPOLLIN);
                }
                continue;
            }
            struct conn *c = &conns[fd];
            if (c->len > 0) { /* EPOLLOUT (or an error) while bytes wait */
                if (!flush(ep, fd, c->pend + c->off, c->len - c->off, 1)) drop(fd);
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0 || !flush(ep, fd, buf, (size_t)r, 0)) drop(fd);
        }
    }
}
