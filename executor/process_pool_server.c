/* The process pool's fork server: forks workers on request and reports
 * their deaths; started as a fork of the host (CF_START_FORK) or as a
 * fresh image of the program (CF_START_FORKSERVER). See
 * process_pool_internal.h. */
#include "executor/process_pool_internal.h"

/* ---- the fork server ----------------------------------------------------- */

/* Signal handlers installed by the host (test frameworks, sanitizers,
 * crash reporters) must not run in workers: a crash there has to end the
 * worker with its signal, for the parent to report. Ignored signals stay
 * ignored, as across exec. */
static void default_signal_handlers(void) {
  for (int sig = 1; sig < NSIG; sig++) {
    struct sigaction sa;
    if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0)
      continue;
    if (sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL) {
      sa.sa_handler = SIG_DFL;
      sa.sa_flags = 0;
      sigaction(sig, &sa, NULL);
    }
  }
}

fork_faults cf__pp_fork_faults_from_env(void) {
  fork_faults ff = {0, 0};
  const char *s = getenv("CF__TEST_FAIL_FORK");
  if (!s || !*s)
    return ff;
  char *end;
  long k = strtol(s, &end, 10);
  if (end != s && *end == '+') {
    ff.skip = k > 0 ? k : 0;
    s = end + 1;
  }
  if (strcmp(s, "always") == 0) {
    ff.fail = -1;
  } else {
    k = strtol(s, &end, 10);
    ff.fail = end != s && k > 0 ? k : 0;
  }
  return ff;
}

/* fork(), unless a test said it should fail (see fork_faults). */
static pid_t fork_worker(fork_faults *ff) {
  if (ff->skip > 0) {
    ff->skip--;
  } else if (ff->fail != 0) {
    if (ff->fail > 0)
      ff->fail--;
    errno = EAGAIN;
    return -1;
  }
  return fork();
}

/* A worker's socket is moved to a high descriptor number: the fork server
 * closes what the host had open, so the low numbers are free in a worker,
 * and a task writing to one it believes is the host's (a log file opened
 * before the pool, say) would write into the pool's socket. From
 * WORKER_FD_MIN on where the descriptor limit allows; else where it was. */
#define WORKER_FD_MIN 512
static int high_fd(int fd) {
  int hi = fcntl(fd, F_DUPFD_CLOEXEC, WORKER_FD_MIN);
  if (hi < 0)
    return fd;
  close(fd);
  return hi;
}

