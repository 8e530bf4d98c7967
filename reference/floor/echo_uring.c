/* The floor, io_uring: a minimal echo server for `make bench` (issue 18).
 *
 * One thread, one ring (liburing; SINGLE_ISSUER | DEFER_TASKRUN where the
 * kernel has them, holdfast's flags). A multishot accept (re-armed when it
 * stops; single-shot accepts where the kernel has no multishot). Each
 * connection owns a 64 KiB buffer and has exactly one operation in flight:
 * recv into the buffer, then send it back, sending the rest after a partial
 * send before the next recv. Like holdfast and tokio-echo it sets
 * TCP_NODELAY. Nothing else: no timeouts, no metrics, no limits.
 *
 *   cc -O2 -Wall -Wextra -o echo_uring echo_uring.c -luring
 *   ./echo_uring --listen 127.0.0.1:7000   # prints "listening on ..." on stderr
 *   ./echo_uring --check                   # can this kernel run it? exit 0 or the reason, exit 1
 */
#include "common.h"
#include <liburing.h>

enum { ACCEPT, RECV, SEND };
#define BUF (64 * 1024)

struct conn { char *buf; uint32_t off, len; };
static struct conn *conns;
static size_t nconns;
static struct io_uring ring;
static int lfd, multishot = 1;

static struct io_uring_sqe *sqe(int fd, int op) {
    struct io_uring_sqe *s;
    while (!(s = io_uring_get_sqe(&ring))) io_uring_submit(&ring); /* SQ full: flush it */
    io_uring_sqe_set_data64(s, (uint64_t)fd << 2 | op);
    return s;
}

static void arm_accept(void) {
    if (multishot) io_uring_prep_multishot_accept(sqe(lfd, ACCEPT), lfd, NULL, NULL, 0);
    else io_uring_prep_accept(sqe(lfd, ACCEPT), lfd, NULL, NULL, 0);
}

static void arm_recv(int fd) { io_uring_prep_recv(sqe(fd, RECV), fd, conns[fd].buf, BUF, 0); }

static void arm_send(int fd) {
    struct conn *c = &conns[fd];
    io_uring_prep_send(sqe(fd, SEND), fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
}

static void drop(int fd) {
    free(conns[fd].buf);
    conns[fd] = (struct conn){ 0 };
    close(fd); /* nothing of it is in flight */
}

static void complete(struct io_uring_cqe *cqe) {
    int fd = (int)(cqe->user_data >> 2), res = cqe->res;
    struct conn *c = fd == lfd ? NULL : &conns[fd];
    switch (cqe->user_data & 3) {
    case ACCEPT:
        if (res == -EINVAL && multishot) multishot = 0; /* a kernel before 5.19 */
        if (res >= 0) {
            nodelay(res);
            grow((void **)&conns, &nconns, sizeof *conns, (size_t)res);
            if (!(conns[res].buf = malloc(BUF))) die("malloc");
            arm_recv(res);
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept();
        break;
    case RECV:
        if (res == -EINTR) { arm_recv(fd); break; }
        if (res <= 0) { drop(fd); break; }
        c->off = 0;
        c->len = (uint32_t)res;
        arm_send(fd);
        break;
    case SEND:
        if (res == -EINTR) { arm_send(fd); break; }
        if (res < 0) { drop(fd); break; }
        c->off += (uint32_t)res;
        if (c->off < c->len) arm_send(fd); /* partial: the rest first */
        else arm_recv(fd);
        break;
    }
}

static void init_ring(void) {
    struct io_uring_params p = { .flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL |
                                          IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                                 .cq_entries = 16384 };
    int err = io_uring_queue_init_params(4096, &ring, &p);
    if (err == -EINVAL) { /* a kernel before 6.1: no DEFER_TASKRUN */
        p = (struct io_uring_params){ .flags = IORING_SETUP_CQSIZE, .cq_entries = 16384 };
        err = io_uring_queue_init_params(4096, &ring, &p);
    }
    if (err < 0) { fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-err)); exit(1); }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--check") == 0) {
        init_ring();
        printf("io_uring ok\n");
        return 0;
    }
    lfd = listen_on(argc, argv, 0);
    init_ring();
    arm_accept();
    for (;;) {
        int err = io_uring_submit_and_wait(&ring, 1);
        if (err < 0 && err != -EINTR) { fprintf(stderr, "io_uring_submit_and_wait: %s\n", strerror(-err)); exit(1); }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            complete(cqe);
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
    }
}
