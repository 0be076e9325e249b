// Per-page kernel cost of landing a page in a userfaultfd region and evicting it again, by method.
// It answers one question: how much of a streaming pager's kernel time could recycling pages with
// UFFDIO_MOVE save over UFFDIO_COPY + MADV_DONTNEED (farmem's path), and what dirty tracking costs on top.
//
// Every mode streams the same way: land `chunk` pages at a time into a 128 MiB region and evict the
// chunk `window` pages behind, so 32 MiB stay resident, for `laps` laps (the first is not timed).
// A second thread spins in the same process on the other CPU, as the application does, so that every
// TLB flush is a real shootdown. Modes:
//   copy       UFFDIO_COPY with MODE_WP from a buffer, then MADV_DONTNEED: farmem's path today.
//   move       memcpy into a recycled page, UFFDIO_MOVE it in; UFFDIO_MOVE evicted pages out to be
//              recycled. No dirty tracking at all: the floor of the recycling path, not a usable pager.
//   move-wp    move, then UFFDIO_WRITEPROTECT the landed range. Shown for its cost only: a write
//              between the move and the write-protect is never seen (UFFDIO_MOVE installs a writable
//              PTE and does not carry the uffd-wp bit), so a pager built this way loses writes.
//   move-hash  move, plus a 64-bit hash of each page as it lands (fused with the copy) and again after
//              it is moved out: content-based dirty detection, which has no such race.
// Usage: page-cycle [--mode copy|move|move-wp|move-hash] [--chunk 128] [--laps 6]
// Prints one JSON line. Needs root (or vm.unprivileged_userfaultfd=1); the move modes need UFFDIO_MOVE (Linux 6.8).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
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
#define REGION_PAGES 32768UL // 128 MiB
#define WINDOW_PAGES 8192UL  // 32 MiB resident

enum mode { COPY, MOVE, MOVE_WP, MOVE_HASH };
static const char *const MODE_NAMES[] = {"copy", "move", "move-wp", "move-hash"};

static int uffd;
static atomic_int stop_spinning;
static volatile uint64_t hash_sink;

// The other CPU: keeps this mm live there, as the application thread would.
static void *spin(void *unused) {
  (void)unused;
  volatile uint64_t n = 0;
  while (!atomic_load_explicit(&stop_spinning, memory_order_relaxed)) n++;
  return NULL;
}

static uint64_t mix(uint64_t h, uint64_t w) { return (h ^ w) * 0x9e3779b97f4a7c15ULL; }

// Four independent lanes so the multiplies overlap.
static uint64_t hash_page(const uint64_t *w) {
  uint64_t a = 1, b = 2, c = 3, d = 4;
  for (size_t i = 0; i < PAGE / 8; i += 4) {
    a = mix(a, w[i]);
    b = mix(b, w[i + 1]);
    c = mix(c, w[i + 2]);
    d = mix(d, w[i + 3]);
  }
  return mix(mix(mix(a, b), c), d);
}

// Copies one page and hashes it on the way, reading the source once.
static uint64_t copy_and_hash(uint64_t *dst, const uint64_t *src) {
  uint64_t a = 1, b = 2, c = 3, d = 4;
  for (size_t i = 0; i < PAGE / 8; i += 4) {
    uint64_t w0 = src[i], w1 = src[i + 1], w2 = src[i + 2], w3 = src[i + 3];
    dst[i] = w0, dst[i + 1] = w1, dst[i + 2] = w2, dst[i + 3] = w3;
    a = mix(a, w0), b = mix(b, w1), c = mix(c, w2), d = mix(d, w3);
  }
  return mix(mix(mix(a, b), c), d);
}

static void ioctl_or_die(unsigned long request, void *arg, const char *what) {
  if (ioctl(uffd, request, arg) != 0) die(what);
}

static void register_range(void *base, size_t bytes, __u64 mode) {
  struct uffdio_register reg = {.range = {(uintptr_t)base, bytes}, .mode = mode};
  ioctl_or_die(UFFDIO_REGISTER, &reg, "UFFDIO_REGISTER");
}

static void move_pages(void *dst, void *src, size_t bytes, __u64 mode) {
  struct uffdio_move m = {.dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = bytes, .mode = mode};
  if (ioctl(uffd, UFFDIO_MOVE, &m) != 0 || m.move != (__s64)bytes) die("UFFDIO_MOVE");
}

