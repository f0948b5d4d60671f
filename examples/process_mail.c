/* process_mail: the tutorials' multiprocessing program. Ten processes
 * each "send a mail" (one message on a shared cf_pipe); the parent joins
 * them all and checks that each of the 10 mails arrived exactly once and
 * that every sender exited with 0. Exits 0 on success.
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

static cf_pipe *outbox; /* the send end, inherited by every child */

static int send_mail(void *arg) {
  int id = (int)(intptr_t)arg;
  usleep((useconds_t)(id * 7 % 5) * 10000); /* writing takes a moment */
  char mail[64];
  int n = snprintf(mail, sizeof mail, "mail %d from pid %d", id, (int)getpid());
  return cf_pipe_send(outbox, mail, (size_t)n + 1, 5) == 0 ? 0 : 1;
}

int main(void) {
  cf_pipe *inbox;
  if (cf_pipe_new(false, &outbox, &inbox) != 0) {
    fprintf(stderr, "cf_pipe_new: %s\n", cf_last_error());
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
  cf_pipe_close(outbox); /* the children hold their copies */

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

  /* Every sender has exited: the inbox ends once it is read out. */
  int got[SENDERS] = {0}, total = 0;
  void *data;
  size_t len;
  while (cf_pipe_recv(inbox, 5, &data, &len) == 0) {
    int id = -1;
    if (sscanf(data, "mail %d", &id) == 1 && id >= 0 && id < SENDERS)
      got[id]++;
    printf("received: %s\n", (char *)data);
    free(data);
    total++;
  }
  cf_pipe_close(inbox);
  for (int i = 0; i < SENDERS; i++)
    if (got[i] != 1) {
      fprintf(stderr, "mail %d arrived %d times\n", i, got[i]);
      bad = 1;
    }
  printf("%d of %d mails arrived%s\n", total, SENDERS, bad ? " (FAILED)" : "");
  return bad || total != SENDERS;
}
