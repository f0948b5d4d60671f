/* The process pool's wire: framed messages between the manager and a
 * worker, control messages with the fork server, and the one place that
 * passes descriptors (SCM_RIGHTS). See process_pool_internal.h. */
#include "executor/process_pool_internal.h"

/* ---- framing ------------------------------------------------------------- */

/* Sends iov[0..n) whole, blocking (a worker): one system call when the
 * socket takes it all, as it does for a header and a small payload. 0, or
 * -1 on an error. iov is consumed. */
static int writev_full(int fd, struct iovec *iov, size_t n) {
  while (n > 0) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = n};
    ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    size_t done = (size_t)w;
    for (; n > 0 && done >= iov->iov_len; n--, iov++)
      done -= iov->iov_len;
    if (n > 0) { /* iov[0] went in part: its rest next */
      iov->iov_base = (char *)iov->iov_base + done;
      iov->iov_len -= done;
    }
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
  return writev_full(fd, &iov, 1);
}

/* Inputs from this size on are written to their memfd by the submitting
 * thread, straight from the caller's buffer: no intermediate copy, and the
 * manager does not spend its time copying. Each such pending task holds a
 * descriptor, so at most EAGER_MAX of them exist per process; beyond that
 * (or if memfd_create fails) the input is copied and the manager writes
 * the memfd when it sends it. */
#define EAGER_PAYLOAD (1024 * 1024)
#define EAGER_MAX     64
static atomic_size_t eager_memfds; /* relaxed: a cap, publishes nothing */

/* Writes data[0..len) to fd; 0 or -1. */
static int write_all_fd(int fd, const void *data, size_t len) {
  const char *src = data;
  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, src + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    off += (size_t)w;
  }
  return 0;
}

/* Big inputs go through memfds that are kept, mapped, after their task
 * (WARM_MAX of them, WARM_BYTES in all): the next big input is copied
 * into pages that exist already, and a worker that kept its mapping of
 * the same memfd (see worker_maps) reads it without a page fault. Fresh
 * pages cost a fault each, which dominates a 64 MiB round trip (and far
 * more so in a VM). Results come back the same way: the manager lends a
 * worker an idle one as a spare (cf__pp_warm_spare) for its next big
 * result, which arrives in it; the future that holds the result keeps it
 * busy until it is freed (cf__pp_warm_give). `busy` ones are in a task's,
 * a worker's or a result's hands. Known by inode: other processes and
 * other descriptors refer to the same memfd. */
#define WARM_MAX   8
#define WARM_BYTES (512u << 20)
typedef struct warm_buf {
  int fd;
  char *map;
  size_t cap;
  ino_t ino;
  bool busy;
} warm_buf;
static pthread_mutex_t warm_mu = PTHREAD_MUTEX_INITIALIZER;
static warm_buf warm[WARM_MAX];

/* A memfd holding a copy of data[0..len), or -1 (then copy it instead). */
int cf__pp_eager_memfd(const void *data, size_t len) {
  if (len < EAGER_PAYLOAD)
    return -1;
  if (atomic_fetch_add_explicit(&eager_memfds, 1, memory_order_relaxed) >=
      EAGER_MAX) {
    atomic_fetch_sub_explicit(&eager_memfds, 1, memory_order_relaxed);
    return -1;
  }
  /* the smallest idle warm buffer that holds it */
  pthread_mutex_lock(&warm_mu);
  warm_buf *best = NULL;
  for (size_t k = 0; k < WARM_MAX; k++)
    if (warm[k].map && !warm[k].busy && warm[k].cap >= len &&
        (!best || warm[k].cap < best->cap))
      best = &warm[k];
  if (best)
    best->busy = true;
  pthread_mutex_unlock(&warm_mu);
  if (best) {
    memcpy(best->map, data, len);
    return best->fd;
  }
  int fd = memfd_create("cfutures-payload", MFD_CLOEXEC);
  if (fd >= 0 && write_all_fd(fd, data, len) == 0)
    return fd;
  if (fd >= 0)
    close(fd);
  atomic_fetch_sub_explicit(&eager_memfds, 1, memory_order_relaxed);
  return -1;
}

