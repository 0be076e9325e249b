// UFFDIO_MOVE (Linux 6.8) for the reference programs, where the installed uapi headers lack it.
#ifndef FARMEM_BENCH_UFFD_MOVE_H_
#define FARMEM_BENCH_UFFD_MOVE_H_

#include <linux/userfaultfd.h>

#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
struct uffdio_move {
  __u64 dst, src, len, mode;
  __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif
#ifndef UFFDIO_MOVE_MODE_DONTWAKE
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#endif

#endif  // FARMEM_BENCH_UFFD_MOVE_H_