_Noreturn void cf__pp_server_main(int ctl_fd, int bell_fd, pid_t parent,
                                  const cf_process_pool_opts *o, size_t n,
                                  slot_shared *shared, fork_faults ff) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(0);
  default_signal_handlers();
  /* The terminal's signals go to the whole foreground process group: a
   * host that handles Ctrl-C lives on, and so must its pool (with default
   * actions, the server and the running task died of it, and the pool was
   * broken for good). Ignored here, and in the workers, which inherit it.
   * The server dies with the parent anyway (PR_SET_PDEATHSIG). */
  static const int terminal_signals[] = {SIGINT,  SIGQUIT, SIGTSTP,
                                         SIGTTIN, SIGTTOU, SIGHUP};
  for (size_t k = 0; k < sizeof terminal_signals / sizeof *terminal_signals;
       k++) {
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(terminal_signals[k], &ign, NULL);
  }
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  /* A SIGCHLD ignored by the host (inherited) would have the kernel reap
   * the workers itself, and their deaths would go unreported. */
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  sigaction(SIGCHLD, &dfl, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0)
    _exit(1); /* cannot see deaths: the parent sees us go, the pool breaks */
  for (;;) {
    struct pollfd p[2] = {{.fd = ctl_fd, .events = POLLIN},
                          {.fd = sfd, .events = POLLIN}};
    if (poll(p, 2, -1) < 0 && errno != EINTR)
      _exit(1);
    if (p[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0)
        ;
    }
    /* Reap every exited worker and tell the parent how it ended. */
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      ctl c = {.op = CTL_EXITED, .pid = pid, .status = status};
      cf__pp_send_ctl(ctl_fd, &c, NULL, 0, 0);
    }
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    ctl c;
    int unused[2];
    if (cf__pp_recv_ctl(ctl_fd, &c, unused, 0) <= 0) {
      /* The parent is done with us: let the workers finish (their sockets
       * are closed, so they exit), reap them, leave. */
      while (waitpid(-1, &status, 0) > 0)
        ;
      _exit(0);
    }
    if (c.op != CTL_SPAWN || c.slot >= n)
      continue;
    /* The slot's previous worker has exited (its report came first). */
    atomic_store_explicit(&shared[c.slot].started, 0, memory_order_relaxed);
    atomic_store_explicit(&shared[c.slot].chunk_done, 0, memory_order_relaxed);
    atomic_store_explicit(&shared[c.slot].sent, 0, memory_order_relaxed);
    atomic_store_explicit(&shared[c.slot].posted, 0, memory_order_relaxed);
    atomic_store_explicit(&shared[c.slot].asleep, 0, memory_order_relaxed);
    msg_ring *rings[] = {&shared[c.slot].tasks, &shared[c.slot].results};
    for (size_t k = 0; k < 2; k++) {
      atomic_store_explicit(&rings[k]->tail, 0, memory_order_relaxed);
      atomic_store_explicit(&rings[k]->head, 0, memory_order_relaxed);
    }
    int sv[2] = {-1, -1};
    /* the worker's result area: see run_chunk */
    int afd = memfd_create("cfutures-results", MFD_CLOEXEC);
    if (afd < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
      ctl fail = {.op = CTL_SPAWNED, .slot = c.slot, .pid = -1};
      fail.status = errno;
      if (afd >= 0)
        close(afd);
      cf__pp_send_ctl(ctl_fd, &fail, NULL, 0,
                      0); /* the manager will ask again */
      continue;
    }
    pid_t server = getpid();
    pid = fork_worker(&ff);
    int fork_errno = errno;
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      /* The server may have died before the line above (then no signal
       * will come): such a worker would live on, orphaned, running
       * whatever task reached it (seen: one sleeping in a task long after
       * its pool was gone, holding the test run's output pipe). */
      if (getppid() != server)
        _exit(0);
      close(ctl_fd);
      close(sfd);
      close(sv[0]);
      sigprocmask(SIG_UNBLOCK, &chld, NULL);
      int sock = high_fd(sv[1]);
      cf__pp_worker_main(sock, high_fd(afd), high_fd(bell_fd), o,
                         &shared[c.slot], slots_region(shared));
    }
    close(sv[1]);
    ctl reply = {.op = CTL_SPAWNED,
                 .slot = c.slot,
                 .pid = pid > 0 ? pid : -1,
                 .status = pid > 0 ? 0 : fork_errno};
    int pass[2] = {sv[0], afd};
    cf__pp_send_ctl(ctl_fd, &reply, pass, pid > 0 ? 2 : 0, 0);
    close(sv[0]);
    close(afd);
  }
}

/* ---- the exec'd fork server (CF_START_FORKSERVER) ------------------------ */

/* The manager starts the server as /proc/self/exe with this argv:
 *   SERVER_ARGV0 SERVER_TAG <parent pid> <LD_PRELOAD to restore>
 * and its end of the control socket at SERVER_CTL_FD. The library's
 * constructor (server_entry) sees the argv and becomes the fork server
 * before the program's own constructors and main could run: nothing of
 * the host is in it but the program's code and static data as compiled. Its
 * first message from the manager (CTL_CONFIG) brings the region (see
 * region_head): the options, the slots, the object paths. */
#define SERVER_ARGV0  "cfutures-fork-server"
#define SERVER_TAG    "--cfutures-fork-server-v1"
#define SERVER_CTL_FD 3

/* The initializer the server could not find: each worker fails to start
 * with this message, as if the initializer had failed. */