/* Frees the warm buffers that no task holds (the last pool is gone). */
void cf__pp_warm_drop(void) {
  pthread_mutex_lock(&warm_mu);
  for (size_t k = 0; k < WARM_MAX; k++)
    if (warm[k].map && !warm[k].busy) {
      munmap(warm[k].map, warm[k].cap);
      close(warm[k].fd);
      warm[k] = (warm_buf){0};
    }
  pthread_mutex_unlock(&warm_mu);
}

/* warm_mu held: keeps fd (owned) as a warm buffer if there is room,
 * else closes it. */
static void warm_adopt(int fd) {
  size_t total = 0, slot = WARM_MAX;
  for (size_t k = 0; k < WARM_MAX; k++) {
    total += warm[k].cap;
    if (!warm[k].map && slot == WARM_MAX)
      slot = k;
  }
  struct stat st;
  void *m = MAP_FAILED;
  if (slot < WARM_MAX && fstat(fd, &st) == 0 && st.st_size > 0 &&
      total + (size_t)st.st_size <= WARM_BYTES)
    m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
             0);
  if (m != MAP_FAILED)
    warm[slot] = (warm_buf){
        .fd = fd, .map = m, .cap = (size_t)st.st_size, .ino = st.st_ino};
  else
    close(fd);
}

int cf__pp_warm_spare(size_t min_cap, ino_t *ino) {
  pthread_mutex_lock(&warm_mu);
  warm_buf *best = NULL;
  for (size_t k = 0; k < WARM_MAX; k++)
    if (warm[k].map && !warm[k].busy && warm[k].cap >= min_cap &&
        (!best || warm[k].cap < best->cap))
      best = &warm[k];
  int fd = -1;
  if (best) {
    best->busy = true;
    fd = best->fd;
    *ino = best->ino;
  }
  pthread_mutex_unlock(&warm_mu);
  return fd;
}

void cf__pp_warm_release(ino_t ino) {
  pthread_mutex_lock(&warm_mu);
  for (size_t k = 0; k < WARM_MAX; k++)
    if (warm[k].map && warm[k].ino == ino)
      warm[k].busy = false;
  pthread_mutex_unlock(&warm_mu);
}

void cf__pp_warm_give(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return;
  }
  pthread_mutex_lock(&warm_mu);
  bool known = false;
  for (size_t k = 0; k < WARM_MAX; k++)
    if (warm[k].map && warm[k].ino == st.st_ino) {
      warm[k].busy = false; /* a lent one coming back */
      known = true;
    }
  if (known)
    close(fd);
  else
    warm_adopt(fd);
  pthread_mutex_unlock(&warm_mu);
}

/* Its task is done with fd: kept warm if there is room, else closed. */
void cf__pp_eager_memfd_close(int fd) {
  atomic_fetch_sub_explicit(&eager_memfds, 1, memory_order_relaxed);
  pthread_mutex_lock(&warm_mu);
  for (size_t k = 0; k < WARM_MAX; k++)
    if (warm[k].map && warm[k].fd == fd) { /* a warm one coming back */
      warm[k].busy = false;
      pthread_mutex_unlock(&warm_mu);
      return;
    }
  warm_adopt(fd);
  pthread_mutex_unlock(&warm_mu);
}

/* ---- passing descriptors (the one place that speaks SCM_RIGHTS) ---------- */

#define MAX_PASS 8 /* descriptors one message may carry */

/* sendmsg of the bytes of iov[0..niov) with fds[0..nfds) attached (nfds
 * <= MAX_PASS), no SIGPIPE, EINTR retried: bytes sent, or -1 with errno. */
ssize_t cf__pp_sendv_fds(int sock, const struct iovec *iov, size_t niov,
                         const int *fds, size_t nfds, int flags) {
  union {
    char buf[CMSG_SPACE(MAX_PASS * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = niov};
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    m.msg_control = u.buf;
    m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
  }
  ssize_t w;
  do
    w = sendmsg(sock, &m, MSG_NOSIGNAL | flags);
  while (w < 0 && errno == EINTR);
  return w;
}

/* cf__pp_sendv_fds of one buffer. */
ssize_t cf__pp_send_fds(int sock, const void *buf, size_t len, const int *fds,
                        size_t nfds, int flags) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  return cf__pp_sendv_fds(sock, &iov, 1, fds, nfds, flags);
}

