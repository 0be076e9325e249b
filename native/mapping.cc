// mmap'd regions, the process-wide registry of them, and the external
// ArrayBuffers through which JS reaches them. Any JS thread may call these.
#include "mapping.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "errors.h"

namespace farmem {
namespace {

struct Mapping {
  uint8_t* base;
  size_t length;  // what the caller asked for: the ArrayBuffers' byteLength
  size_t mapped;  // length rounded up to whole pages
  uint64_t owner;  // EnvId of the env that created it

  Mapping(uint8_t* b, size_t l, size_t m, uint64_t o) : base(b), length(l), mapped(m), owner(o) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  // Runs on whichever thread drops the last reference.
  ~Mapping();
};

using MappingRef = std::shared_ptr<Mapping>;

// The one process-wide structure: a mapping is created on one thread and
// attached, filled and dropped from others (the pager worker), so they need a
// common place to find it by address. Allocated once and never destroyed, so a
// thread still running during exit() never sees it torn down. No Mapping is
// ever destroyed while mu_ is held (~Mapping takes it).
class Registry {
 public:
  static Registry& Get() {
    static Registry* registry = new Registry();
    return *registry;
  }

  void Add(const MappingRef& mapping) {
    std::lock_guard<std::mutex> lock(mu_);
    const uintptr_t base = reinterpret_cast<uintptr_t>(mapping->base);
    live_[base] = mapping;
    mapped_[base] = mapping;
  }

  // The live (not released) mapping that starts at address, or null.
  MappingRef FindLive(uintptr_t address) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(address);
    return it == live_.end() ? nullptr : it->second;
  }

  // The mapping whose pages contain address, released or not, as long as it
  // is still mapped; or null.
  MappingRef FindMapped(uintptr_t address) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = mapped_.upper_bound(address);
    if (it == mapped_.begin()) return nullptr;
    --it;
    MappingRef mapping = it->second.lock();
    if (!mapping || address - it->first >= mapping->mapped) return nullptr;
    return mapping;
  }

  // Drops the registry's owning reference; the caller drops it outside the lock.
  MappingRef Release(uintptr_t address) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(address);
    if (it == live_.end()) return nullptr;
    MappingRef mapping = std::move(it->second);
    live_.erase(it);
    return mapping;
  }

  // Drops the registry's owning references to every mapping env `owner` created: that env is going away
  // and its JS can no longer free them. Buffers other threads attached keep theirs.
  std::vector<MappingRef> ReleaseOwnedBy(uint64_t owner) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<MappingRef> released;
    for (auto it = live_.begin(); it != live_.end();) {
      if (it->second->owner == owner) {
        released.push_back(std::move(it->second));
        it = live_.erase(it);
      } else {
        ++it;
      }
    }
    return released;
  }

  // Mappings made by mapCreate and not yet released, and those still mapped (released or not).
  std::pair<size_t, size_t> Counts() {
    std::lock_guard<std::mutex> lock(mu_);
    return {live_.size(), mapped_.size()};
  }

  // Called by ~Mapping before munmap, while no new mapping can take the address.
  void Forget(uintptr_t address) {
    std::lock_guard<std::mutex> lock(mu_);
    mapped_.erase(address);
  }

 private:
  std::mutex mu_;
  std::map<uintptr_t, MappingRef> live_;                  // mapCreate .. mapRelease
  std::map<uintptr_t, std::weak_ptr<Mapping>> mapped_;  // mapCreate .. munmap
};

Mapping::~Mapping() {
  Registry::Get().Forget(reinterpret_cast<uintptr_t>(base));
  munmap(base, mapped);
}

uint64_t PageSize() { return static_cast<uint64_t>(sysconf(_SC_PAGESIZE)); }

constexpr uint64_t kHugeAlign = 2u << 20;

// Each external ArrayBuffer holds one reference. Runs on the thread that owns
// the buffer (or during its env's teardown), possibly after the registry let go.
void FinalizeBuffer(napi_env /*env*/, void* /*data*/, void* hint) {
  delete static_cast<MappingRef*>(hint);
}