static char init_missing[300];
static int missing_initializer(void *arg) {
  (void)arg;
  return cf_fail(CF_ESYS, "%s", init_missing);
}

/* The 4th argument: "k" LD_PRELOAD was not touched, "u" it was unset in
 * the host, "=value" its value in the host (the manager set it to reach
 * this library, see preload_path). */
static void restore_preload(const char *how) {
  if (how[0] == 'u')
    unsetenv("LD_PRELOAD");
  else if (how[0] == '=')
    setenv("LD_PRELOAD", how + 1, 1);
}

__attribute__((constructor)) static void server_entry(int argc, char **argv,
                                                      char **envp) {
  (void)envp;
  if (argc != 4 || !argv || !argv[0] || strcmp(argv[0], SERVER_ARGV0) != 0 ||
      strcmp(argv[1], SERVER_TAG) != 0)
    return; /* an ordinary start of the program */
  pid_t parent = (pid_t)strtol(argv[2], NULL, 10);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(0); /* the parent has gone already: the signal will not come */
  restore_preload(argv[3]);
  cf__pp_atfork_off = true;
  ctl c;
  int got[2];
  if (cf__pp_recv_ctl(SERVER_CTL_FD, &c, got, 0) != (ssize_t)sizeof c ||
      c.op != CTL_CONFIG || got[0] < 0 || got[1] < 0)
    _exit(1); /* the manager sees the server go: the pool fails to start */
  struct stat st;
  region_head *r = MAP_FAILED;
  if (fstat(got[0], &st) == 0 && (size_t)st.st_size >= sizeof *r)
    r = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
             got[0], 0);
  if (r == MAP_FAILED || r->magic != REGION_MAGIC ||
      (size_t)st.st_size < region_size(r->n, true))
    _exit(1);
  cf__pp_close_other_fds(SERVER_CTL_FD, got[1]);
  cf__pp_exec_region = r;
  /* the program's own bias, found once here: every worker inherits it */
  cf__fnref_resolve("", 0);
  cf_process_pool_opts o = {
      .max_tasks_per_child = (size_t)r->max_tasks_per_child,
      .task_timeout_s = r->task_timeout_s,
      .initarg = (void *)(uintptr_t)r->initarg,
  };
  if (r->initarg_is_ref)
    o.initarg = (void *)cf__pp_task_fn(r->initarg);
  if (r->has_init) {
    /* looked up once here: the workers inherit the address */
    o.initializer = (int (*)(void *))cf__pp_task_fn(r->init_ref);
    if (!o.initializer) {
      char *why = cf__fail_take_message();
      snprintf(init_missing, sizeof init_missing, "the initializer: %s",
               why ? why : "not found");
      free(why);
      o.initializer = missing_initializer;
    }
  }
  fork_faults ff = {.skip = r->ff_skip, .fail = r->ff_fail};
  cf__pp_server_main(SERVER_CTL_FD, got[1], parent, &o, r->n,
                     region_slots(r), ff);
}

/* The names (DT_NEEDED, DT_SONAME) of a loaded object's dynamic section. */
typedef struct dyn_names {
  const char *soname;
  const char *needed[64];
  size_t nneeded;
} dyn_names;

static void read_dyn(const struct link_map *lm, dyn_names *d) {
  memset(d, 0, sizeof *d);
  if (!lm->l_ld)
    return;
  uintptr_t strtab = 0;
  for (const ElfW(Dyn) *e = lm->l_ld; e->d_tag != DT_NULL; e++)
    if (e->d_tag == DT_STRTAB)
      strtab = e->d_un.d_ptr;
  if (!strtab)
    return;
  /* glibc relocates the dynamic section's addresses in place on most
   * targets; where it does not they are still offsets */
  if (strtab < (uintptr_t)lm->l_addr)
    strtab += (uintptr_t)lm->l_addr;
  for (const ElfW(Dyn) *e = lm->l_ld; e->d_tag != DT_NULL; e++) {
    const char *name = (const char *)strtab + e->d_un.d_val;
    if (e->d_tag == DT_SONAME)
      d->soname = name;
    else if (e->d_tag == DT_NEEDED && d->nneeded < 64)
      d->needed[d->nneeded++] = name;
  }
}

