/* process_mail: the tutorials' multiprocessing program. Ten processes
 * each "send a mail" (one message on a process-shared queue, which many
 * senders may use at once, unlike one end of a pipe); the parent joins them
 * all and checks that each of the 10 mails arrived exactly once and that
 * every sender exited with 0. Exits 0 on success.
 *
 *   for i in range(10):
 *       p = Process(target=send_mail, args=(i,)); p.start()
 *   for p in processes: p.join()
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cfutures.h>

enum { SENDERS = 10 };

static cf_shm_queue *mailbox; /* made before the forks: every child's too */

static int send_mail(void *arg) {
  int id = (int)(intptr_t)arg;
  usleep((useconds_t)(id * 7 % 5) * 10000); /* writing takes a moment */
  char mail[64];
  int n = snprintf(mail, sizeof mail, "mail %d from pid %d", id, (int)getpid());
  return cf_shm_queue_put(mailbox, mail, (size_t)n + 1, 5) == 0 ? 0 : 1;
}

int main(void) {
  if (cf_shm_queue_new(CF_QUEUE_FIFO, 0, 0, &mailbox) != 0) {
    fprintf(stderr, "cf_shm_queue_new: %s\n", cf_last_error());
    return 1;
  }
  cf_process *senders[SENDERS];
  for (int i = 0; i < SENDERS; i++) {
    char name[32];
    snprintf(name, sizeof name, "sender-%d", i);
    cf_process_opts o = {.name = name, .daemon = true};
    if (cf_process_start(send_mail, (void *)(intptr_t)i, &o, &senders[i])) {
      fprintf(stderr, "cf_process_start: %s\n", cf_last_error());
      return 1;
    }
  }

  int bad = 0;
  for (int i = 0; i < SENDERS; i++) {
    int code = -1;
    if (cf_process_join(senders[i], 30) != 0 ||
        cf_process_exitcode(senders[i], &code) != 0 || code != 0) {
      fprintf(stderr, "%s: %s (exit code %d)\n", cf_process_name(senders[i]),
              cf_last_error(), code);
      bad = 1;
      cf_process_kill(senders[i]);
      cf_process_join(senders[i], 5);
    }
    printf("%s (pid %d) joined, exit code %d\n", cf_process_name(senders[i]),
           (int)cf_process_pid(senders[i]), code);
    cf_process_free(senders[i]);
  }

  /* Every sender has exited: what they sent is all there. */
  int got[SENDERS] = {0}, total = 0;
  void *data;
  size_t len;
  while (cf_shm_queue_get(mailbox, 0, &data, &len) == 0) {
    int id = -1;
    if (sscanf(data, "mail %d", &id) == 1 && id >= 0 && id < SENDERS)
      got[id]++;
    printf("received: %s\n", (char *)data);
    free(data);
    total++;
  }
  cf_shm_queue_free(mailbox);
  for (int i = 0; i < SENDERS; i++)
    if (got[i] != 1) {
      fprintf(stderr, "mail %d arrived %d times\n", i, got[i]);
      bad = 1;
    }
  printf("%d of %d mails arrived%s\n", total, SENDERS, bad ? " (FAILED)" : "");
  return bad || total != SENDERS;
}