Napi::Value NewBuffer(Napi::Env env, const MappingRef& mapping) {
  auto* hold = new MappingRef(mapping);
  napi_value buffer;
  napi_status status =
      napi_create_external_arraybuffer(env, mapping->base, mapping->length, FinalizeBuffer, hold, &buffer);
  if (status == napi_ok) return Napi::Value(env, buffer);
  delete hold;
  if (status == napi_no_external_buffers_allowed) {
    ThrowCodeError(env, "FARMEM_UNSUPPORTED_PLATFORM",
                   "this Node.js build refuses external ArrayBuffers (V8 sandbox, as in Electron), so a "
                   "region cannot be exposed to JS; run farmem under plain Node.js");
  } else if (!env.IsExceptionPending()) {
    ThrowRangeError(env, "cannot create an ArrayBuffer of " + std::to_string(mapping->length) +
                             " bytes over the mapping at " + Hex(reinterpret_cast<uintptr_t>(mapping->base)));
  }
  return Napi::Value();
}

void ThrowFreed(Napi::Env env, uint64_t address) {
  ThrowCodeError(env, "FARMEM_REGION_FREED",
                 "no mapping at " + Hex(address) + ": it was released (or was not made by mapCreate)");
}

// A restricted env (a coffer's thread) reaches only the mappings it created: another coffer's region
// is refused even if its address is guessed. Throws and returns false when refused.
bool MayReach(Napi::Env env, const MappingRef& mapping) {
  if (EnvMayReach(env, mapping->owner)) return true;
  ThrowCodeError(env, "FARMEM_ISOLATION",
                 "the mapping at " + Hex(reinterpret_cast<uintptr_t>(mapping->base)) +
                     " belongs to another coffer: a coffer reaches only its own regions");
  return false;
}

// Maps the positive `size` that arg gives, in whole pages, aligned to kHugeAlign when at least that, so
// that each whole 2 MiB block can take a huge page. Sets *size and *mapped; returns nullptr with a JS
// exception pending on failure. `what` ends the mmap error's message.
uint8_t* MapSized(Napi::Env env, const Napi::Value& arg, const std::string& what, uint64_t* size, uint64_t* mapped) {
  if (!ToUint(env, arg, "size", size)) return nullptr;
  if (*size == 0) {
    ThrowRangeError(env, "size must be positive");
    return nullptr;
  }
  const uint64_t page = PageSize();
  *mapped = (*size + page - 1) / page * page;
  void* base = MapAligned(*mapped, *mapped >= kHugeAlign ? kHugeAlign : page);
  if (base == MAP_FAILED) {
    ThrowSyscallError(env, errno, "mmap", "cannot map " + std::to_string(*mapped) + " bytes" + what);
    return nullptr;
  }
  return static_cast<uint8_t*>(base);
}

// mapCreate(size) -> { address, buffer }
Napi::Value MapCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t size, mapped;
  // Aligned, so that moveIn can land whole blocks as huge pages.
  uint8_t* base = MapSized(env, info[0], "", &size, &mapped);
  if (base == nullptr) return Napi::Value();
  // The kernel must not fill a 4 KiB fault with a 2 MiB page of its own; huge pages come only by moveIn.
  if (madvise(base, mapped, MADV_NOHUGEPAGE) != 0) {
    int err = errno;
    munmap(base, mapped);
    ThrowSyscallError(env, err, "madvise(MADV_NOHUGEPAGE)",
                      "cannot set up the mapping at " + Hex(reinterpret_cast<uintptr_t>(base)));
    return Napi::Value();
  }
  auto mapping = std::make_shared<Mapping>(base, size, mapped, EnvId(env));
  Napi::Value buffer = NewBuffer(env, mapping);
  if (buffer.IsEmpty()) return Napi::Value();  // mapping's last reference goes here: munmap
  Registry::Get().Add(mapping);
  Napi::Object result = Napi::Object::New(env);
  if (result.Set("address", Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(base))))
          .IsNothing() ||
      result.Set("buffer", buffer).IsNothing()) {
    MappingRef released = Registry::Get().Release(reinterpret_cast<uintptr_t>(base));
    return Napi::Value();
  }
  return result;
}

