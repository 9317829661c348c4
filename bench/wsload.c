/*
 * bench/wsload.c: the WebSocket load generator of `make bench`'s wsecho
 * workload.
 *
 * Opens CONNS WebSocket connections to 127.0.0.1:PORT (nothing else: the host
 * is fixed), then on every connection at once: send one masked text message of
 * SIZE bytes, wait for its echo, compare it byte for byte with what was sent,
 * send the next one (ping-pong per connection, all connections concurrently),
 * for SECONDS seconds or until MAX messages, whichever comes first. Echoes
 * still in flight at the end are awaited (2 s at most) and checked but not
 * counted; then every connection is closed with a close frame (1000).
 *
 * One thread, epoll, level-triggered; frames are built by hand (RFC 6455: FIN +
 * text, a mask key per frame). Every message's payload differs (connection,
 * sequence number and filler), so an echo from another message or another
 * connection is a mismatch too.
 *
 * Prints one line on stdout:
 *   wsload messages N seconds S rate R p50_ms A p99_ms B mismatches M errors E
 * conns C N = echoes received and matched inside the measured window (it starts
 * once every handshake is done), R = N / S. Exit status: 0 when every
 * connection did its handshake, nothing failed and no echo mismatched; 1
 * otherwise (the reason on stderr); 2 on bad arguments. A hard limit (alarm:
 * SECONDS + 30 s) ends it whatever the server does.
 *
 * Usage: wsload -p PORT [-c CONNS] [-d SECONDS] [-n MAX] [-s SIZE] [-u PATH]
 * Built by bench/run.sh with `cc -O2 -o TMP/wsload bench/wsload.c`; buffers are
 * sized from SIZE, so a conversation is a few hundred bytes of memory per
 * connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* RFC 6455's own example key and its accept value, so no SHA-1 is needed here
 */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define MAX_SIZE 65535
#define HIST_US                                                                \
  200000 /* latency histogram: 1 us buckets up to 200 ms, then one overflow */

enum state { HANDSHAKE, OPEN, CLOSING, DONE };

struct conn {
  int fd; /* owned; -1 once closed */
  enum state st;
  int waiting;        /* a message is out, its echo not back yet */
  int counted;        /* this message was sent inside the measured window */
  uint32_t seq;       /* the message's sequence number on this connection */
  double sent_at;     /* seconds, monotonic */
  unsigned char *msg; /* the payload in flight (SIZE bytes) */
  unsigned char *in;  /* IN_CAP bytes: what the server sent, not parsed yet */
  size_t in_len;
  unsigned char *out; /* OUT_CAP bytes: frames queued, not written yet */
  size_t out_len, out_off;
  int out_armed; /* EPOLLOUT is on */
};

static int size = 64, nconns = 1000, seconds = 10, port = -1;
static long long max_msgs = 100000000LL;
static const char *path = "/ws";
static struct conn *conns;
static int epfd = -1;
static size_t in_cap, out_cap;
static long long done_msgs, mismatches, errors, sent_msgs;
static unsigned int hist[HIST_US + 1];
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static int measuring, stopping;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)rng;
}

static void fail_conn(struct conn *c, const char *why) {
  if (c->fd < 0)
    return;
  fprintf(stderr, "wsload: connection %d: %s\n", (int)(c - conns), why);
  errors++;
  close(c->fd);
  c->fd = -1;
  c->st = DONE;
}

static void want_out(struct conn *c, int on) {
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                           .data.ptr = c};
  if (c->out_armed == on)
    return;
  c->out_armed = on;
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
    fail_conn(c, "epoll_ctl");
}

/* writes what is queued; arms EPOLLOUT only while something is left */
static void flush_out(struct conn *c) {
  while (c->fd >= 0 && c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        want_out(c, 1);
        return;
      }
      fail_conn(c, strerror(errno));
      return;
    }
    c->out_off += (size_t)n;
  }
  if (c->fd >= 0 && c->out_off == c->out_len) {
    c->out_len = c->out_off = 0;
    want_out(c, 0);
  }
}

