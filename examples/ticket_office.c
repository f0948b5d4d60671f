/* ticket_office: several processes sell from one stock kept in a JSON file,
 * under a process-shared lock. Never oversells: the tickets sold add up to
 * the stock, and the file ends at zero. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cfutures.h>

enum { CLERKS = 5, STOCK = 200 };

static int read_stock(const char *path) {
  FILE *f = fopen(path, "r");
  int n = -1;
  if (f) {
    if (fscanf(f, " { \"tickets\" : %d }", &n) != 1)
      n = -1;
    fclose(f);
  }
  return n;
}

static void write_stock(const char *path, int n) {
  char tmp[256];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return;
  fprintf(f, "{ \"tickets\": %d }\n", n);
  fclose(f);
  rename(tmp, path);
}

int main(void) {
  char path[] = "/tmp/cf-tickets-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0)
    return 1;
  close(fd);
  write_stock(path, STOCK);
  cf_lock *lock;
  if (cf_lock_new(true, &lock) != 0)
    return 1;
  int *sold = mmap(NULL, CLERKS * sizeof(int), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  pid_t kids[CLERKS];
  for (int k = 0; k < CLERKS; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      for (;;) {
        int rc = cf_lock_acquire(lock, 10);
        if (rc != 0 && rc != CF_EOWNERDEAD) /* a dead clerk's lock is ours */
          _exit(2);
        int left = read_stock(path);
        if (left > 0)
          write_stock(path, left - 1);
        cf_lock_release(lock);
        if (left <= 0)
          _exit(0);
        sold[k]++;
        usleep(100);
      }
    }
  }
  int total = 0;
  for (int k = 0; k < CLERKS; k++) {
    waitpid(kids[k], NULL, 0);
    printf("clerk %d sold %d tickets\n", k, sold[k]);
    total += sold[k];
  }
  int left = read_stock(path);
  printf("sold %d of %d, %d left in %s\n", total, STOCK, left, path);
  unlink(path);
  cf_lock_free(lock);
  return total == STOCK && left == 0 ? 0 : 1;
}