// storageCreate(size) -> ArrayBuffer over a fresh anonymous mapping that transparent huge pages may back
// (MADV_HUGEPAGE): a memory node's page store. Its first write then faults once a 2 MiB page, not once a
// 4 KiB one, which costs microseconds each in a VM. Not a region: the registry does not hold it, and it
// is unmapped when the last ArrayBuffer over it is collected.
Napi::Value StorageCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t size, mapped;
  uint8_t* base = MapSized(env, info[0], " of page storage", &size, &mapped);
  if (base == nullptr) return Napi::Value();
  // Refused where the kernel has no transparent huge pages: small pages then, as any allocation gets.
  (void)madvise(base, mapped, MADV_HUGEPAGE);
  return NewBuffer(env, std::make_shared<Mapping>(base, size, mapped, EnvId(env)));
}

// mapAttach(address) -> ArrayBuffer over a live mapping.
Napi::Value MapAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t address;
  if (!ToUint(env, info[0], "address", &address)) return Napi::Value();
  MappingRef mapping = Registry::Get().FindLive(address);
  if (!mapping) {
    ThrowFreed(env, address);
    return Napi::Value();
  }
  if (!MayReach(env, mapping)) return Napi::Value();
  return NewBuffer(env, mapping);
}

// mapRelease(address, buffer?): detaches buffer, drops the registry's reference.
// Releasing an address the registry no longer holds is not an error, so
// teardown paths may call it freely.
Napi::Value MapRelease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t address;
  if (!ToUint(env, info[0], "address", &address)) return Napi::Value();
  if (EnvRestricted(env)) {
    MappingRef mapping = Registry::Get().FindLive(address);
    if (mapping && !MayReach(env, mapping)) return Napi::Value();
  }
  Napi::Value buffer = info[1];
  if (!buffer.IsUndefined()) {
    if (!buffer.IsArrayBuffer()) {
      ThrowTypeError(env, "buffer must be an ArrayBuffer (or undefined)");
      return Napi::Value();
    }
    Napi::ArrayBuffer ab = buffer.As<Napi::ArrayBuffer>();
    if (ab.ByteLength() != 0 && reinterpret_cast<uintptr_t>(ab.Data()) != address) {
      ThrowRangeError(env, "buffer is not over the mapping at " + Hex(address));
      return Napi::Value();
    }
    if (ab.ByteLength() != 0) {
      napi_status status = napi_detach_arraybuffer(env, ab);
      if (status != napi_ok) {
        if (!env.IsExceptionPending()) ThrowTypeError(env, "cannot detach the ArrayBuffer over " + Hex(address));
        return Napi::Value();
      }
    }
  }
  // Dropped outside the registry lock: this may munmap.
  MappingRef released = Registry::Get().Release(address);
  return env.Undefined();
}

// The still-mapped mapping holding [address, address + length), or null. A
// range that starts inside one mapping but runs past its end is a RangeError.
MappingRef FindRange(Napi::Env env, uint64_t address, uint64_t length, bool* range_error) {
  *range_error = false;
  MappingRef mapping = Registry::Get().FindMapped(address);
  if (!mapping) return nullptr;
  const uint64_t start = reinterpret_cast<uintptr_t>(mapping->base);
  if (address + length - start > mapping->mapped) {
    *range_error = true;
    ThrowRangeError(env, "range " + Hex(address) + "+" + std::to_string(length) +
                             " runs past the end of the mapping at " + Hex(start) + " (" +
                             std::to_string(mapping->mapped) + " bytes)");
    return nullptr;
  }
  return mapping;
}

// A range to drop, given as JS values: page-aligned, inside one mapping this env may reach. False with
// a JS exception pending when it is not; true with *mapping null when no mapping holds it any more (the
// pages are gone already, and the address may belong to someone else). The caller holds *mapping
// across the madvise, so that no munmap happens under it.
bool ToDroppableRange(Napi::Env env, Napi::Value address_value, Napi::Value length_value, iovec* range,
                      MappingRef* mapping) {
  const uint64_t page = PageSize();
  uint64_t address, length;
  if (!ToPageAddress(env, address_value, "address", page, &address) ||
      !ToPageLength(env, length_value, "length", page, &length)) {
    return false;
  }
  bool range_error;
  *mapping = FindRange(env, address, length, &range_error);
  if (range_error) return false;
  if (*mapping && !MayReach(env, *mapping)) return false;
  *range = iovec{reinterpret_cast<void*>(address), length};
  return true;
}