static bool names_object(const char *name, const struct link_map *lm,
                         const dyn_names *d) {
  const char *base = strrchr(lm->l_name, '/');
  base = base ? base + 1 : lm->l_name;
  return (d->soname && strcmp(name, d->soname) == 0) ||
         strcmp(name, lm->l_name) == 0 || strcmp(name, base) == 0;
}

/* Whether `self` is loaded at the program's start: linked into it, needed
 * by it or by what it needs (the DT_NEEDED closure from the program), or
 * preloaded. Then a fresh image of the program runs this library's
 * constructor before main; a library the host dlopen'd is not. */
static bool in_initial_image(const struct link_map *self) {
  if (!self->l_name[0])
    return true; /* linked into the program */
  const char *pre = getenv("LD_PRELOAD");
  const char *base = strrchr(self->l_name, '/');
  base = base ? base + 1 : self->l_name;
  if (pre && strstr(pre, base))
    return true;
  struct link_map *head = NULL;
  void *h = dlopen(NULL, RTLD_NOW | RTLD_NOLOAD);
  if (!h || dlinfo(h, RTLD_DI_LINKMAP, &head) != 0 || !head)
    return false;
  enum { MAX = 512 };
  const struct link_map *in[MAX]; /* found in the closure */
  size_t nin = 0;
  in[nin++] = head;
  for (size_t k = 0; k < nin; k++) {
    dyn_names need;
    read_dyn(in[k], &need);
    for (size_t j = 0; j < need.nneeded; j++)
      for (const struct link_map *m = head; m && nin < MAX; m = m->l_next) {
        dyn_names d;
        read_dyn(m, &d);
        bool seen = false;
        for (size_t i = 0; i < nin && !seen; i++)
          seen = in[i] == m;
        if (!seen && names_object(need.needed[j], m, &d))
          in[nin++] = m;
      }
  }
  for (size_t k = 0; k < nin; k++)
    if (in[k] == self)
      return true;
  return false;
}

/* The path to preload into the fork server so that its image runs this
 * library's constructor: NULL when it would anyway. Decided once. */
static pthread_once_t preload_once = PTHREAD_ONCE_INIT;
static char preload_buf[CF__FNREF_PATH_MAX];
static void find_preload(void) {
  Dl_info info;
  struct link_map *self = NULL;
  if (!dladdr1((const void *)(uintptr_t)&cf_process_pool_new, &info,
               (void **)&self, RTLD_DL_LINKMAP) ||
      !self || in_initial_image(self))
    return;
  if (!realpath(self->l_name, preload_buf))
    snprintf(preload_buf, sizeof preload_buf, "%s", self->l_name);
}
static const char *preload_path(void) {
  pthread_once(&preload_once, find_preload);
  return preload_buf[0] ? preload_buf : NULL;
}

extern char **environ;

/* Starts the fork server as a fresh image of the program (see above) with
 * `peer` as its control socket; *pid is its pid. posix_spawn (vfork and
 * exec underneath) runs no fork handler and takes no lock of the host's
 * in the child. Returns 0 or an errno. */
