/* echo_server: a TCP echo server on 127.0.0.1 that handles each connection
 * on the thread pool, with length-prefixed framing (4-byte big-endian
 * length, then the payload: messages never glued or split), and a client
 * that loads it with many connections and checks every reply byte for
 * byte. Bounded in count and time.
 *
 *   echo_server [connections] [messages]      (default 40 x 100)       */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cfutures.h>

#define MAX_MSG (64 * 1024)

static int io_full(int fd, void *buf, size_t n, bool out) {
  char *p = buf;
  while (n > 0) {
    struct pollfd pfd = {.fd = fd, .events = out ? POLLOUT : POLLIN};
    if (poll(&pfd, 1, 10000) <= 0)
      return -1; /* 10 s without progress: give up */
    ssize_t r = out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
    if (r <= 0)
      return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int recv_frame(int fd, char *buf, uint32_t *len) {
  uint32_t be;
  if (io_full(fd, &be, 4, false))
    return -1;
  *len = ntohl(be);
  return *len > MAX_MSG ? -1 : io_full(fd, buf, *len, false);
}

static int send_frame(int fd, const char *buf, uint32_t len) {
  uint32_t be = htonl(len);
  return io_full(fd, &be, 4, true) || io_full(fd, (void *)buf, len, true) ? -1
                                                                          : 0;
}

/* ---- server ---------------------------------------------------------------
 */

static int serve(void *arg, void **out) {
  int fd = (int)(intptr_t)arg;
  char *buf = malloc(MAX_MSG);
  uint32_t len;
  long n = 0;
  while (buf && recv_frame(fd, buf, &len) == 0 && send_frame(fd, buf, len) == 0)
    n++;
  free(buf);
  close(fd);
  *out = (void *)(intptr_t)n;
  return 0;
}

typedef struct server {
  int fd;
  cf_executor *pool;
  atomic_bool stop;
  pthread_t th;
} server;

static void *accept_loop(void *arg) {
  server *s = arg;
  while (!atomic_load(&s->stop)) {
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0)
      continue;
    int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
    cf_future *f;
    if (c >= 0 && cf_submit(s->pool, serve, (void *)(intptr_t)c, &f) == 0)
      cf_future_unref(f);
    else if (c >= 0)
      close(c);
  }
  return NULL;
}

/* ---- client ---------------------------------------------------------------
 */

static int port;
static int messages;
static atomic_long bad, echoed;

static void *client(void *arg) {
  uint64_t seed = (uint64_t)(uintptr_t)arg * 2654435761u + 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  char *out = malloc(MAX_MSG), *in = malloc(MAX_MSG);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) || !out || !in) {
    atomic_fetch_add(&bad, 1);
    goto done;
  }
  for (int m = 0; m < messages; m++) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    uint32_t len = (uint32_t)(seed % (m % 10 == 0 ? MAX_MSG : 200));
    for (uint32_t i = 0; i < len; i++)
      out[i] = (char)(seed >> (i % 56));
    uint32_t got;
    if (send_frame(fd, out, len) || recv_frame(fd, in, &got) || got != len ||
        memcmp(in, out, len) != 0) {
      atomic_fetch_add(&bad, 1);
      break;
    }
    atomic_fetch_add(&echoed, 1);
  }
done:
  if (fd >= 0)
    close(fd);
  free(out);
  free(in);
  return NULL;
}

int main(int argc, char **argv) {
  int conns = argc > 1 ? atoi(argv[1]) : 40;
  messages = argc > 2 ? atoi(argv[2]) : 100;
  if (conns < 1 || conns > 200 || messages < 1 || messages > 10000)
    return 2;
  server s = {0};
  s.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  /* as many workers as connections: each serves one connection to its end */
  cf_thread_pool_opts o = {.max_workers = (size_t)conns,
                           .thread_name_prefix = "echo"};
  if (bind(s.fd, (struct sockaddr *)&a, sizeof a) || listen(s.fd, 256) ||
      getsockname(s.fd, (struct sockaddr *)&a, &alen) ||
      cf_thread_pool_new(&o, &s.pool))
    return 1;
  port = ntohs(a.sin_port);
  pthread_create(&s.th, NULL, accept_loop, &s);
  pthread_t *th = malloc((size_t)conns * sizeof *th);
  for (intptr_t i = 0; i < conns; i++)
    pthread_create(&th[i], NULL, client, (void *)i);
  for (int i = 0; i < conns; i++)
    pthread_join(th[i], NULL);
  atomic_store(&s.stop, true);
  pthread_join(s.th, NULL);
  close(s.fd);
  cf_executor_free(s.pool);
  free(th);
  printf("%d connections, %ld messages echoed intact, %ld failures\n", conns,
         atomic_load(&echoed), atomic_load(&bad));
  return atomic_load(&bad) == 0 &&
                 atomic_load(&echoed) == (long)conns * messages
             ? 0
             : 1;
}