void ThrowDropError(napi_env env, int err, const iovec& range) {
  ThrowSyscallError(env, err, "madvise(MADV_DONTNEED)",
                    "cannot drop " + std::to_string(range.iov_len) + " bytes at " +
                        Hex(reinterpret_cast<uintptr_t>(range.iov_base)));
}

// dropRange(address, length) -> boolean: the next access to these pages
// faults MISSING again. Works on a released mapping some buffer still holds;
// answers false, dropping nothing, once no mapping holds the range any more.
Napi::Value DropRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  iovec range;
  MappingRef mapping;
  if (!ToDroppableRange(env, info[0], info[1], &range, &mapping)) return Napi::Value();
  if (!mapping) return Napi::Boolean::New(env, false);
  if (madvise(range.iov_base, range.iov_len, MADV_DONTNEED) != 0) {
    ThrowDropError(env, errno, range);
    return Napi::Value();
  }
  return Napi::Boolean::New(env, true);
}

// A pidfd for this process, for process_madvise; -1 where pidfd_open is missing. Reopened after a fork.
int SelfPidfd() {
  static std::mutex mu;
  static int fd = -1;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(mu);
  const pid_t pid = getpid();
  if (owner != pid) {
    // The inherited fd names the parent: it is left open (the parent's copy is not ours to close).
    fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    owner = pid;
  }
  return fd;
}

constexpr size_t kMaxRangesPerCall = 1024;  // UIO_MAXIOV

// Cleared the first time the kernel refuses process_madvise(MADV_DONTNEED) on this process (before 6.13).
std::atomic<bool> vectored_drop{true};

// MADV_DONTNEED over n ranges. One process_madvise call covers up to kMaxRangesPerCall, and the kernel
// (6.16 on) flushes the TLB once for all of them instead of once a range: with the application on the other
// CPU that flush is an IPI, tens of µs in a VM. Anything else falls back to madvise, range by range;
// dropping a range twice is harmless. Returns 0 or the errno of the madvise that failed (*failed its index).
int DropAll(const std::vector<iovec>& ranges, size_t* failed) {
  size_t done = 0;
  bool refused = false;
  if (ranges.size() > 1 && vectored_drop.load(std::memory_order_relaxed)) {
    const int pidfd = SelfPidfd();
    refused = pidfd < 0;
    while (!refused && done < ranges.size()) {
      const size_t n = std::min<size_t>(ranges.size() - done, kMaxRangesPerCall);
      size_t bytes = 0;
      for (size_t i = done; i < done + n; i++) bytes += ranges[i].iov_len;
      const long advised = syscall(SYS_process_madvise, pidfd, ranges.data() + done, n, MADV_DONTNEED, 0);
      // ENOSYS, EPERM, or EINVAL from a kernel that refuses MADV_DONTNEED here (or from a bad range,
      // which madvise below reports).
      if (advised < 0 && (errno == ENOSYS || errno == EINVAL || errno == EPERM)) refused = true;
      if (advised < 0 || static_cast<size_t>(advised) != bytes) break;  // the rest goes range by range
      done += n;
    }
  }
  for (size_t i = done; i < ranges.size(); i++) {
    if (madvise(ranges[i].iov_base, ranges[i].iov_len, MADV_DONTNEED) != 0) {
      *failed = i;
      return errno;
    }
  }
  // Every range was fine, so the refusal was the kernel's: do not ask again.
  if (refused) vectored_drop.store(false, std::memory_order_relaxed);
  return 0;
}

// dropRanges(list, count) -> number: dropRange over count (address, length) pairs of a Float64Array, in
// one batch. Ranges no mapping holds any more are skipped; returns how many were dropped.
Napi::Value DropRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    ThrowTypeError(env, "list must be a Float64Array of (address, length) pairs");
    return Napi::Value();
  }
  Napi::Float64Array list = info[0].As<Napi::Float64Array>();
  uint64_t count;
  if (!ToUint(env, info[1], "count", &count)) return Napi::Value();
  if (count * 2 > list.ElementLength()) {
    ThrowRangeError(env, "count " + std::to_string(count) + " is more pairs than list holds (" +
                             std::to_string(list.ElementLength() / 2) + ")");
    return Napi::Value();
  }
  std::vector<MappingRef> held;  // held across the drop: no munmap under it
  std::vector<iovec> ranges;
  ranges.reserve(count);
  for (uint64_t i = 0; i < count; i++) {
    Napi::HandleScope scope(env);
    iovec range;
    MappingRef mapping;
    if (!ToDroppableRange(env, Napi::Number::New(env, list[2 * i]), Napi::Number::New(env, list[2 * i + 1]),
                          &range, &mapping)) {
      return Napi::Value();
    }
    if (!mapping) continue;
    if (held.empty() || held.back() != mapping) held.push_back(std::move(mapping));
    ranges.push_back(range);
  }
  size_t failed = 0;
  const int err = DropAll(ranges, &failed);
  if (err != 0) {
    ThrowDropError(env, err, ranges[failed]);
    return Napi::Value();
  }
  return Napi::Number::New(env, static_cast<double>(ranges.size()));
}

