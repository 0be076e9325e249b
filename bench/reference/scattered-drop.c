// What dropping scattered pages costs, one madvise(MADV_DONTNEED) a page against one process_madvise over
// many: each call that unmaps pages flushes the TLB on every CPU the process runs on, an IPI to the other
// CPU, and the kernel (6.16 on) flushes once for a whole process_madvise vector. A pager evicting the
// pages of a pointer-chasing or key-value workload drops pages that lie nowhere near each other.
//
// Each round writes every page of a 32 MiB area (4 KiB pages, no huge pages), then drops 2,048 of them
// in shuffled order, while a second thread keeps reading the area on another CPU so that the flushes
// are real shootdowns. Modes alternate round by round:
//   each     madvise per page
//   batched  process_madvise(pidfd of this process, --batch pages a call, MADV_DONTNEED)
// Usage: scattered-drop [--rounds 5] [--batch 256]
// Prints one JSON line: µs per dropped page per round and their medians. process_madvise with
// MADV_DONTNEED on one's own process needs Linux 6.13; where it is refused, 'batched' says why.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "reference.h"

#define PAGE 4096UL
#define PAGES 8192
#define DROPS 2048
#define MAX_ROUNDS 64

static char *area;
static volatile int stop;
static volatile long sink;

// The application: reads one word of every 64th page, round and round.
static void *reader(void *unused) {
  (void)unused;
  long sum = 0;
  while (!stop)
    for (unsigned long p = 0; p < PAGES; p += 64) sum += area[p * PAGE];
  sink = sum;
  return NULL;
}

static void print_rounds(const char *name, double *v, int n) {
  printf("\"%s\":{\"usPerPage\":[", name);
  for (int i = 0; i < n; i++) printf("%s%.2f", i ? "," : "", v[i]);
  printf("],\"medianUsPerPage\":%.2f}", median(v, n));
}

int main(int argc, char **argv) {
  int rounds = 5, batch = 256;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "usage: scattered-drop [--rounds 5] [--batch 256]\n");
      return 2;
    }
  }
  if (rounds < 1 || rounds > MAX_ROUNDS || batch < 1 || batch > 1024 || DROPS % batch != 0) {
    fprintf(stderr, "scattered-drop: --rounds 1..%d, --batch 1..1024 dividing %d\n", MAX_ROUNDS, DROPS);
    return 2;
  }
  area = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (area == MAP_FAILED) die("mmap");
  madvise(area, PAGES * PAGE, MADV_NOHUGEPAGE);
  int order[PAGES];
  for (int i = 0; i < PAGES; i++) order[i] = i;
  srand(1);
  for (int i = PAGES - 1; i > 0; i--) {
    int j = rand() % (i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
  const char *refused = pidfd < 0 ? strerror(errno) : NULL;
  struct iovec iov[1024];
  double each[MAX_ROUNDS], batched[MAX_ROUNDS];
  memset(area, 1, PAGES * PAGE);
  pthread_t thread;
  if (pthread_create(&thread, NULL, reader, NULL) != 0) die("pthread_create");
  for (int r = 0; r < rounds; r++) {
    for (int mode = 0; mode < 2; mode++) {
      memset(area, 1, PAGES * PAGE);
      double t0 = now();
      if (mode == 0) {
        for (int i = 0; i < DROPS; i++)
          if (madvise(area + order[i] * PAGE, PAGE, MADV_DONTNEED) != 0) die("madvise");
      } else if (!refused) {
        for (int i = 0; i < DROPS; i += batch) {
          for (int k = 0; k < batch; k++) iov[k] = (struct iovec){area + order[i + k] * PAGE, PAGE};
          if (syscall(SYS_process_madvise, pidfd, iov, batch, MADV_DONTNEED, 0) < 0) {
            refused = strerror(errno);
            break;
          }
        }
      }
      (mode == 0 ? each : batched)[r] = (now() - t0) * 1e6 / DROPS;
    }
  }
  stop = 1;
  pthread_join(thread, NULL);
  printf("{\"bench\":\"scattered-drop\",\"pages\":%d,\"batch\":%d,", DROPS, batch);
  print_rounds("each", each, rounds);
  printf(",");
  if (refused) printf("\"batched\":{\"refused\":\"%s\"}", refused);
  else print_rounds("batched", batched, rounds);
  printf("}\n");
  return 0;
}
