// The public headers compile as C++ and link with extern "C" names.
#include <cfutures.h>
#include <cstdio>

int main() {
  cf_future *f = cf_future_new();
  if (!f || cf_future_set_result(f, nullptr, nullptr) != 0)
    return 1;
  bool done = false;
  int rc = cf_wait(&f, 1, 0.0, CF_ALL_COMPLETED, &done);
  std::printf("consumer++: %s %d\n", cf_err_name(rc), done ? 1 : 0);
  cf_future_unref(f);
  return rc == 0 && done ? 0 : 1;
}