/* recvmsg of up to len bytes into buf, close-on-exec descriptors into box,
 * EINTR retried: recvmsg's own return (0 at end of file, -1 with errno). */
ssize_t cf__pp_recv_fds(int sock, void *buf, size_t len, fdbox *box,
                        int flags) {
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char buf[CMSG_SPACE(MAX_PASS * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr m = {.msg_iov = &iov,
                     .msg_iovlen = 1,
                     .msg_control = u.buf,
                     .msg_controllen = sizeof u.buf};
  ssize_t r;
  do
    r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
  while (r < 0 && errno == EINTR);
  if (r <= 0)
    return r;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t j = 0; j < k; j++) {
      int fd;
      memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof fd);
      if (box->n < box->max) {
        box->fds[box->n++] = fd;
      } else {
        close(fd);
        box->excess = true;
      }
    }
  }
  if (m.msg_flags & MSG_CTRUNC)
    box->dropped = true;
  return r;
}

static int send_header(int fd, wire *h, int pass_fd);

/* Sends h with its payload already in memfd mfd (the worker's spare). */
int cf__pp_send_mapped(int fd, wire *h, int mfd) {
  h->flags = FLAG_MAPPED;
  return send_header(fd, h, mfd);
}

/* Sends header h (its magic set here) with pass_fd (-1: none) attached to
 * its first byte, blocking: 0 or -1. For workers; the manager never blocks
 * (process_pool_manager.c: tx_send). */
static int send_header(int fd, wire *h, int pass_fd) {
  h->magic = WIRE_MAGIC;
  ssize_t w =
      cf__pp_send_fds(fd, h, sizeof *h, &pass_fd, pass_fd >= 0 ? 1 : 0, 0);
  if (w <= 0)
    return -1;
  /* The fd went with the first byte; the rest of the header is plain. */
  return (size_t)w < sizeof *h
             ? write_full(fd, (const char *)h + w, sizeof *h - (size_t)w)
             : 0;
}

/* A memfd holding data[0..len), or -1 (errno set). */
int cf__pp_payload_memfd(const void *data, size_t len) {
  int mfd = memfd_create("cfutures-payload", MFD_CLOEXEC);
  if (mfd < 0)
    return -1;
  /* write() fills the memfd's pages directly: no page faults to take. */
  if (write_all_fd(mfd, data, len)) {
    int e = errno;
    close(mfd);
    errno = e;
    return -1;
  }
  return mfd;
}

int cf__pp_send_msg(int fd, wire *h, const void *data) {
  if (h->len < BIG_PAYLOAD) {
    h->magic = WIRE_MAGIC;
    h->flags = 0;
    struct iovec iov[2] = {{.iov_base = h, .iov_len = sizeof *h},
                           {.iov_base = (void *)data, .iov_len = h->len}};
    return writev_full(fd, iov, h->len ? 2 : 1);
  }
  int mfd = cf__pp_payload_memfd(data, h->len);
  if (mfd < 0)
    return SEND_LOCAL;
  h->flags = FLAG_MAPPED;
  int rc = send_header(fd, h, mfd);
  close(mfd);
  return rc;
}

/* A worker's mappings of the memfds its inputs came in, by inode: the
 * parent reuses its big-input memfds (see warm_buf), and a mapping kept
 * here reads the next input without mapping or faulting a page. Shared
 * mappings, so that they see what the parent writes next time (a task
 * must not write to its input: it is const). The least recently used
 * goes when a fifth comes, unless pinned: the worker's spare (see
 * process_pool_worker.c) is written into later, so its mapping must stay
 * where it is until the spare is used. Worker only (single-threaded). */
#define WORKER_MAPS 4
static struct {
  dev_t dev;
  ino_t ino;
  void *p;
  size_t len;
  uint64_t used; /* when last used: a counter */
  bool pinned;
} worker_maps[WORKER_MAPS];
static uint64_t worker_map_clock;

