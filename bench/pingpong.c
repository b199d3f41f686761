/*
  pingpong.c - the two numbers of the alpha-beta model of docs/performance-model.md,
  measured on whatever transport MPI uses between ranks 0 and 1: the one-way time of a
  message of n bytes, t(n) = alpha + n / beta (alpha: the smaller of the 8- and 64-byte
  times; beta: the best n / (t(n) - alpha) over n >= 256 KiB). Ranks 0 and 1 bounce
  messages of 8 B to 2 MiB (each size repeated for ~0.2 s, the minimum over three rounds
  kept: other work on the machine only ever adds time); then every rank times
  MPI_Allreduce (MPI_SUM, float) of the gradient buffer of basis' default network
  (-bytes, default 4 (P + 6) = 2,916,416 B) and rank 0 prints the model's ring
  prediction next to it.

  Output (rank 0):  pingpong BYTES ONE_WAY_US MB_PER_S
                    fit alpha_us A beta_MB_per_s B
                    allreduce RANKS BYTES MIN_MS MEDIAN_MS RING_MODEL_MS
  Build: mpicc -O2 -o pingpong bench/pingpong.c   (scripts/net-pingpong builds and runs it)
  Not a test and not part of the basis build: a measurement tool, needs >= 2 ranks.
*/
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One-way time of a message of n bytes between ranks 0 and 1 (rank 0's result). */
static double PingPong(char *buf, int n, int rank, MPI_Comm pair)
{
  double best = 1e30;
  for (int round = 0; round < 3; round++) {
    int    reps = 0;
    double t0, t = 0;
    MPI_Barrier(pair);
    t0 = MPI_Wtime();
    for (;;) {
      if (rank == 0) {
        MPI_Send(buf, n, MPI_CHAR, 1, 0, pair);
        MPI_Recv(buf, n, MPI_CHAR, 1, 0, pair, MPI_STATUS_IGNORE);
      } else if (rank == 1) {
        MPI_Recv(buf, n, MPI_CHAR, 0, 0, pair, MPI_STATUS_IGNORE);
        MPI_Send(buf, n, MPI_CHAR, 0, 0, pair);
      }
      reps++;
      /* rank 0 decides when to stop */
      t        = MPI_Wtime() - t0;
      int stop = (rank == 0 && (t > 0.2 && reps >= 10)) || reps >= 100000;
      MPI_Bcast(&stop, 1, MPI_INT, 0, pair);
      if (stop) break;
    }
    if (rank == 0 && t / (2.0 * reps) < best) best = t / (2.0 * reps);
  }
  return best;
}

static int CmpDouble(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
  int    rank, size;
  long   bytes = 4L * (729098 + 6); /* basis' default 784-256-512-512-256-10 network */
  double a8 = 0, beta = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], "-bytes")) bytes = atol(argv[i + 1]);
  if (size < 2) {
    if (!rank) fprintf(stderr, "pingpong: needs at least 2 ranks\n");
    MPI_Finalize();
    return 1;
  }
  /* Only ranks 0 and 1 take part in the ping-pong (its stop flag is a Bcast among them). */
  MPI_Comm pair;
  MPI_Comm_split(MPI_COMM_WORLD, rank <= 1 ? 0 : MPI_UNDEFINED, rank, &pair);
  char *buf = calloc(4 << 20, 1);
  if (pair != MPI_COMM_NULL) {
    for (int n = 8; n <= (4 << 20); n *= 8) {
      double t = PingPong(buf, n, rank, pair);
      if (rank == 0) printf("pingpong %d %.2f %.1f\n", n, 1e6 * t, n / t / 1e6);
      if (n == 8 || (n == 64 && t < a8)) a8 = t; /* alpha: the smallest messages' time */
      if (n >= (256 << 10) && n / (t - a8) > beta) beta = n / (t - a8); /* least disturbed size */
    }
  }
  if (pair != MPI_COMM_NULL) MPI_Comm_free(&pair);
  free(buf);

  long   nf = bytes / 4;
  float *in = calloc(nf, sizeof(float)), *out = calloc(nf, sizeof(float));
  double times[20];
  for (int r = 0; r < 20; r++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    MPI_Allreduce(in, out, (int)nf, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    times[r] = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &times[r], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  }
  qsort(times, 20, sizeof(double), CmpDouble);
  if (rank == 0) {
    double p    = size;
    double ring = 2 * (p - 1) / p * bytes / beta + 2 * (p - 1) * a8;
    printf("fit alpha_us %.2f beta_MB_per_s %.1f\n", 1e6 * a8, beta / 1e6);
    printf("allreduce %d %ld %.3f %.3f %.3f\n", size, bytes, 1e3 * times[0], 1e3 * times[10], 1e3 * ring);
  }
  free(in);
  free(out);
  MPI_Finalize();
  return 0;
}
