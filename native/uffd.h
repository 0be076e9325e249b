// probe() and the Uffd class: one userfaultfd, its ioctls, and the uv_poll
// that delivers its faults to JS on the thread that created it.
#ifndef FARMEM_NATIVE_UFFD_H_
#define FARMEM_NATIVE_UFFD_H_

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <string>

namespace farmem {

enum class UffdMode { kKernel, kUserOnly, kUnavailable };
enum class UffdSource { kSyscall, kDevUserfaultfd, kNone };

// What this kernel and this process's privileges allow, found with
// throw-away userfaultfds. Cached per env (see AddonData in addon.cc).
struct Capabilities {
  UffdMode mode = UffdMode::kUnavailable;
  UffdSource source = UffdSource::kNone;
  int err = 0;                  // why unavailable
  const char* syscall = "";     // the call that failed, when unavailable
  std::string reason;
  uint64_t api_features = 0;    // UFFDIO_API with features = 0
  bool write_protect = false;   // offered and a trial MODE_WP register worked
  uint64_t register_ioctls = 0;
  uint64_t page_size = 0;
  std::string kernel_release;
  // The bracketed word of /sys/kernel/mm/transparent_hugepage/enabled: "always",
  // "madvise", "never", or "" where the file is missing.
  std::string transparent_hugepages;
};

// moveIn's largest length, and the alignment that lets the kernel back the staging area with one
// transparent huge page (a PMD on x86-64 and on arm64 with 4 KiB pages).
constexpr uint64_t kStagingBytes = 2u << 20;

// Test hook: when >= 0, the next moveIn writes one byte at dst + offset after the move and before
// the write protection, as a racing application thread could. Process-wide; reset by that call.
void SetMoveWindowWriteForTest(int64_t offset);

// Test hook: when bytes >= 0, the next UFFDIO_MOVE of moveIn or zeroBlockIn (any thread) moves only
// its first `bytes` and then stops as the kernel can part way: counting them (EBUSY), or, as seen on
// Linux 6.18, counting nothing (EEXIST) though they moved. Process-wide; reset by that call.
void SetPartialMoveForTest(int64_t bytes, bool counted);

Capabilities RunProbe();
// The env's probe result, probed on first use (addon.cc).
const Capabilities& CachedCapabilities(Napi::Env env);
Napi::Object CapabilitiesToJs(Napi::Env env, const Capabilities& caps);

class Uffd : public Napi::ObjectWrap<Uffd> {
 public:
  static Napi::Function Define(Napi::Env env);

  // new Uffd({ userModeOnly, writeProtect, events, onFaults }). Runs on the
  // thread whose loop will serve the faults.
  explicit Uffd(const Napi::CallbackInfo& info);
  ~Uffd() override;

 private:
  // The poll handle outlives the Uffd when teardown closes it: uv_close
  // finishes on a later loop turn, and the close callback frees this.
  struct PollBox {
    uv_poll_t poll;
    napi_async_cleanup_hook_handle hook = nullptr;  // removed once the handle is closed
  };

  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value Register(const Napi::CallbackInfo& info);
  Napi::Value Unregister(const Napi::CallbackInfo& info);
  Napi::Value Copy(const Napi::CallbackInfo& info);
  Napi::Value ZeroPage(const Napi::CallbackInfo& info);
  Napi::Value WriteProtect(const Napi::CallbackInfo& info);
  Napi::Value Wake(const Napi::CallbackInfo& info);
  Napi::Value MoveIn(const Napi::CallbackInfo& info);
  Napi::Value ZeroBlockIn(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  // Shared by copy and zeropage: fills [dst, dst + length) page run by page
  // run, stepping over pages already present. Returns false with a JS
  // exception pending.
  bool Fill(Napi::Env env, bool zero, uint64_t dst, const uint8_t* src, uint64_t length, uint64_t mode,
            uint64_t* present);
  bool WakeRange(Napi::Env env, uint64_t address, uint64_t length);
  // The staging area (moveIn copies into it; zeroBlockIn has the kernel clear it), mapped on first use;
  // false with a JS exception pending.
  bool EnsureStaging(Napi::Env env);
  // UFFDIO_MOVE of [src, src + length) to dst without waking; returns the bytes moved and sets *err.
  uint64_t MovePages(uint64_t dst, uint64_t src, uint64_t length, int* err);
  std::string Closed() const;

  static void OnReadable(uv_poll_t* handle, int status, int events);
  static void OnPollClosed(uv_handle_t* handle);
  static void OnEnvCleanup(napi_async_cleanup_hook_handle handle, void* arg);
  void Drain();
  bool Deliver(size_t count);
  void ReportAsync(napi_value error);

  // Stops the poll handle and closes the fd. Safe to call more than once,
  // from close(), the env cleanup hook and the destructor, in any order.
  void Shutdown(bool from_cleanup_hook);

  int fd_ = -1;
  PollBox* box_ = nullptr;
  bool write_protect_ = false;
  bool move_ = false;  // UFFD_FEATURE_MOVE enabled
  uint64_t page_size_ = 0;
  // The staging area of moveIn and zeroBlockIn: kStagingBytes, aligned so that one transparent huge
  // page can back it.
  // Empty between calls. Pager thread only.
  uint8_t* staging_ = nullptr;
  Napi::Reference<Napi::Float64Array> events_;
  Napi::FunctionReference on_faults_;
  napi_async_context async_context_ = nullptr;
  bool referenced_ = false;  // this object holds itself alive while open
};

}  // namespace farmem

#endif  // FARMEM_NATIVE_UFFD_H_