/* queues one masked client frame */
static void queue_frame(struct conn *c, int opcode, const unsigned char *p,
                        size_t len) {
  unsigned char *o = c->out + c->out_len;
  uint32_t m = next_rand();
  unsigned char mask[4] = {m >> 24, m >> 16, m >> 8, m};
  size_t h = 0, i;

  if (c->out_len + len + 8 > out_cap)
    return fail_conn(c, "output buffer full (the server does not read)");

  o[h++] = 0x80 | (unsigned char)opcode;
  if (len < 126) {
    o[h++] = 0x80 | (unsigned char)len;
  } else {
    o[h++] = 0x80 | 126;
    o[h++] = (unsigned char)(len >> 8);
    o[h++] = (unsigned char)len;
  }
  memcpy(o + h, mask, 4);
  h += 4;
  for (i = 0; i < len; i++)
    o[h + i] = p[i] ^ mask[i & 3];
  c->out_len += h + len;
}

static void send_next(struct conn *c) {
  int i, k;
  unsigned char *m = c->msg;

  if (stopping || sent_msgs >= max_msgs)
    return;
  c->seq++;
  /* printable ASCII (valid UTF-8), different for every connection and message
   */
  k = snprintf((char *)m, (size_t)size, "c%d s%u ", (int)(c - conns), c->seq);
  if (k > size)
    k = size;
  for (i = k > 0 ? k : 0; i < size; i++)
    m[i] = (unsigned char)('a' +
                           (c->seq * 7u + (unsigned)(c - conns) + (unsigned)i) %
                               26u);
  queue_frame(c, 0x1, m, (size_t)size);
  c->waiting = 1;
  c->counted = measuring;
  c->sent_at = now_s();
  sent_msgs++;
  flush_out(c);
}

static void record_latency(double secs) {
  long us = (long)(secs * 1e6);
  if (us < 0)
    us = 0;
  hist[us > HIST_US ? HIST_US : us]++;
}

/* the smallest latency (ms) at or below which frac of the recorded echoes lie
 */
static double percentile_ms(double frac) {
  unsigned long long total = 0, acc = 0, want;
  long i;

  for (i = 0; i <= HIST_US; i++)
    total += hist[i];
  if (total == 0)
    return -1;
  want = (unsigned long long)(frac * (double)total + 0.5);
  if (want == 0)
    want = 1;
  for (i = 0; i <= HIST_US; i++) {
    acc += hist[i];
    if (acc >= want)
      return i / 1000.0;
  }
  return HIST_US / 1000.0;
}

static int handle_handshake(struct conn *c) {
  unsigned char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
  size_t head;

  if (!end)
    return c->in_len < 4096 ? 0
                            : (fail_conn(c, "handshake answer too long"), -1);
  head = (size_t)(end - c->in) + 4;
  c->in[head - 1] = 0; /* the headers as a string (the final \n dropped) */
  if (strncmp((char *)c->in, "HTTP/1.1 101", 12) != 0 ||
      !strcasestr((char *)c->in, "\nSec-WebSocket-Accept: " WS_ACCEPT "\r")) {
    fprintf(stderr, "wsload: handshake answer: %.200s\n", (char *)c->in);
    fail_conn(c, "bad handshake answer");
    return -1;
  }
  memmove(c->in, c->in + head, c->in_len - head);
  c->in_len -= head;
  c->st = OPEN;
  return 1;
}

