// What a page costs from landing to the application's first read of it, by how it lands. Measured
// because in some VMs (shadow paging: this project's PVM guest) the first touch of a newly mapped 4 KiB
// page costs microseconds, which no kernel profile of the pager shows: it is charged to the reader.
//
// Each round lands 128 MiB in a userfaultfd region, has a second thread (the application) read one word
// of every 64 bytes twice, then drops it all. Modes:
//   copy   UFFDIO_COPY with MODE_WP, 128 pages per ioctl: farmem's page-by-page path.
//   huge   per 2 MiB: memcpy into a staging area backed by a transparent huge page, UFFDIO_MOVE it in,
//          UFFDIO_WRITEPROTECT it: the hugePages path (with --compare 1, also its compare of each page
//          with the source, which catches a write that raced the move).
//   hugetlb  per 2 MiB: one UFFDIO_COPY with MODE_WP into a hugetlb mapping (MAP_HUGETLB): what a
//          region backed by reserved huge pages would do. Not a farmem path; measured to see what one
//          would save. Needs 64 free 2 MiB pages in the pool (vm.nr_hugepages).
// Usage: first-touch [--mode copy|huge|hugetlb] [--compare 0|1] [--rounds 5]
// Prints one JSON line: per round and as medians, µs per 4 KiB page to land, to read the first time,
// to read again, and to drop. Needs root (or vm.unprivileged_userfaultfd=1); huge needs UFFDIO_MOVE
// (Linux 6.8) and transparent huge pages ('madvise' or 'always'); hugetlb needs write protection on
// hugetlb (Linux 5.19).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "reference.h"
#include "uffd-move.h"

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define REGION (128UL << 20)
#define MAX_ROUNDS 64

static char *region;
static volatile double sink;

static char *aligned_map(size_t length) {
  char *raw = mmap(NULL, length + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) die("mmap");
  return (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
}

// The application thread: one read of every cache line, so each page is touched once per pass.
static void *read_region(void *unused) {
  (void)unused;
  double sum = 0;
  for (size_t i = 0; i < REGION; i += 64) sum += region[i];
  sink = sum;
  return NULL;
}

static double timed_read(void) {
  pthread_t reader;
  double start = now();
  if (pthread_create(&reader, NULL, read_region, NULL) != 0) die("pthread_create");
  pthread_join(reader, NULL);
  return now() - start;
}

int main(int argc, char **argv) {
  const char *mode = "copy";
  int rounds = 5, compare = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
    else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--compare")) compare = atoi(argv[i + 1]);
  }
  const int huge = !strcmp(mode, "huge"), hugetlb = !strcmp(mode, "hugetlb");
  if (!huge && !hugetlb && strcmp(mode, "copy")) {
    fprintf(stderr, "first-touch: --mode is copy, huge or hugetlb, got '%s'\n", mode);
    return 1;
  }
  if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 5;
  int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0) die("userfaultfd");
  struct uffdio_api api = {.api = UFFD_API,
                           .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | (huge ? UFFD_FEATURE_MOVE : 0) |
                                       (hugetlb ? UFFD_FEATURE_WP_HUGETLBFS_SHMEM : 0)};
  if (ioctl(uffd, UFFDIO_API, &api)) die("UFFDIO_API");
  if (hugetlb) {
    region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (region == MAP_FAILED) die("mmap(MAP_HUGETLB) (reserve pages first: sysctl vm.nr_hugepages=64)");
  } else {
    region = aligned_map(REGION);
  }
  char *staging = aligned_map(HUGE);
  // As farmem maps regions: no huge page unless moved in.
  if (!hugetlb) madvise(region, REGION, MADV_NOHUGEPAGE);
  madvise(staging, HUGE, MADV_HUGEPAGE);
  struct uffdio_register reg = {.range = {(uintptr_t)region, REGION}, .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg)) die("UFFDIO_REGISTER");
  char *source = aligned_map(HUGE);
  memset(source, 1, HUGE);

  size_t changed = 0;  // pages the compare found unlike their source: none, with no other thread writing
  double land[MAX_ROUNDS], first[MAX_ROUNDS], again[MAX_ROUNDS], drop[MAX_ROUNDS];
  const double pages = REGION / PAGE;
  for (int r = 0; r < rounds; r++) {
    double start = now();
    for (size_t off = 0; off < REGION; off += HUGE) {
      if (hugetlb) {
        struct uffdio_copy copy = {.dst = (uintptr_t)region + off, .src = (uintptr_t)source, .len = HUGE, .mode = UFFDIO_COPY_MODE_WP};
        if (ioctl(uffd, UFFDIO_COPY, &copy)) die("UFFDIO_COPY (hugetlb)");
        continue;
      }
      if (!huge) {
        for (size_t o = 0; o < HUGE; o += 128 * PAGE) {
          struct uffdio_copy copy = {.dst = (uintptr_t)region + off + o, .src = (uintptr_t)source + o, .len = 128 * PAGE, .mode = UFFDIO_COPY_MODE_WP};
          if (ioctl(uffd, UFFDIO_COPY, &copy)) die("UFFDIO_COPY");
        }
        continue;
      }
      madvise(staging, HUGE, MADV_DONTNEED); // frees a page table a fallback left, so a huge page fits
      memcpy(staging, source, HUGE);
      struct uffdio_move move = {.dst = (uintptr_t)region + off, .src = (uintptr_t)staging, .len = HUGE};
      if (ioctl(uffd, UFFDIO_MOVE, &move)) die("UFFDIO_MOVE");
      struct uffdio_writeprotect wp = {.range = {(uintptr_t)region + off, HUGE}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
      if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp)) die("UFFDIO_WRITEPROTECT");
      for (size_t o = 0; compare && o < HUGE; o += PAGE) changed += memcmp(region + off + o, source + o, PAGE) != 0;
    }
    land[r] = (now() - start) / pages * 1e6;
    first[r] = timed_read() / pages * 1e6;
    again[r] = timed_read() / pages * 1e6;
    start = now();
    if (madvise(region, REGION, MADV_DONTNEED)) die("madvise");
    drop[r] = (now() - start) / pages * 1e6;
  }
  if (changed != 0) fprintf(stderr, "first-touch: %zu pages differed from their source\n", changed);
  printf("{\"mode\":\"%s\",\"compare\":%s,\"rounds\":%d,\"usPerPage\":{\"land\":%.3f,\"firstRead\":%.3f,\"readAgain\":%.3f,\"drop\":%.3f},\"perRound\":[",
         mode, huge && compare ? "true" : "false", rounds, median(land, rounds), median(first, rounds), median(again, rounds), median(drop, rounds));
  for (int r = 0; r < rounds; r++) {
    printf("%s{\"land\":%.3f,\"firstRead\":%.3f,\"readAgain\":%.3f,\"drop\":%.3f}", r ? "," : "", land[r], first[r], again[r], drop[r]);
  }
  printf("]}\n");
  return 0;
}
