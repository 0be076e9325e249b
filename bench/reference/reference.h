// What the reference microbenchmarks share: failing with the errno, a monotonic clock, a median.
#ifndef FARMEM_BENCH_REFERENCE_H_
#define FARMEM_BENCH_REFERENCE_H_

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// Needs _GNU_SOURCE (program_invocation_short_name), which every program here defines first.
static inline void die(const char *what) {
  fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, strerror(errno));
  exit(1);
}

static inline double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static inline int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

// The median of n > 0 values, which stay as they are.
static inline double median(const double *values, int n) {
  double sorted[n];
  memcpy(sorted, values, n * sizeof(double));
  qsort(sorted, n, sizeof(double), compare_doubles);
  return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

#endif  // FARMEM_BENCH_REFERENCE_H_