/* parses the server's frames in c->in; returns -1 once c has failed */
static int handle_frames(struct conn *c) {
  size_t off = 0;

  while (c->fd >= 0 && c->in_len - off >= 2) {
    unsigned char *f = c->in + off;
    int fin = f[0] & 0x80, op = f[0] & 0x0f;
    size_t len = f[1] & 0x7f, h = 2;

    if (f[1] & 0x80)
      return fail_conn(c, "server frame masked"), -1;
    if (len == 126) {
      if (c->in_len - off < 4)
        break;
      len = ((size_t)f[2] << 8) | f[3];
      h = 4;
    } else if (len == 127) {
      return fail_conn(c, "server frame over 64 KiB"), -1;
    }
    if (c->in_len - off < h + len)
      break;
    off += h + len;
    if (op == 0x9) { /* ping: answer it */
      queue_frame(c, 0xA, f + h, len);
      flush_out(c);
      continue;
    }
    if (op == 0xA)
      continue;
    if (op == 0x8) {
      if (c->st == CLOSING) {
        close(c->fd);
        c->fd = -1;
        c->st = DONE;
        return -1;
      }
      return fail_conn(c, "server closed the connection"), -1;
    }
    if (!fin || op != 0x1)
      return fail_conn(c, "unexpected frame (not one unfragmented text frame)"),
             -1;
    if (!c->waiting) {
      mismatches++;
      return fail_conn(c, "a message nobody sent"), -1;
    }
    c->waiting = 0;
    if (len != (size_t)size || memcmp(f + h, c->msg, len) != 0) {
      mismatches++;
      return fail_conn(c, "echo differs from the message sent"), -1;
    }
    if (c->counted && measuring) {
      done_msgs++;
      record_latency(now_s() - c->sent_at);
    }
    send_next(c);
  }
  if (c->fd >= 0 && off > 0) {
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
  }
  return c->fd >= 0 ? 0 : -1;
}

static void on_readable(struct conn *c) {
  for (;;) {
    ssize_t n;
    if (c->fd < 0)
      return;
    if (c->in_len == in_cap)
      return fail_conn(c, "input buffer full");
    n = read(c->fd, c->in + c->in_len, in_cap - c->in_len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN)
        fail_conn(c, strerror(errno));
      return;
    }
    if (n == 0) {
      if (c->st == CLOSING) {
        close(c->fd);
        c->fd = -1;
        c->st = DONE;
      } else {
        fail_conn(c, "connection closed by the server");
      }
      return;
    }
    c->in_len += (size_t)n;
    if (c->st == HANDSHAKE && handle_handshake(c) <= 0)
      return;
    if (handle_frames(c) < 0)
      return;
    if ((size_t)n < 4096)
      return; /* drained (level-triggered: anything left comes back) */
  }
}

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int open_conn(struct conn *c) {
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  int one = 1, k;

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0)
    return -1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* a blocking connect on loopback: the server's backlog answers at once */
  if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    fail_conn(c, strerror(errno));
    return -1;
  }
  if (set_nonblock(c->fd) < 0 ||
      epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
    fail_conn(c, "setup");
    return -1;
  }
  k = snprintf((char *)c->out, out_cap,
               "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n",
               path, port);
  c->out_len = (size_t)k;
  c->out_off = 0;
  c->st = HANDSHAKE;
  flush_out(c);
  return c->fd >= 0 ? 0 : -1;
}

static void run_loop(double until, int (*finished)(void)) {
  struct epoll_event evs[256];
  while (!finished()) {
    double left = until - now_s();
    int i, n;
    if (left <= 0)
      return;
    n = epoll_wait(epfd, evs, 256, left > 0.05 ? 50 : (int)(left * 1000) + 1);
    if (n < 0 && errno != EINTR) {
      perror("wsload: epoll_wait");
      errors++;
      return;
    }
    for (i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
        flush_out(c);
      if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        on_readable(c);
    }
  }
}

static int all_open(void) {
  int i;
  for (i = 0; i < nconns; i++)
    if (conns[i].st == HANDSHAKE)
      return 0;
  return 1;
}

static int none_waiting(void) {
  int i;
  for (i = 0; i < nconns; i++)
    if (conns[i].fd >= 0 && conns[i].waiting)
      return 0;
  return 1;
}

/* MAX messages sent and answered: the count bound ends the window before the
 * clock */
static int budget_spent(void) {
  return sent_msgs >= max_msgs && none_waiting();
}

static int all_done(void) {
  int i;
  for (i = 0; i < nconns; i++)
    if (conns[i].fd >= 0)
      return 0;
  return 1;
}

