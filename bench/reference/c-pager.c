// c-pager: the minimal userfaultfd pager that farmem's TypeScript pager is measured against.
// One handler thread, one blocking TCP socket, one fault at a time, no batching or pipelining.
// It speaks farmem's wire protocol (docs/protocol.md) to a real memory node.
//
//   c-pager --host 127.0.0.1 --port P [--token T] --pages N --mode demand|seq
//           [--readahead 128] [--samples 20000] [--passes 1]
//
// Prints one line of JSON on stdout; errors go to stderr with exit status 1.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define HDR 16u
#define PREFIX 32u             // header + 16-byte body prefix of READ_OK and WRITE
#define MAX_PAGES 1024u        // the node's default frame limit holds 1024 pages
#define WRITE_BATCH 256u
enum { HELLO = 0x01, HELLO_OK = 0x81, ALLOC = 0x02, ALLOC_OK = 0x82, READ = 0x04, READ_OK = 0x84,
       WRITE = 0x05, WRITE_OK = 0x85, BYE = 0x08, BYE_OK = 0x88, ERROR = 0x7f };

static int sock, uffd;
static uint32_t region_id, next_req = 1;
static uint64_t npages, window = 1;  // pages per READ: 1 (demand) or the readahead (seq)
static char *area;              // the userfaultfd-registered mapping
static uint8_t *installed;      // one byte per page: already UFFDIO_COPY'd into `area`
static uint8_t *rbuf;           // receive buffer; its page data (rbuf + PREFIX) is page-aligned
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;  // handler vs. main thread resetting a pass

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("c-pager: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }  // x86/arm64 are little-endian already
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

// Writes a header with a fresh request id and returns that id.
static uint32_t header(uint8_t *p, uint32_t len, uint8_t type, uint32_t region) {
  uint32_t id = next_req++;
  put32(p, len); p[4] = type; p[5] = 0; put16(p + 6, 0); put32(p + 8, id); put32(p + 12, region);
  return id;
}

static void send_all(const void *buf, size_t len) {
  for (const char *p = buf; len > 0;) {
    ssize_t n = send(sock, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("send: %s", n < 0 ? strerror(errno) : "connection closed");
    p += n; len -= (size_t)n;
  }
}

static void recv_all(void *buf, size_t len) {
  for (char *p = buf; len > 0;) {
    ssize_t n = recv(sock, p, len, MSG_WAITALL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("recv: %s", strerror(errno));
    if (n == 0) die("the memory node closed the connection");
    p += n; len -= (size_t)n;
  }
}

// Receives one whole frame into buf (cap bytes). An ERROR frame, or any other type than `want`, is fatal.
static uint32_t recv_frame(uint8_t *buf, size_t cap, uint8_t want, uint32_t req) {
  recv_all(buf, HDR);
  uint32_t len = get32(buf);
  if (buf[4] == ERROR && len >= HDR + 4 && len <= HDR + 4 + 0xffff) {  // may not fit buf: read it apart
    uint8_t *e = malloc(len - HDR);
    if (!e) die("out of memory");
    recv_all(e, len - HDR);
    uint16_t code = get16(e), mlen = get16(e + 2);
    if (mlen > len - HDR - 4) mlen = (uint16_t)(len - HDR - 4);
    die("node ERROR %u: %.*s", code, (int)mlen, (const char *)e + 4);
  }
  if (len < HDR || len > cap) die("bad frame length %u (type 0x%02x) from the node", len, buf[4]);
  recv_all(buf + HDR, len - HDR);
  if (buf[4] != want || get32(buf + 8) != req) die("expected frame type 0x%02x for request %u, got 0x%02x for %u",
                                                   want, req, buf[4], get32(buf + 8));
  return len;
}

static void connect_node(const char *host, int port, const char *token) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("--host must be an IPv4 address, got '%s'", host);
  if ((sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) die("socket: %s", strerror(errno));
  if (connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect %s:%d: %s", host, port, strerror(errno));
  int one = 1;  // a 28-byte READ must leave at once, not wait for Nagle
  if (setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY: %s", strerror(errno));

  size_t tlen = strlen(token);
  if (tlen > 0xffff) die("--token is too long");
  uint8_t *f = malloc(HDR + 24 + tlen), r[128];
  if (!f) die("out of memory");
  uint32_t id = header(f, (uint32_t)(HDR + 24 + tlen), HELLO, 0);
  put32(f + 16, 0x4D454D46); put16(f + 20, 1); put16(f + 22, (uint16_t)tlen);
  if (getrandom(f + 24, 16, 0) != 16) die("getrandom: %s", strerror(errno));  // a fresh namespace
  memcpy(f + 40, token, tlen);
  send_all(f, HDR + 24 + tlen);
  free(f);
  if (recv_frame(r, sizeof r, HELLO_OK, id) != HDR + 40) die("HELLO_OK has the wrong length");
  if (get32(r + 20) != PAGE) die("node page size is %u, not %u", get32(r + 20), PAGE);
  uint32_t need = PREFIX + (uint32_t)(window > WRITE_BATCH ? window : WRITE_BATCH) * PAGE;
  if (get32(r + 24) < need) die("node frame limit %u is below the %u bytes needed", get32(r + 24), need);

  uint8_t a[HDR + 16];  // ALLOC the region with all of it reserved; the id comes back in the header
  id = header(a, sizeof a, ALLOC, 0);
  put64(a + 16, npages); put64(a + 24, npages);
  send_all(a, sizeof a);
  recv_frame(r, sizeof r, ALLOC_OK, id);
  region_id = get32(r + 12);
}

// Fills the remote region: word i of page p holds p*512+i, so every word is checkable and nonzero but one.
static void fill_region(void) {
  uint8_t *f = malloc(PREFIX + WRITE_BATCH * PAGE), r[64];
  if (!f) die("out of memory");
  for (uint64_t first = 0; first < npages; first += WRITE_BATCH) {
    uint32_t count = (uint32_t)(npages - first < WRITE_BATCH ? npages - first : WRITE_BATCH);
    uint32_t id = header(f, PREFIX + count * PAGE, WRITE, region_id);
    put64(f + 16, first); put32(f + 24, count); put32(f + 28, 0);
    uint64_t *w = (uint64_t *)(f + PREFIX);
    for (uint64_t i = 0; i < (uint64_t)count * 512; i++) w[i] = first * 512 + i;
    send_all(f, PREFIX + count * PAGE);
    recv_frame(r, sizeof r, WRITE_OK, id);
  }
  free(f);
}

// Installs pages [first, first+count) from src, waking the faulting thread. EEXIST means a page is there
// already (the kernel stops at it): mark it and go on past it.
static void copy_run(uint64_t first, uint64_t count, const uint8_t *src) {
  uint64_t done = 0;
  while (done < count) {
    struct uffdio_copy c = {.dst = (uintptr_t)area + (first + done) * PAGE, .src = (uintptr_t)src + done * PAGE,
                            .len = (count - done) * PAGE, .mode = 0};
    if (ioctl(uffd, UFFDIO_COPY, &c) == 0) { done = count; break; }
    if (errno == EAGAIN && c.copy > 0) done += (uint64_t)c.copy / PAGE;      // partial: retry the rest
    else if (errno == EEXIST) { installed[first + done] = 1; done++; }     // skip the present page
    else die("UFFDIO_COPY: %s", strerror(errno));
  }
  memset(installed + first, 1, count);
}

// The pager: one fault at a time, fetched with one blocking READ, installed before the next is read.
static void *handler(void *unused) {
  (void)unused;
  uint8_t req[HDR + 12];
  struct pollfd pfd = {.fd = uffd, .events = POLLIN};
  for (;;) {
    int pr = poll(&pfd, 1, -1);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) die("poll: %s", strerror(errno));
    if (pfd.revents & (POLLERR | POLLHUP)) die("userfaultfd poll error");
    struct uffd_msg msg;
    ssize_t n = read(uffd, &msg, sizeof msg);  // ONE message: no batching
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n != sizeof msg) die("read userfaultfd: %s", n < 0 ? strerror(errno) : "short read");
    if (msg.event != UFFD_EVENT_PAGEFAULT) die("unexpected userfaultfd event 0x%x", msg.event);

    uint64_t page = (msg.arg.pagefault.address - (uintptr_t)area) / PAGE;
    uint64_t count = npages - page < window ? npages - page : window;
    pthread_mutex_lock(&lock);
    if (installed[page]) {  // raced with an earlier copy: just wake the thread
      struct uffdio_range rg = {.start = (uintptr_t)area + page * PAGE, .len = PAGE};
      if (ioctl(uffd, UFFDIO_WAKE, &rg) < 0) die("UFFDIO_WAKE: %s", strerror(errno));
      pthread_mutex_unlock(&lock);
      continue;
    }
    // Synchronous readahead: read the whole window, page included, then install its missing runs.
    uint32_t id = header(req, sizeof req, READ, region_id);
    put64(req + 16, page); put32(req + 24, (uint32_t)count);
    send_all(req, sizeof req);
    uint32_t len = recv_frame(rbuf, PREFIX + MAX_PAGES * PAGE, READ_OK, id);
    if (len != PREFIX + count * PAGE || get64(rbuf + 16) != page || get32(rbuf + 24) != count)
      die("READ_OK does not match READ of %u pages at %llu", (unsigned)count, (unsigned long long)page);
    for (uint64_t i = 0; i < count;) {
      if (installed[page + i]) { i++; continue; }
      uint64_t j = i;
      while (j < count && !installed[page + j]) j++;
      copy_run(page + i, j - i, rbuf + PREFIX + i * PAGE);
      i = j;
    }
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

static void setup_uffd(void) {
  area = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (area == MAP_FAILED) die("mmap %llu pages: %s", (unsigned long long)npages, strerror(errno));
  // O_NONBLOCK: the kernel answers poll() on a blocking userfaultfd with POLLERR.
  uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0 && errno == EPERM)  // vm.unprivileged_userfaultfd=0: user-mode faults are all we need
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (uffd < 0) die("userfaultfd: %s", strerror(errno));
  struct uffdio_api api = {.api = UFFD_API, .features = 0};
  if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API: %s", strerror(errno));
  struct uffdio_register reg = {.range = {.start = (uintptr_t)area, .len = npages * PAGE},
                                .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER: %s", strerror(errno));
  if (!(reg.ioctls & (1ULL << _UFFDIO_COPY))) die("UFFDIO_COPY is not available on this range");
  installed = calloc(npages, 1);
  // +PAGE-PREFIX: the page data of a READ_OK lands page-aligned.
  uint8_t *base = aligned_alloc(PAGE, PAGE + MAX_PAGES * PAGE);
  if (!installed || !base) die("out of memory");
  rbuf = base + PAGE - PREFIX;
  pthread_t t;
  int e = pthread_create(&t, NULL, handler, NULL);
  if (e) die("pthread_create: %s", strerror(e));
}

static double now(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) die("clock_gettime: %s", strerror(errno));
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;  // fixed seed: every run touches the same pages in the same order
static uint64_t xorshift(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void run_demand(uint64_t samples) {
  uint64_t *order = malloc(npages * sizeof *order);
  double *us = malloc(samples * sizeof *us);
  if (!order || !us) die("out of memory");
  for (uint64_t i = 0; i < npages; i++) order[i] = i;
  for (uint64_t i = npages - 1; i > 0; i--) {  // Fisher-Yates: the first `samples` are distinct pages
    uint64_t j = xorshift() % (i + 1), t = order[i];
    order[i] = order[j]; order[j] = t;
  }
  double sum = 0;
  for (uint64_t i = 0; i < samples; i++) {
    uint64_t p = order[i];
    volatile uint64_t *w = (volatile uint64_t *)(area + p * PAGE) + 1;  // word 1: never 0, unlike a zero page
    double t0 = now();
    uint64_t v = *w;  // the demand fault
    us[i] = (now() - t0) * 1e6;
    if (v != p * 512 + 1) die("page %llu word 1 is %llu, expected %llu", (unsigned long long)p,
                              (unsigned long long)v, (unsigned long long)(p * 512 + 1));
    sum += us[i];
  }
  qsort(us, samples, sizeof *us, cmp_double);
  uint64_t p99 = (samples * 99 + 99) / 100 - 1;  // nearest rank: ceil(0.99 K) - 1
  printf("{\"mode\":\"demand\",\"pages\":%llu,\"samples\":%llu,\"p50Us\":%.2f,\"p99Us\":%.2f,\"meanUs\":%.2f}\n",
         (unsigned long long)npages, (unsigned long long)samples, us[samples / 2], us[p99], sum / (double)samples);
  free(order); free(us);
}

static void run_seq(int passes) {
  uint64_t words = npages * 512, expect = words % 2 ? words * ((words - 1) / 2) : (words / 2) * (words - 1);
  double *gb = malloc((size_t)passes * sizeof *gb), *sorted = malloc((size_t)passes * sizeof *sorted);
  if (!gb || !sorted) die("out of memory");
  for (int r = 0; r < passes; r++) {
    if (r > 0) {  // a fresh region: drop every page so the next pass faults them all again
      pthread_mutex_lock(&lock);
      if (madvise(area, npages * PAGE, MADV_DONTNEED) < 0) die("madvise: %s", strerror(errno));
      memset(installed, 0, npages);
      pthread_mutex_unlock(&lock);
    }
    const uint64_t *w = (const uint64_t *)area;
    uint64_t sum = 0;
    double t0 = now();
    for (uint64_t i = 0; i < words; i++) sum += w[i];  // a real scan: every word, like summing a BigUint64Array
    double secs = now() - t0;
    if (sum != expect) die("pass %d: sum %llu, expected %llu", r, (unsigned long long)sum, (unsigned long long)expect);
    gb[r] = sorted[r] = (double)(npages * PAGE) / secs / 1e9;
  }
  qsort(sorted, (size_t)passes, sizeof *sorted, cmp_double);
  double median = passes % 2 ? sorted[passes / 2] : (sorted[passes / 2 - 1] + sorted[passes / 2]) / 2;
  printf("{\"mode\":\"seq\",\"pages\":%llu,\"readahead\":%llu,\"gbPerSec\":%.3f,\"passesGbPerSec\":[",
         (unsigned long long)npages, (unsigned long long)window, median);
  for (int r = 0; r < passes; r++) printf("%s%.3f", r ? "," : "", gb[r]);
  printf("]}\n");
  free(gb); free(sorted);
}

static uint64_t parse_u64(const char *name, const char *s) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-') die("%s must be a non-negative integer, got '%s'", name, s);
  return v;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *token = "", *mode = NULL;
  uint64_t port = 0, samples = 20000, passes = 1, ra = 128;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) die("%s needs a value (usage: see the top of c-pager.c)", a);
    const char *v = argv[++i];
    if (!strcmp(a, "--host")) host = v;
    else if (!strcmp(a, "--port")) port = parse_u64(a, v);
    else if (!strcmp(a, "--token")) token = v;
    else if (!strcmp(a, "--pages")) npages = parse_u64(a, v);
    else if (!strcmp(a, "--mode")) mode = v;
    else if (!strcmp(a, "--readahead")) ra = parse_u64(a, v);
    else if (!strcmp(a, "--samples")) samples = parse_u64(a, v);
    else if (!strcmp(a, "--passes")) passes = parse_u64(a, v);
    else die("unknown option %s", a);
  }
  if (port < 1 || port > 65535) die("--port must be 1..65535");
  if (npages < 1 || npages > (1ull << 31)) die("--pages must be 1..2^31");
  if (!mode || (strcmp(mode, "demand") && strcmp(mode, "seq"))) die("--mode must be demand or seq");
  int seq = !strcmp(mode, "seq");
  if (seq && (ra < 1 || ra > MAX_PAGES)) die("--readahead must be 1..%u", MAX_PAGES);
  if (passes < 1 || passes > 1000) die("--passes must be 1..1000");
  if (samples < 1) die("--samples must be at least 1");
  if (samples > npages) samples = npages;
  window = seq ? ra : 1;  // demand mode fetches exactly the faulting page

  connect_node(host, (int)port, token);
  fill_region();
  setup_uffd();
  if (seq) run_seq((int)passes);
  else run_demand(samples);
  fflush(stdout);

  uint8_t b[HDR], r[64];  // the handler is idle now: the socket is ours again
  uint32_t id = header(b, HDR, BYE, 0);
  send_all(b, HDR);
  recv_frame(r, sizeof r, BYE_OK, id);
  return 0;
}
