/* udp_echo: the tutorials' UDP echo server and client, as green tasks on
 * one loop. The server waits for datagrams with cf_green_wait_fd and sends
 * each back to its sender; every client task sends numbered datagrams from
 * a socket of its own and waits for each echo with a timeout, sending
 * again if one is lost (UDP promises nothing).
 *
 *   udp_echo [-c CLIENTS] [-m MESSAGES]   (defaults 100, 10): exit 0 when
 *   every echo came back intact
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cfutures.h>

static struct sockaddr_in server_addr;
static int messages = 10;
static long echoed, resent;

static int server(void *arg, void **out) {
  int fd = (int)(intptr_t)arg;
  char buf[1500];
  *out = NULL;
  for (;;) {
    int rc = cf_green_wait_fd(fd, CF_GREEN_READ, CF_FOREVER);
    if (rc != 0)
      return rc; /* CF_ECANCELLED: the loop is closing */
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    ssize_t n;
    while ((n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from,
                         &flen)) >= 0) {
      sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
      flen = sizeof from;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return cf_fail(CF_ESYS, "recvfrom: %s", strerror(errno));
  }
}

static int client(void *arg, void **out) {
  int id = (int)(intptr_t)arg;
  *out = NULL;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return cf_fail(CF_ESYS, "socket: %s", strerror(errno));
  int rc = 0;
  for (int i = 0; rc == 0 && i < messages; i++) {
    char msg[64], back[64];
    int len = snprintf(msg, sizeof msg, "client %d message %d", id, i);
    for (int attempt = 0;; attempt++) {
      if (attempt == 5) {
        rc = cf_fail(CF_ETIMEDOUT, "no echo of \"%s\" after 5 tries", msg);
        break;
      }
      if (attempt > 0)
        resent++;
      sendto(fd, msg, (size_t)len, 0, (struct sockaddr *)&server_addr,
             sizeof server_addr);
      rc = cf_green_wait_fd(fd, CF_GREEN_READ, 0.5);
      if (rc == CF_ETIMEDOUT) {
        rc = 0;
        continue; /* lost: send again */
      }
      if (rc != 0)
        break;
      ssize_t n = recv(fd, back, sizeof back, 0);
      if (n == len && memcmp(back, msg, (size_t)len) == 0) {
        echoed++; /* one loop thread: no race */
        break;
      }
      if (n < 0 && errno != EAGAIN) {
        rc = cf_fail(CF_ESYS, "recv: %s", strerror(errno));
        break;
      }
      /* an echo of an earlier, resent message: wait again */
    }
  }
  close(fd);
  return rc;
}

int main(int argc, char **argv) {
  int clients = 100;
  for (int i = 1; i < argc; i++) {
    if (i + 1 < argc && strcmp(argv[i], "-c") == 0)
      clients = atoi(argv[++i]);
    else if (i + 1 < argc && strcmp(argv[i], "-m") == 0)
      messages = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: udp_echo [-c CLIENTS] [-m MESSAGES]\n");
      return 2;
    }
  }
  if (clients < 1 || clients > 10000 || messages < 0) {
    fprintf(stderr, "udp_echo: clients 1..10000, messages >= 0\n");
    return 2;
  }
  int sfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  server_addr.sin_family = AF_INET;
  server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof server_addr;
  if (sfd < 0 ||
      bind(sfd, (struct sockaddr *)&server_addr, sizeof server_addr) != 0 ||
      getsockname(sfd, (struct sockaddr *)&server_addr, &alen) != 0) {
    perror("udp_echo: bind");
    return 1;
  }
  cf_loop *l;
  if (cf_loop_new(NULL, &l) != 0) {
    fprintf(stderr, "udp_echo: %s\n", cf_last_error());
    return 1;
  }
  cf_future *srv, **cs = calloc((size_t)clients, sizeof *cs);
  cf_loop_spawn(l, server, (void *)(intptr_t)sfd, &srv);
  for (int i = 0; i < clients; i++)
    cf_loop_spawn(l, client, (void *)(intptr_t)i, &cs[i]);
  int failed = 0;
  for (int i = 0; i < clients; i++) {
    cf_loop_run_until_complete(l, cs[i], 60);
    if (cf_future_result(cs[i], 0, NULL) != 0) {
      cf_error e = {0};
      cf_future_exception(cs[i], 0, &e);
      fprintf(stderr, "udp_echo: client %d: %s\n", i,
              e.message ? e.message : cf_last_error());
      failed++;
    }
    cf_future_unref(cs[i]);
  }
  cf_green_cancel(srv);
  cf_loop_free(l);
  cf_future_unref(srv);
  free(cs);
  close(sfd);
  printf("udp_echo: %d clients x %d datagrams: %ld echoed, %ld sent again, "
         "%d clients failed\n",
         clients, messages, echoed, resent, failed);
  return failed == 0 && echoed == (long)clients * messages ? 0 : 1;
}