int cf__pp_spawn_server(int peer, pid_t *pid) {
  char parent[24], *pre_arg = "k", *pre_env = NULL;
  snprintf(parent, sizeof parent, "%ld", (long)getpid());
  const char *self = preload_path();
  char **copy = NULL;
  if (self) {
    /* environ plus LD_PRELOAD=self[:old]; the server puts the old back */
    const char *old = getenv("LD_PRELOAD");
    size_t n = 0;
    while (environ[n])
      n++;
    copy = malloc((n + 2) * sizeof *copy);
    size_t plen = strlen(self) + (old ? strlen(old) + 1 : 0) + 16;
    pre_env = malloc(plen);
    pre_arg = malloc((old ? strlen(old) : 0) + 2);
    if (!copy || !pre_env || !pre_arg) {
      free(copy);
      free(pre_env);
      free(pre_arg);
      return ENOMEM;
    }
    snprintf(pre_env, plen, "LD_PRELOAD=%s%s%s", self, old ? ":" : "",
             old ? old : "");
    if (old)
      sprintf(pre_arg, "=%s", old);
    else
      strcpy(pre_arg, "u");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
        copy[k++] = environ[i];
    copy[k++] = pre_env;
    copy[k] = NULL;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc == 0) {
    /* dup2 clears close-on-exec on the copy (glibc does it also when the
     * numbers are equal) */
    rc = posix_spawn_file_actions_adddup2(&fa, peer, SERVER_CTL_FD);
    if (rc == 0 && (rc = posix_spawnattr_init(&at)) == 0) {
      posix_spawnattr_setsigmask(&at, &chld);
      posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
      char *argv[] = {SERVER_ARGV0, SERVER_TAG, parent, pre_arg, NULL};
      /* EFAULT: another thread's setenv moved the environment while the
       * exec read it (glibc before 2.40 frees the old array); seen about
       * once in ten pools made while a thread loops on setenv. The exec
       * failed cleanly: try again. */
      for (int tries = 0; tries < 100; tries++) {
        rc = posix_spawn(pid, "/proc/self/exe", &fa, &at, argv,
                         copy ? copy : environ);
        if (rc != EFAULT)
          break;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
      }
      posix_spawnattr_destroy(&at);
    }
    posix_spawn_file_actions_destroy(&fa);
  }
  if (self) {
    free(copy);
    free(pre_env);
    free(pre_arg);
  }
  return rc;
}

/* Forks the fork server from the calling (manager) thread, which runs with
 * every signal blocked, so that no handler of the host runs in the server;
 * the server keeps SIGCHLD blocked for its signalfd. Returns 0 or CF_ESYS. */
int cf__pp_start_server(ppool *p) {
  int sv[2];
  pthread_mutex_lock(&p->fd_mu);
  int src = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
  if (src == 0) {
    p->ctl_fd = sv[0];
    p->ctl_peer = sv[1];
  }
  pthread_mutex_unlock(&p->fd_mu);
  if (src)
    return CF_ESYS;
  pid_t parent = getpid();
  pid_t pid = -1;
  if (p->exec_server) {
    int err = cf__pp_spawn_server(sv[1], &pid);
    if (err) {
      pid = -1;
      errno = err;
    } else {
      ctl c = {.op = CTL_CONFIG};
      int pass[2] = {p->region_fd, p->wake_fd};
      if (cf__pp_send_ctl(sv[0], &c, pass, 2, 0) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pid = -1;
      }
    }
  } else {
    fork_faults ff = cf__pp_fork_faults_from_env(); /* tests only */
    cf__pp_forking_server =
        true; /* no fork handler: see process_pool_internal.h */
    pid = fork();
    if (pid == 0) {
      cf__pp_atfork_off = true;
      close(sv[0]);
      cf__pp_close_other_fds(sv[1], p->wake_fd);
      sigset_t keep;
      sigemptyset(&keep);
      sigaddset(&keep, SIGCHLD);
      sigprocmask(SIG_SETMASK, &keep, NULL);
      cf__pp_server_main(sv[1], p->wake_fd, parent, &p->o, p->n, p->shared,
                         ff);
    }
    cf__pp_forking_server = false;
  }
  pthread_mutex_lock(&p->fd_mu);
  close(sv[1]);
  p->ctl_peer = -1;
  if (pid < 0) {
    close(sv[0]);
    p->ctl_fd = -1;
  }
  pthread_mutex_unlock(&p->fd_mu);
  if (pid < 0)
    return CF_ESYS;
  p->server = pid;
  return 0;
}