void *cf__pp_worker_map(int fd, const struct stat *st, size_t len, bool pin) {
  size_t victim = WORKER_MAPS;
  for (size_t k = 0; k < WORKER_MAPS; k++) {
    if (worker_maps[k].p && worker_maps[k].dev == st->st_dev &&
        worker_maps[k].ino == st->st_ino && worker_maps[k].len >= len) {
      worker_maps[k].used = ++worker_map_clock;
      worker_maps[k].pinned |= pin;
      return worker_maps[k].p;
    }
    if (!worker_maps[k].pinned &&
        (victim == WORKER_MAPS ||
         worker_maps[k].used < worker_maps[victim].used))
      victim = k;
  }
  size_t maplen = (size_t)st->st_size;
  void *p = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED || victim == WORKER_MAPS)
    return p; /* everything pinned: not kept (unmapped with its message) */
  if (worker_maps[victim].p)
    munmap(worker_maps[victim].p, worker_maps[victim].len);
  worker_maps[victim].dev = st->st_dev;
  worker_maps[victim].ino = st->st_ino;
  worker_maps[victim].p = p;
  worker_maps[victim].len = maplen;
  worker_maps[victim].used = ++worker_map_clock;
  worker_maps[victim].pinned = pin;
  return p;
}

bool cf__pp_worker_unpin(const void *p) {
  for (size_t k = 0; k < WORKER_MAPS; k++)
    if (worker_maps[k].p == p) {
      worker_maps[k].pinned = false;
      return true;
    }
  return false;
}

static bool worker_map_kept(const void *p) {
  for (size_t k = 0; k < WORKER_MAPS; k++)
    if (worker_maps[k].p == p)
      return true;
  return false;
}

/* Frees a payload from cf__pp_recv_msg. */
void cf__pp_payload_free(const wire *h, void *data) {
  if (data && (h->flags & FLAG_MAPPED)) {
    if (!worker_map_kept(data))
      munmap(data, h->len);
  } else {
    free(data);
  }
}

/* The worker's read-ahead: what it has received and not yet taken,
 * inbox.buf[off, len), and the descriptors that came with those bytes,
 * oldest first (INBOX_FD_DROPPED: one the kernel had no slot for). A
 * frame with a descriptor (FLAG_MAPPED, FLAG_SPARE) takes the oldest one:
 * each such frame carries exactly one, attached to its first byte, so the
 * order of the bytes is the order of the descriptors. One recvmsg then
 * brings a header and its payload, or several frames, instead of one
 * system call for each (a task's input is often a few bytes). A worker is
 * single-threaded: one inbox per process. */
#define INBOX_CAP        (BIG_PAYLOAD + 2 * sizeof(wire))
#define INBOX_FDS        8
#define INBOX_FD_DROPPED (-1)
static struct {
  char *buf;
  size_t off, len;
  int fds[INBOX_FDS];
  unsigned nfds;
} inbox;

/* Waits until inbox holds at least `need` (<= INBOX_CAP) bytes: 0, or -1
 * at end-of-file or on an error (RECV_BAD: descriptors beyond what frames
 * can carry). */
static int inbox_fill(int fd, size_t need) {
  if (!inbox.buf && !(inbox.buf = malloc(INBOX_CAP)))
    return -1;
  if (inbox.off + need > INBOX_CAP || inbox.off == inbox.len) {
    memmove(inbox.buf, inbox.buf + inbox.off, inbox.len - inbox.off);
    inbox.len -= inbox.off;
    inbox.off = 0;
  }
  while (inbox.len - inbox.off < need) {
    fdbox box = {.fds = inbox.fds, .max = INBOX_FDS, .n = inbox.nfds};
    ssize_t r = cf__pp_recv_fds(fd, inbox.buf + inbox.len,
                                INBOX_CAP - inbox.len, &box, 0);
    if (r <= 0)
      return -1;
    if (box.dropped && box.n < box.max)
      box.fds[box.n++] = INBOX_FD_DROPPED;
    inbox.nfds = (unsigned)box.n;
    inbox.len += (size_t)r;
    if (box.excess)
      return RECV_BAD;
  }
  return 0;
}

/* The descriptor that came with the frame being read, or
 * INBOX_FD_DROPPED; -2 when none came (the peer broke the protocol). */
static int inbox_take_fd(void) {
  if (inbox.nfds == 0)
    return -2;
  int fd = inbox.fds[0];
  inbox.nfds--;
  memmove(inbox.fds, inbox.fds + 1, inbox.nfds * sizeof *inbox.fds);
  return fd;
}