static void usage(void) {
  fprintf(stderr, "usage: wsload -p PORT [-c CONNS] [-d SECONDS] [-n MAX] [-s "
                  "SIZE] [-u PATH]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int opt, i, open_ok = 0;
  double t0, t1, elapsed;

  while ((opt = getopt(argc, argv, "p:c:d:n:s:u:")) != -1) {
    switch (opt) {
    case 'p':
      port = atoi(optarg);
      break;
    case 'c':
      nconns = atoi(optarg);
      break;
    case 'd':
      seconds = atoi(optarg);
      break;
    case 'n':
      max_msgs = atoll(optarg);
      break;
    case 's':
      size = atoi(optarg);
      break;
    case 'u':
      path = optarg;
      break;
    default:
      usage();
    }
  }
  if (port < 1 || port > 65535 || nconns < 1 || nconns > 20000 || seconds < 1 ||
      seconds > 3600 || max_msgs < 1 || size < 1 || size > MAX_SIZE ||
      path[0] != '/' || strlen(path) > 200)
    usage();
  signal(SIGPIPE, SIG_IGN);
  /* room for a few frames of SIZE (an echo, a ping) and the 101 answer's
   * headers */
  in_cap = 4 * ((size_t)size + 14) + 8192;
  out_cap = 4 * ((size_t)size + 14) + 512;
  alarm((unsigned)seconds + 30); /* the hard limit, whatever the server does */
  conns = calloc((size_t)nconns, sizeof *conns);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!conns || epfd < 0) {
    perror("wsload: setup");
    return 1;
  }
  for (i = 0; i < nconns; i++) {
    conns[i].fd = -1;
    conns[i].msg = malloc((size_t)size);
    conns[i].in = malloc(in_cap);
    conns[i].out = malloc(out_cap);
    if (!conns[i].msg || !conns[i].in || !conns[i].out) {
      perror("wsload: malloc");
      return 1;
    }
    if (open_conn(&conns[i]) < 0)
      break;
  }
  run_loop(now_s() + 10, all_open);
  for (i = 0; i < nconns; i++) {
    if (conns[i].st == OPEN)
      open_ok++;
    else if (conns[i].fd >= 0)
      fail_conn(&conns[i], "no handshake answer within 10 s");
  }
  if (open_ok < nconns) {
    fprintf(stderr, "wsload: %d of %d connections opened\n", open_ok, nconns);
    errors++;
  }

  /* the measured window */
  measuring = 1;
  t0 = now_s();
  for (i = 0; i < nconns; i++)
    if (conns[i].fd >= 0)
      send_next(&conns[i]);
  run_loop(t0 + seconds, budget_spent);
  t1 = now_s();
  measuring = 0;
  stopping = 1;
  elapsed = t1 - t0;

  /* the echoes in flight: checked, not counted; then a close handshake */
  run_loop(now_s() + 2, none_waiting);
  for (i = 0; i < nconns; i++) {
    struct conn *c = &conns[i];
    if (c->fd < 0)
      continue;
    if (c->waiting)
      fail_conn(c, "echo not back within 2 s after the end");
    else {
      static const unsigned char bye[2] = {0x03, 0xe8}; /* 1000 */
      c->st = CLOSING;
      queue_frame(c, 0x8, bye, 2);
      flush_out(c);
    }
  }
  run_loop(now_s() + 2, all_done);
  for (i = 0; i < nconns; i++)
    if (conns[i].fd >= 0) { /* no close answer: not an error of the echo */
      close(conns[i].fd);
      conns[i].fd = -1;
    }

  printf("wsload messages %lld seconds %.3f rate %.1f p50_ms %.3f p99_ms %.3f "
         "mismatches %lld "
         "errors %lld conns %d\n",
         done_msgs, elapsed, elapsed > 0 ? done_msgs / elapsed : 0.0,
         percentile_ms(0.50), percentile_ms(0.99), mismatches, errors, open_ok);
  for (i = 0; i < nconns; i++) {
    free(conns[i].msg);
    free(conns[i].in);
    free(conns[i].out);
  }
  free(conns);
  close(epfd);
  if (mismatches > 0)
    fprintf(stderr, "wsload: %lld echo(es) did not match\n", mismatches);
  return mismatches == 0 && errors == 0 && done_msgs > 0 ? 0 : 1;
}