// readOut(address, length, dst, dstOffset): copies bytes out of a mapping
// (released or not, while still mapped). A non-resident page faults: the pager
// must only read pages it knows are present, or it waits for itself.
Napi::Value ReadOut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t address, length, offset;
  ViewBytes dst;
  if (!ToUint(env, info[0], "address", &address) || !ToUint(env, info[1], "length", &length) ||
      !ToViewBytes(env, info[2], "dst", &dst) || !ToUint(env, info[3], "dstOffset", &offset) ||
      !CheckViewRange(env, "dst", offset, length, dst.length)) {
    return Napi::Value();
  }
  if (length == 0) return env.Undefined();
  bool range_error;
  MappingRef mapping = FindRange(env, address, length, &range_error);  // held across memcpy: no munmap under it
  if (range_error) return Napi::Value();
  if (!mapping) {
    ThrowFreed(env, address);
    return Napi::Value();
  }
  if (!MayReach(env, mapping)) return Napi::Value();
  std::memcpy(dst.data + offset, reinterpret_cast<const void*>(address), length);
  return env.Undefined();
}

// mappingCounts() -> { live, mapped }: process-wide, for leak checks.
Napi::Value MappingCounts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto counts = Registry::Get().Counts();
  Napi::Object result = Napi::Object::New(env);
  if (result.Set("live", Napi::Number::New(env, static_cast<double>(counts.first))).IsNothing() ||
      result.Set("mapped", Napi::Number::New(env, static_cast<double>(counts.second))).IsNothing()) {
    return Napi::Value();
  }
  return result;
}

}  // namespace

void* MapAligned(uint64_t length, uint64_t align) {
  const uint64_t span = length + align - PageSize();
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) return MAP_FAILED;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + align - 1) & ~(align - 1);
  if (aligned > start) munmap(raw, aligned - start);
  if (start + span > aligned + length) munmap(reinterpret_cast<void*>(aligned + length), start + span - aligned - length);
  return reinterpret_cast<void*>(aligned);
}

void ReleaseMappingsOf(uint64_t owner) {
  // Dropped here, outside the registry lock: this may munmap.
  std::vector<MappingRef> released = Registry::Get().ReleaseOwnedBy(owner);
}

bool CheckRestrictedRange(Napi::Env env, uint64_t address, uint64_t length) {
  if (!EnvRestricted(env)) return true;
  bool range_error;
  MappingRef mapping = FindRange(env, address, length, &range_error);
  if (range_error) return false;
  if (!mapping) {
    ThrowCodeError(env, "FARMEM_ISOLATION", "no mapping made by mapCreate holds " + Hex(address) + ": a restricted thread may only use its own");
    return false;
  }
  return MayReach(env, mapping);
}

void RegisterMapping(Napi::Env env, Napi::Object exports) {
  exports.Set("mapCreate", Napi::Function::New(env, MapCreate, "mapCreate"));
  exports.Set("storageCreate", Napi::Function::New(env, StorageCreate, "storageCreate"));
  exports.Set("mapAttach", Napi::Function::New(env, MapAttach, "mapAttach"));
  exports.Set("mapRelease", Napi::Function::New(env, MapRelease, "mapRelease"));
  exports.Set("dropRange", Napi::Function::New(env, DropRange, "dropRange"));
  exports.Set("dropRanges", Napi::Function::New(env, DropRanges, "dropRanges"));
  exports.Set("readOut", Napi::Function::New(env, ReadOut, "readOut"));
  exports.Set("mappingCounts", Napi::Function::New(env, MappingCounts, "mappingCounts"));
}

}  // namespace farmem