/* Reads a message, waiting for it: the worker's way (it has nothing else
 * to do; the manager never waits: see rx_take). *data is malloc'd, or
 * mapped when h->flags says so (free either with cf__pp_payload_free), NULL for
 * an empty payload. `populate` maps every page at once (a worker reads
 * its whole input). With MSG_SPARE, its memfd goes to *spare_fd (closed
 * when spare_fd is NULL). */
int cf__pp_recv_msg(int fd, wire *h, void **data, bool populate,
                    int *spare_fd) {
  *data = NULL;
  int rc = inbox_fill(fd, sizeof *h);
  if (rc)
    return rc;
  memcpy(h, inbox.buf + inbox.off, sizeof *h);
  if (h->magic != WIRE_MAGIC)
    return RECV_BAD;
  if (h->flags & (FLAG_SPARE | FLAG_MAPPED)) {
    inbox.off += sizeof *h;
    int mfd = inbox_take_fd();
    if (mfd == -2)
      return RECV_BAD;
    if (h->flags & FLAG_SPARE) { /* MSG_SPARE: the memfd is for the caller */
      if (h->len != 0 || (h->flags & FLAG_MAPPED) || mfd < 0) {
        if (mfd >= 0)
          close(mfd);
        return RECV_BAD;
      }
      if (spare_fd)
        *spare_fd = mfd;
      else
        close(mfd);
      return 0;
    }
    if (mfd == INBOX_FD_DROPPED) {
      errno = EMFILE; /* no descriptor slot here for it */
      return RECV_LOCAL;
    }
    struct stat st;
    if (fstat(mfd, &st) != 0 || (uint64_t)st.st_size < h->len) {
      close(mfd); /* a mapping past its end would fault (SIGBUS) */
      return RECV_BAD;
    }
    void *p =
        populate ? cf__pp_worker_map(mfd, &st, h->len, false) : MAP_FAILED;
    if (!populate)
      p = mmap(NULL, h->len, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
    int e = errno;
    close(mfd);
    errno = e;
    if (p == MAP_FAILED)
      return RECV_LOCAL;
    *data = p;
    return 0;
  }
  if (h->len >= BIG_PAYLOAD)
    return RECV_BAD; /* would have come in a memfd */
  if ((rc = inbox_fill(fd, sizeof *h + h->len)) != 0)
    return rc;
  const char *payload = inbox.buf + inbox.off + sizeof *h;
  inbox.off += sizeof *h + h->len;
  if (h->len == 0)
    return 0;
  if (!(*data = malloc(h->len))) {
    errno = ENOMEM; /* skipped: the stream stays in step */
    return RECV_LOCAL;
  }
  memcpy(*data, payload, h->len);
  return 0;
}

void cf__pp_close_other_fds(int keep1, int keep2) {
  for (int fd = 3; fd < 65536; fd++) {
    if (fd == keep1 || fd == keep2)
      continue;
    if (syscall(SYS_close_range, fd, fd, 0) != 0 && errno == ENOSYS)
      close(fd);
    else if (fd > keep1 && fd > keep2) {
      syscall(SYS_close_range, fd, ~0u, 0);
      break;
    }
  }
}

/* Sends c with the descriptors pass[0..npass) attached (npass: 0 to 2).
 * flags: 0 in the fork server (it may block: the manager always drains),
 * MSG_DONTWAIT in the manager, which must never block on the server (both
 * blocking on full queues would deadlock). */
int cf__pp_send_ctl(int fd, const ctl *c, const int *pass, size_t npass,
                    int flags) {
  return cf__pp_send_fds(fd, c, sizeof *c, pass, npass, flags) ==
                 (ssize_t)sizeof *c
             ? 0
             : -1;
}

/* Returns bytes read (0 at end-of-file, -1 on error); got[0..2): the
 * descriptors that came with it, in order, or -1. */
ssize_t cf__pp_recv_ctl(int fd, ctl *c, int got[2], int flags) {
  got[0] = got[1] = -1;
  fdbox box = {.fds = got, .max = 2}; /* more than a message carries: closed */
  return cf__pp_recv_fds(fd, c, sizeof *c, &box, flags);
}