int main(int argc, char **argv) {
  enum mode mode = COPY;
  size_t chunk = 128, laps = 6;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
      const char *m = argv[++i];
      size_t k = 0;
      while (k < 4 && strcmp(m, MODE_NAMES[k])) k++;
      if (k == 4) {
        fprintf(stderr, "page-cycle: --mode %s: expected copy, move, move-wp or move-hash\n", m);
        return 2;
      }
      mode = (enum mode)k;
    } else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) {
      chunk = strtoul(argv[++i], NULL, 10);
    } else if (!strcmp(argv[i], "--laps") && i + 1 < argc) {
      laps = strtoul(argv[++i], NULL, 10);
    } else {
      fprintf(stderr, "usage: page-cycle [--mode copy|move|move-wp|move-hash] [--chunk 128] [--laps 6]\n");
      return 2;
    }
  }
  if (chunk == 0 || WINDOW_PAGES % chunk != 0 || laps < 2) {
    fprintf(stderr, "page-cycle: --chunk must divide %lu pages and --laps be at least 2\n", WINDOW_PAGES);
    return 2;
  }

  uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0) die("userfaultfd (run as root, or set vm.unprivileged_userfaultfd=1)");
  // Every mode registers the region for write-protect faults, as farmem does.
  struct uffdio_api api = {.api = UFFD_API,
                           .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | (mode == COPY ? 0 : UFFD_FEATURE_MOVE)};
  if (ioctl(uffd, UFFDIO_API, &api) != 0) die("UFFDIO_API (UFFDIO_MOVE needs Linux 6.8)");

  char *region = mmap(NULL, REGION_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  // The recycled pages: `chunk` of them, moved out of the region and back in over and over.
  char *spare = mmap(NULL, chunk * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint64_t *source = aligned_alloc(PAGE, chunk * PAGE);
  uint64_t *hashes = calloc(REGION_PAGES, sizeof *hashes);
  if (region == MAP_FAILED || spare == MAP_FAILED || !source || !hashes) die("allocating");
  madvise(region, REGION_PAGES * PAGE, MADV_NOHUGEPAGE);
  madvise(spare, chunk * PAGE, MADV_NOHUGEPAGE);
  for (size_t i = 0; i < chunk * PAGE / 8; i++) source[i] = i * 0x2545f4914f6cdd1dULL;
  register_range(region, REGION_PAGES * PAGE, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
  // UFFDIO_MOVE wants its destination registered with this uffd, so the spare pages are too. WP mode
  // only: a touch of an empty spare page is then an ordinary fault, never a userfault.
  if (mode != COPY) register_range(spare, chunk * PAGE, UFFDIO_REGISTER_MODE_WP);

  pthread_t spinner;
  pthread_create(&spinner, NULL, spin, NULL);
  double started = 0;
  for (size_t lap = 0; lap < laps; lap++) {
    if (lap == 1) started = now();
    for (size_t page = 0; page < REGION_PAGES; page += chunk) {
      char *land = region + page * PAGE;
      if (mode == COPY) {
        struct uffdio_copy c = {.dst = (uintptr_t)land, .src = (uintptr_t)source, .len = chunk * PAGE, .mode = UFFDIO_COPY_MODE_WP};
        ioctl_or_die(UFFDIO_COPY, &c, "UFFDIO_COPY");
      } else {
        if (mode == MOVE_HASH) {
          for (size_t k = 0; k < chunk; k++)
            hashes[page + k] = copy_and_hash((uint64_t *)(spare + k * PAGE), source + k * PAGE / 8);
        } else {
          memcpy(spare, source, chunk * PAGE);
        }
        move_pages(land, spare, chunk * PAGE, 0);
        if (mode == MOVE_WP) {
          struct uffdio_writeprotect wp = {.range = {(uintptr_t)land, chunk * PAGE}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
          ioctl_or_die(UFFDIO_WRITEPROTECT, &wp, "UFFDIO_WRITEPROTECT");
        }
      }
      if (lap == 0 && page < WINDOW_PAGES) continue; // still filling the window
      size_t victim = (page + REGION_PAGES - WINDOW_PAGES) % REGION_PAGES;
      char *evict = region + victim * PAGE;
      if (mode == COPY) {
        if (madvise(evict, chunk * PAGE, MADV_DONTNEED) != 0) die("MADV_DONTNEED");
      } else {
        move_pages(spare, evict, chunk * PAGE, UFFDIO_MOVE_MODE_DONTWAKE);
        if (mode == MOVE_HASH) {
          uint64_t changed = 0;
          for (size_t k = 0; k < chunk; k++) changed += hash_page((const uint64_t *)(spare + k * PAGE)) != hashes[victim + k];
          hash_sink += changed;
        }
      }
    }
  }
  double seconds = now() - started;
  atomic_store(&stop_spinning, 1);
  pthread_join(spinner, NULL);
  double pages = (double)(laps - 1) * REGION_PAGES;
  printf("{\"mode\":\"%s\",\"chunkPages\":%zu,\"pages\":%.0f,\"usPerPage\":%.3f,\"gbPerSec\":%.2f}\n", MODE_NAMES[mode], chunk,
         pages, seconds / pages * 1e6, pages * PAGE / seconds / 1e9);
  return 0;
}
