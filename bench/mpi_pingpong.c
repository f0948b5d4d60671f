/* The interconnect itself, for the MPI pool's cost model (docs/mpi.md):
 * plain MPI between ranks 0 and 1, no cfutures.
 *   mpiexec -n 2 mpi_pingpong
 * Prints the one-way latency L of an 8-byte message (half the median
 * round trip of 20,000 ping-pongs) and the bandwidth B of a 4 MiB one
 * (bytes over half the best round trip of 50, less L). Other ranks, if
 * any, wait. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"

static double round_trip(void *buf, int n, int rank) {
  double t0 = bench_now();
  if (rank == 0) {
    MPI_Send(buf, n, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
    MPI_Recv(buf, n, MPI_BYTE, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  } else {
    MPI_Recv(buf, n, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Send(buf, n, MPI_BYTE, 0, 1, MPI_COMM_WORLD);
  }
  return bench_now() - t0;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < 2) {
    fprintf(stderr, "mpi_pingpong: run it on 2 ranks\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  enum { SMALL = 20000, BIG = 50 };
  const int big = 4 << 20;
  char *buf = malloc((size_t)big);
  memset(buf, 1, (size_t)big);
  double lat = 0, bw = 0;
  if (rank <= 1) {
    for (int i = 0; i < 1000; i++) /* warm up */
      round_trip(buf, 8, rank);
    double *us = malloc(SMALL * sizeof *us);
    for (int i = 0; i < SMALL; i++)
      us[i] = round_trip(buf, 8, rank) * 1e6;
    qsort(us, SMALL, sizeof us[0], bench_cmp);
    lat = us[SMALL / 2] / 2;
    free(us);
    double best = 1e9;
    for (int i = 0; i < BIG + 3; i++) {
      double t = round_trip(buf, big, rank);
      if (i >= 3 && t < best)
        best = t;
    }
    double one_way = best / 2 - lat * 1e-6;
    bw = (double)big / (one_way > 0 ? one_way : best / 2) / 1e9;
  }
  if (rank == 0) {
    bench_report("mpi_pp_lat", "MPI", lat, "us");
    bench_report("mpi_pp_bw", "MPI", bw, "GB/s");
  }
  free(buf);
  MPI_Finalize();
  return 0;
}
