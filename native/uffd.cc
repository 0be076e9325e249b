// userfaultfd: the probe, and one Uffd per pager. A Uffd's ioctls and its poll
// callback all run on the thread that constructed it (the pager thread); the
// threads that fault on its regions never enter this file.
#include "uffd.h"
#include "mapping.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>

#include "errors.h"

// The installed headers are 6.1; the running kernel may offer more.
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
// UFFDIO_MOVE (Linux 6.8), defined here under our own struct name.
struct farmem_uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
  __u64 mode;
  __s64 move;
};
#define FARMEM_UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct farmem_uffdio_move)
#define FARMEM_UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)

namespace farmem {

namespace {

constexpr uint64_t kCopyDontWake = 1;  // copy() flags, as lib/native.ts names them
constexpr uint64_t kCopyWp = 2;
constexpr size_t kReadBatch = 64;  // uffd_msg per read(2)

std::atomic<int64_t> move_window_write_for_test{-1};
std::atomic<int64_t> partial_move_bytes_for_test{-1};
std::atomic<bool> partial_move_counted_for_test{true};

// The bracketed word of the THP "enabled" file, or "" when there is none.
std::string TransparentHugepages() {
  std::ifstream file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text;
  if (!std::getline(file, text)) return "";
  const size_t open = text.find('[');
  const size_t close = text.find(']', open);
  if (open == std::string::npos || close == std::string::npos) return "";
  return text.substr(open + 1, close - open - 1);
}

struct OpenFailure {
  int err = 0;
  const char* syscall = "";
};

int OpenUffd(UffdSource source, int flags, OpenFailure* failure) {
  if (source == UffdSource::kSyscall) {
    int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
    if (fd < 0) *failure = {errno, "userfaultfd"};
    return fd;
  }
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) {
    *failure = {errno, "open(/dev/userfaultfd)"};
    return -1;
  }
  int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
  int err = errno;
  close(dev);
  if (fd < 0) *failure = {err, "ioctl(USERFAULTFD_IOC_NEW)"};
  return fd;
}

const char* kLiftUserOnly =
    "run `sysctl -w vm.unprivileged_userfaultfd=1`, or give this user read-write access to /dev/userfaultfd";

std::string UnavailableReason(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return std::string("userfaultfd is not permitted for this process: ") + kLiftUserOnly +
             "; in a container, the seccomp profile must also allow the userfaultfd system call";
    case ENOSYS:
      return "this kernel has no userfaultfd (built without CONFIG_USERFAULTFD), or a seccomp filter hides it";
    default:
      return std::string("userfaultfd failed: ") + strerrordesc_np(err);
  }
}

// Registers one anonymous page on a throw-away uffd, asking for write
// protection when the kernel offers it, to learn what registering really allows.
void TrialRegister(UffdSource source, int open_flags, Capabilities* caps) {
  OpenFailure failure;
  int fd = OpenUffd(source, open_flags, &failure);
  if (fd < 0) return;
  const bool offers_wp = caps->api_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP;
  uffdio_api api = {};
  api.api = UFFD_API;
  api.features = offers_wp ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0;
  void* page = MAP_FAILED;
  if (ioctl(fd, UFFDIO_API, &api) == 0) {
    page = mmap(nullptr, caps->page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }
  if (page != MAP_FAILED) {
    uffdio_register reg = {};
    reg.range.start = reinterpret_cast<uintptr_t>(page);
    reg.range.len = caps->page_size;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING | (offers_wp ? UFFDIO_REGISTER_MODE_WP : 0);
    if (ioctl(fd, UFFDIO_REGISTER, &reg) == 0) {
      caps->write_protect = offers_wp;
      caps->register_ioctls = reg.ioctls;
    } else if (offers_wp) {
      reg.mode = UFFDIO_REGISTER_MODE_MISSING;
      if (ioctl(fd, UFFDIO_REGISTER, &reg) == 0) caps->register_ioctls = reg.ioctls;
    }
    munmap(page, caps->page_size);
  }
  close(fd);
}

const char* ModeName(UffdMode mode) {
  switch (mode) {
    case UffdMode::kKernel: return "kernel";
    case UffdMode::kUserOnly: return "user-only";
    default: return "unavailable";
  }
}

const char* SourceName(UffdSource source) {
  switch (source) {
    case UffdSource::kSyscall: return "syscall";
    case UffdSource::kDevUserfaultfd: return "dev-userfaultfd";
    default: return "none";
  }
}

std::string Range(uint64_t address, uint64_t length) {
  return "the " + std::to_string(length) + " bytes at " + Hex(address);
}

}  // namespace

void SetMoveWindowWriteForTest(int64_t offset) { move_window_write_for_test.store(offset); }

void SetPartialMoveForTest(int64_t bytes, bool counted) {
  partial_move_counted_for_test.store(counted);
  partial_move_bytes_for_test.store(bytes);
}

Capabilities RunProbe() {
  Capabilities caps;
  caps.page_size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  caps.transparent_hugepages = TransparentHugepages();
  struct utsname name;
  if (uname(&name) == 0) caps.kernel_release = name.release;

  // Kernel mode first (it also serves faults taken inside system calls), then
  // user-mode-only, which unprivileged processes may always create.
  const int base = O_CLOEXEC | O_NONBLOCK;
  struct Attempt {
    UffdSource source;
    int flags;
  };
  const Attempt attempts[] = {{UffdSource::kSyscall, base},
                              {UffdSource::kDevUserfaultfd, base},
                              {UffdSource::kSyscall, base | UFFD_USER_MODE_ONLY}};
  OpenFailure first;
  const Attempt* chosen = nullptr;
  int fd = -1;
  for (const Attempt& attempt : attempts) {
    OpenFailure failure;
    fd = OpenUffd(attempt.source, attempt.flags, &failure);
    if (fd >= 0) {
      chosen = &attempt;
      break;
    }
    if (first.err == 0) first = failure;
  }
  if (chosen == nullptr) {
    caps.err = first.err;
    caps.syscall = first.syscall;
    caps.reason = UnavailableReason(first.err);
    return caps;
  }

  uffdio_api api = {};
  api.api = UFFD_API;
  api.features = 0;  // asks nothing, so the kernel answers everything it offers
  int rc = ioctl(fd, UFFDIO_API, &api);
  int err = errno;
  close(fd);
  if (rc != 0) {
    caps.err = err;
    caps.syscall = "ioctl(UFFDIO_API)";
    caps.reason = std::string("the kernel refused UFFDIO_API: ") + strerrordesc_np(err);
    return caps;
  }
  caps.source = chosen->source;
  caps.mode = (chosen->flags & UFFD_USER_MODE_ONLY) ? UffdMode::kUserOnly : UffdMode::kKernel;
  if (caps.mode == UffdMode::kUserOnly) {
    caps.reason = std::string(
                      "only user-mode faults can be served (UFFD_USER_MODE_ONLY): a system call that reads or "
                      "writes a region, such as write(2) from it, fails with EFAULT; to lift this, ") +
                  kLiftUserOnly;
  }
  caps.api_features = api.features;
  TrialRegister(chosen->source, chosen->flags, &caps);
  return caps;
}

Napi::Object CapabilitiesToJs(Napi::Env env, const Capabilities& caps) {
  Napi::Object o = Napi::Object::New(env);
  auto set = [&](const char* key, Napi::Value value) { (void)o.Set(key, value); };
  auto flag = [&](const char* key, uint64_t bit) { set(key, Napi::Boolean::New(env, (caps.api_features & bit) != 0)); };
  set("platformSupported", Napi::Boolean::New(env, true));
  set("mode", Napi::String::New(env, ModeName(caps.mode)));
  set("source", Napi::String::New(env, SourceName(caps.source)));
  set("errno", Napi::Number::New(env, caps.err));
  set("reason", Napi::String::New(env, caps.reason));
  set("apiFeatures", Napi::Number::New(env, static_cast<double>(caps.api_features)));
  set("writeProtect", Napi::Boolean::New(env, caps.write_protect));
  flag("wpUnpopulated", UFFD_FEATURE_WP_UNPOPULATED);
  flag("wpAsync", UFFD_FEATURE_WP_ASYNC);
  flag("poison", UFFD_FEATURE_POISON);
  flag("move", UFFD_FEATURE_MOVE);
  flag("threadId", UFFD_FEATURE_THREAD_ID);
  set("registerIoctls", Napi::Number::New(env, static_cast<double>(caps.register_ioctls)));
  set("pageSize", Napi::Number::New(env, static_cast<double>(caps.page_size)));
  set("kernelRelease", Napi::String::New(env, caps.kernel_release));
  set("transparentHugepages", Napi::String::New(env, caps.transparent_hugepages));
  return o;
}

Napi::Function Uffd::Define(Napi::Env env) {
  return DefineClass(env, "Uffd",
                     {
                         InstanceAccessor<&Uffd::GetFd>("fd"),
                         InstanceMethod<&Uffd::Register>("register"),
                         InstanceMethod<&Uffd::Unregister>("unregister"),
                         InstanceMethod<&Uffd::Copy>("copy"),
                         InstanceMethod<&Uffd::ZeroPage>("zeropage"),
                         InstanceMethod<&Uffd::WriteProtect>("writeProtect"),
                         InstanceMethod<&Uffd::Wake>("wake"),
                         InstanceMethod<&Uffd::MoveIn>("moveIn"),
                         InstanceMethod<&Uffd::ZeroBlockIn>("zeroBlockIn"),
                         InstanceMethod<&Uffd::Close>("close"),
                     });
}

Uffd::Uffd(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Uffd>(info) {
  // On failure the wrapper deletes this object: the destructor undoes what
  // was done so far.
  Napi::Env env = info.Env();
  if (EnvRestricted(env)) {
    ThrowCodeError(env, "FARMEM_ISOLATION", "a coffer cannot open a userfaultfd of its own: its far memory is farMemory.allocate()");
    return;
  }
  if (!info[0].IsObject()) {
    ThrowTypeError(env, "new Uffd(options): options must be an object");
    return;
  }
  Napi::Object options = info[0].As<Napi::Object>();
  Napi::Value user_only_value, wp_value, events_value, on_faults_value;
  if (!options.Get("userModeOnly").UnwrapTo(&user_only_value) || !options.Get("writeProtect").UnwrapTo(&wp_value) ||
      !options.Get("events").UnwrapTo(&events_value) || !options.Get("onFaults").UnwrapTo(&on_faults_value)) {
    return;
  }
  bool user_only, wp;
  if (!ToBool(env, user_only_value, "options.userModeOnly", &user_only) ||
      !ToBool(env, wp_value, "options.writeProtect", &wp)) {
    return;
  }
  if (!events_value.IsTypedArray() ||
      events_value.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    ThrowTypeError(env, "options.events must be a Float64Array");
    return;
  }
  Napi::Float64Array events = events_value.As<Napi::Float64Array>();
  if (events.ElementLength() < 3) {
    ThrowRangeError(env, "options.events must hold at least one fault (3 elements: address, flags, tid)");
    return;
  }
  if (!on_faults_value.IsFunction()) {
    ThrowTypeError(env, "options.onFaults must be a function");
    return;
  }

  const Capabilities& caps = CachedCapabilities(env);
  if (caps.mode == UffdMode::kUnavailable) {
    ThrowSyscallError(env, caps.err, caps.syscall, caps.reason);
    return;
  }
  if (wp && !caps.write_protect) {
    ThrowCodeError(env, "FARMEM_FEATURE_MISSING",
                   "write protection of anonymous memory (UFFD_FEATURE_PAGEFAULT_FLAG_WP) is not available on "
                   "kernel " + caps.kernel_release);
    return;
  }
  int flags = O_CLOEXEC | O_NONBLOCK;
  if (user_only || caps.mode == UffdMode::kUserOnly) flags |= UFFD_USER_MODE_ONLY;
  OpenFailure failure;
  fd_ = OpenUffd(caps.source, flags, &failure);
  if (fd_ < 0) {
    ThrowSyscallError(env, failure.err, failure.syscall, "cannot create a userfaultfd");
    return;
  }
  uffdio_api api = {};
  api.api = UFFD_API;
  // THREAD_ID costs nothing and fills the tid of each event; MOVE only allows the ioctl (moveIn).
  api.features = (wp ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0) |
                 (caps.api_features & (UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MOVE));
  if (ioctl(fd_, UFFDIO_API, &api) != 0) {
    ThrowSyscallError(env, errno, "ioctl(UFFDIO_API)", "cannot enable userfaultfd features");
    return;
  }
  write_protect_ = wp;
  move_ = (api.features & UFFD_FEATURE_MOVE) != 0;
  page_size_ = caps.page_size;
  events_ = Napi::Persistent(events);
  on_faults_ = Napi::Persistent(on_faults_value.As<Napi::Function>());
  napi_value resource_name = Napi::String::New(env, "farmem:Uffd");
  if (napi_async_init(env, Value(), resource_name, &async_context_) != napi_ok) {
    async_context_ = nullptr;
    return;
  }

  uv_loop_s* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return;
  PollBox* box = new PollBox();
  int rc = uv_poll_init(loop, &box->poll, fd_);
  if (rc != 0) {
    delete box;  // uv_poll_init leaves nothing to close when it fails
    ThrowSyscallError(env, -rc, "uv_poll_init", "cannot watch the userfaultfd");
    return;
  }
  box->poll.data = this;
  box_ = box;
  rc = uv_poll_start(&box->poll, UV_READABLE, OnReadable);
  if (rc != 0) {
    ThrowSyscallError(env, -rc, "uv_poll_start", "cannot watch the userfaultfd");
    return;
  }
  // Async, so env teardown waits for uv_close to finish before uv_loop_close.
  if (napi_add_async_cleanup_hook(env, OnEnvCleanup, this, &box->hook) != napi_ok) {
    box->hook = nullptr;
    if (!env.IsExceptionPending()) ThrowTypeError(env, "cannot add an env cleanup hook for the Uffd");
    return;
  }
  // An open Uffd is not collected: faults on its regions would go unserved.
  Ref();
  referenced_ = true;
}

Uffd::~Uffd() {
  // Runs on the owning thread: from GC after close(), when construction
  // failed, or during env teardown (after OnEnvCleanup has run).
  Shutdown(false);
  if (async_context_ != nullptr) napi_async_destroy(Env(), async_context_);
}

void Uffd::Shutdown(bool from_cleanup_hook) {
  if (box_ != nullptr) {
    PollBox* box = box_;
    box_ = nullptr;
    box->poll.data = nullptr;
    // From close() or the destructor nothing waits for the handle, so the hook
    // goes now; from the hook itself, OnPollClosed removes it to say "done".
    if (!from_cleanup_hook && box->hook != nullptr) {
      napi_remove_async_cleanup_hook(box->hook);
      box->hook = nullptr;
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&box->poll), OnPollClosed);  // stops it before the fd goes
  }
  if (fd_ >= 0) {
    close(fd_);  // unregisters every range and wakes every thread blocked on one
    fd_ = -1;
  }
  if (staging_ != nullptr) {
    munmap(staging_, kStagingBytes);
    staging_ = nullptr;
  }
}

void Uffd::OnPollClosed(uv_handle_t* handle) {
  // Runs on the owning thread's loop, possibly after the Uffd is gone.
  PollBox* box = reinterpret_cast<PollBox*>(reinterpret_cast<char*>(handle) - offsetof(PollBox, poll));
  if (box->hook != nullptr) napi_remove_async_cleanup_hook(box->hook);
  delete box;
}

void Uffd::OnEnvCleanup(napi_async_cleanup_hook_handle /*handle*/, void* arg) {
  // Runs on the owning thread while its env is torn down (worker exit or
  // terminate(), or the main thread's normal exit). No JS may run here.
  static_cast<Uffd*>(arg)->Shutdown(true);
}

void Uffd::OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  // Runs on the pager thread's loop.
  Uffd* self = static_cast<Uffd*>(handle->data);
  if (self == nullptr) return;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  if (status < 0) {
    uv_poll_stop(handle);  // level-triggered: it would fire again at once
    self->ReportAsync(SyscallError(env, -status, "uv_poll", "the userfaultfd can no longer be watched"));
    return;
  }
  self->Drain();
}

void Uffd::Drain() {
  // Runs on the pager thread's loop, inside OnReadable's handle scope.
  Napi::Env env = Env();
  for (;;) {
    // Fetched per batch: onFaults may have transferred (detached) the array.
    Napi::Float64Array events = events_.Value();
    const size_t capacity = events.ElementLength() / 3;
    if (capacity == 0) {
      uv_poll_stop(&box_->poll);
      ReportAsync(CodeError(env, "ERR_INVALID_STATE",
                            "Uffd: the events Float64Array was detached; faults are no longer delivered"));
      return;
    }
    double* out = events.Data();
    size_t count = 0;
    bool drained = false;
    int read_err = 0;
    while (count < capacity) {
      uffd_msg msgs[kReadBatch];
      const size_t want = std::min(capacity - count, kReadBatch);
      ssize_t n = read(fd_, msgs, want * sizeof(uffd_msg));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) read_err = errno;
        drained = true;
        break;
      }
      if (n == 0) {
        drained = true;
        break;
      }
      for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); i++) {
        if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;  // none other is enabled
        out[count * 3] = static_cast<double>(msgs[i].arg.pagefault.address);
        out[count * 3 + 1] = static_cast<double>(msgs[i].arg.pagefault.flags);
        out[count * 3 + 2] = static_cast<double>(msgs[i].arg.pagefault.feat.ptid);
        count++;
      }
      // One read returns every message queued: a short one leaves none behind, so the read that would
      // answer EAGAIN is skipped (poll is level-triggered and fires again for the next fault).
      if (static_cast<size_t>(n) < want * sizeof(uffd_msg)) {
        drained = true;
        break;
      }
    }
    if (count > 0 && !Deliver(count)) return;
    if (fd_ < 0) return;  // onFaults closed us
    if (read_err != 0) {
      uv_poll_stop(&box_->poll);
      ReportAsync(SyscallError(env, read_err, "read(userfaultfd)", "cannot read fault events"));
      return;
    }
    if (drained) return;
  }
}

bool Uffd::Deliver(size_t count) {
  // Runs on the pager thread. MakeCallback runs nextTick and microtasks after
  // onFaults, as for any other I/O callback. Raw N-API here: while the thread
  // is being terminated every call fails, and node-addon-api would turn a
  // failed throw into a fatal error.
  napi_env env = Env();
  napi_value argv[1], recv = Value(), fn = on_faults_.Value(), result;
  if (napi_create_double(env, static_cast<double>(count), &argv[0]) != napi_ok) return false;
  if (napi_make_callback(env, async_context_, recv, fn, 1, argv, &result) == napi_ok) return true;
  napi_value error;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
      napi_get_and_clear_last_exception(env, &error) == napi_ok) {
    napi_fatal_exception(env, error);  // fails quietly while the env is stopping
  }
  return false;  // the poll stays armed: what is left is read on the next turn
}

void Uffd::ReportAsync(napi_value error) {
  // Nothing called us from JS, so an error becomes an 'uncaughtException' on
  // this thread. Does nothing while the env is stopping.
  if (error != nullptr) napi_fatal_exception(Env(), error);
}

std::string Uffd::Closed() const { return fd_ < 0 ? " (the Uffd is closed)" : ""; }

Napi::Value Uffd::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value Uffd::Register(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t address, length;
  bool wp;
  if (!ToPageAddress(env, info[0], "address", page_size_, &address) ||
      !ToPageLength(env, info[1], "length", page_size_, &length) || !ToBool(env, info[2], "writeProtect", &wp)) {
    return Napi::Value();
  }
  if (wp && !write_protect_) {
    ThrowTypeError(env, "register(writeProtect = true) needs a Uffd created with writeProtect: true");
    return Napi::Value();
  }
  if (!CheckRestrictedRange(env, address, length)) return Napi::Value();
  uffdio_register reg = {};
  reg.range.start = address;
  reg.range.len = length;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | (wp ? UFFDIO_REGISTER_MODE_WP : 0);
  if (ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) {
    ThrowSyscallError(env, errno, "ioctl(UFFDIO_REGISTER)", "cannot register " + Range(address, length) + Closed());
    return Napi::Value();
  }
  return Napi::Number::New(env, static_cast<double>(reg.ioctls));
}

Napi::Value Uffd::Unregister(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t address, length;
  if (!ToPageAddress(env, info[0], "address", page_size_, &address) ||
      !ToPageLength(env, info[1], "length", page_size_, &length)) {
    return Napi::Value();
  }
  uffdio_range range = {address, length};
  if (ioctl(fd_, UFFDIO_UNREGISTER, &range) != 0) {
    ThrowSyscallError(env, errno, "ioctl(UFFDIO_UNREGISTER)", "cannot unregister " + Range(address, length) + Closed());
    return Napi::Value();
  }
  return env.Undefined();
}

bool Uffd::WakeRange(Napi::Env env, uint64_t address, uint64_t length) {
  uffdio_range range = {address, length};
  if (ioctl(fd_, UFFDIO_WAKE, &range) != 0) {
    ThrowSyscallError(env, errno, "ioctl(UFFDIO_WAKE)",
                      "cannot wake the waiters on " + Range(address, length) + Closed());
    return false;
  }
  return true;
}

bool Uffd::Fill(Napi::Env env, bool zero, uint64_t dst, const uint8_t* src, uint64_t length, uint64_t mode,
                uint64_t* present) {
  const char* name = zero ? "ioctl(UFFDIO_ZEROPAGE)" : "ioctl(UFFDIO_COPY)";
  // Both ioctls use bit 0 for DONTWAKE.
  const bool dont_wake = (mode & UFFDIO_COPY_MODE_DONTWAKE) != 0;
  uint64_t done = 0;
  *present = 0;
  while (done < length) {
    int rc;
    int64_t result;
    if (zero) {
      uffdio_zeropage z = {};
      z.range.start = dst + done;
      z.range.len = length - done;
      z.mode = mode;
      rc = ioctl(fd_, UFFDIO_ZEROPAGE, &z);
      result = z.zeropage;
    } else {
      uffdio_copy c = {};
      c.dst = dst + done;
      c.src = reinterpret_cast<uintptr_t>(src) + done;
      c.len = length - done;
      c.mode = mode;
      rc = ioctl(fd_, UFFDIO_COPY, &c);
      result = c.copy;
    }
    if (rc == 0) return true;
    const int err = errno;
    if (result > 0) {  // partial: the kernel filled (and woke) a prefix; retry the rest
      done += static_cast<uint64_t>(result);
      continue;
    }
    if (err == EAGAIN || err == EINTR) continue;  // the mm was changing under us
    if (err == EEXIST) {
      // Already present, so the kernel will not wake whoever faulted on it.
      // With DONTWAKE the caller wakes the whole range itself later.
      if (!dont_wake && !WakeRange(env, dst + done, page_size_)) return false;
      *present += page_size_;
      done += page_size_;
      continue;
    }
    ThrowSyscallError(env, err, name,
                      (zero ? "cannot map zero pages at " : "cannot copy into ") + Range(dst + done, length - done) +
                          Closed());
    return false;
  }
  return true;
}

Napi::Value Uffd::Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t dst, src_offset, length, flags;
  ViewBytes src;
  if (!ToPageAddress(env, info[0], "dst", page_size_, &dst) || !ToViewBytes(env, info[1], "src", &src) ||
      !ToUint(env, info[2], "srcOffset", &src_offset) || !ToPageLength(env, info[3], "length", page_size_, &length) ||
      !ToUint(env, info[4], "flags", &flags) || !CheckViewRange(env, "src", src_offset, length, src.length)) {
    return Napi::Value();
  }
  if (flags & ~(kCopyDontWake | kCopyWp)) {
    ThrowRangeError(env, "flags may hold only COPY_DONTWAKE (1) and COPY_WP (2), got " + std::to_string(flags));
    return Napi::Value();
  }
  if ((flags & kCopyWp) && !write_protect_) {
    ThrowTypeError(env, "COPY_WP needs a Uffd created with writeProtect: true");
    return Napi::Value();
  }
  const uint64_t mode = ((flags & kCopyDontWake) ? UFFDIO_COPY_MODE_DONTWAKE : 0) |
                        ((flags & kCopyWp) ? UFFDIO_COPY_MODE_WP : 0);
  uint64_t present;
  if (!Fill(env, false, dst, src.data + src_offset, length, mode, &present)) return Napi::Value();
  return Napi::Number::New(env, static_cast<double>(present));
}

Napi::Value Uffd::ZeroPage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t dst, length;
  bool dont_wake;
  if (!ToPageAddress(env, info[0], "dst", page_size_, &dst) ||
      !ToPageLength(env, info[1], "length", page_size_, &length) || !ToBool(env, info[2], "dontWake", &dont_wake)) {
    return Napi::Value();
  }
  uint64_t present;
  if (!Fill(env, true, dst, nullptr, length, dont_wake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0, &present)) {
    return Napi::Value();
  }
  return Napi::Number::New(env, static_cast<double>(present));
}

Napi::Value Uffd::WriteProtect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t address, length;
  bool protect, dont_wake;
  if (!ToPageAddress(env, info[0], "address", page_size_, &address) ||
      !ToPageLength(env, info[1], "length", page_size_, &length) || !ToBool(env, info[2], "protect", &protect) ||
      !ToBool(env, info[3], "dontWake", &dont_wake)) {
    return Napi::Value();
  }
  if (!write_protect_) {
    ThrowTypeError(env, "writeProtect() needs a Uffd created with writeProtect: true");
    return Napi::Value();
  }
  uffdio_writeprotect wp = {};
  wp.range.start = address;
  wp.range.len = length;
  // Protecting never wakes anyone, and the kernel refuses WP|DONTWAKE with
  // EINVAL, so dontWake only matters when removing protection.
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : (dont_wake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0);
  if (ioctl(fd_, UFFDIO_WRITEPROTECT, &wp) != 0) {
    ThrowSyscallError(env, errno, "ioctl(UFFDIO_WRITEPROTECT)",
                      std::string(protect ? "cannot write-protect " : "cannot unprotect ") + Range(address, length) +
                          Closed());
    return Napi::Value();
  }
  return env.Undefined();
}

Napi::Value Uffd::Wake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t address, length;
  if (!ToPageAddress(env, info[0], "address", page_size_, &address) ||
      !ToPageLength(env, info[1], "length", page_size_, &length) || !WakeRange(env, address, length)) {
    return Napi::Value();
  }
  return env.Undefined();
}

namespace {

// mincore over [address, address + length) (at most kStagingBytes): resident[i] = 1 where page i is
// resident, else 0. On failure returns false and sets every entry to 0.
bool ResidentPages(uint64_t address, uint64_t length, unsigned char* resident) {
  const uint64_t pages = length / static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const bool ok = mincore(reinterpret_cast<void*>(address), length, resident) == 0;
  for (uint64_t i = 0; i < pages; i++) resident[i] = ok ? (resident[i] & 1) : 0;
  return ok;
}

// Whether every page, or any page, of [address, address + length) is resident. A failing mincore
// answers "not all" and "any": the callers then take the cautious branch.
bool Residency(uint64_t address, uint64_t length, bool all) {
  unsigned char resident[kStagingBytes / 4096];
  if (!ResidentPages(address, length, resident)) return !all;
  const uint64_t pages = length / static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  for (uint64_t i = 0; i < pages; i++) {
    if ((resident[i] != 0) != all) return !all;
  }
  return all;
}
bool AllResident(uint64_t address, uint64_t length) { return Residency(address, length, true); }
bool AnyResident(uint64_t address, uint64_t length) { return Residency(address, length, false); }

}  // namespace

bool Uffd::EnsureStaging(Napi::Env env) {
  if (staging_ != nullptr) return true;
  // Aligned, so that one huge page can back it.
  void* mapped = MapAligned(kStagingBytes, kStagingBytes);
  if (mapped == MAP_FAILED) {
    ThrowSyscallError(env, errno, "mmap", "cannot map the staging area of moveIn and zeroBlockIn");
    return false;
  }
  uint8_t* staging = static_cast<uint8_t*>(mapped);
  // Without a huge page the kernel backs it with small ones: slower, still correct. A child forked
  // while it holds pages would share them, and UFFDIO_MOVE refuses shared pages: the child never gets it.
  (void)madvise(staging, kStagingBytes, MADV_HUGEPAGE);
  if (madvise(staging, kStagingBytes, MADV_DONTFORK) != 0) {
    const int err = errno;
    munmap(staging, kStagingBytes);
    ThrowSyscallError(env, err, "madvise(MADV_DONTFORK)", "cannot set up the staging area of moveIn and zeroBlockIn");
    return false;
  }
  staging_ = staging;
  return true;
}

uint64_t Uffd::MovePages(uint64_t dst, uint64_t src, uint64_t length, int* err) {
  uint64_t moved = 0;
  *err = 0;
  const int64_t partial = partial_move_bytes_for_test.exchange(-1);
  if (partial >= 0 && static_cast<uint64_t>(partial) < length) {
    farmem_uffdio_move m = {};
    m.dst = dst;
    m.src = src;
    m.len = static_cast<uint64_t>(partial);
    m.mode = FARMEM_UFFDIO_MOVE_MODE_DONTWAKE;
    if (m.len > 0 && ioctl(fd_, FARMEM_UFFDIO_MOVE, &m) != 0) {
      *err = errno;
      return 0;
    }
    const bool counted = partial_move_counted_for_test.load();
    *err = counted ? EBUSY : EEXIST;
    return counted ? m.len : 0;
  }
  while (moved < length) {
    farmem_uffdio_move m = {};
    m.dst = dst + moved;
    m.src = src + moved;
    m.len = length - moved;
    m.mode = FARMEM_UFFDIO_MOVE_MODE_DONTWAKE;
    if (ioctl(fd_, FARMEM_UFFDIO_MOVE, &m) == 0) return length;
    *err = errno;
    if (m.move > 0) moved += static_cast<uint64_t>(m.move);
    if (*err != EAGAIN) break;
    *err = 0;
  }
  if (moved < length && *err == EEXIST && AllResident(dst + moved, length - moved) &&
      !AnyResident(src + moved, length - moved)) {
    // Seen on Linux 6.18 (in a PVM guest): a huge page moved, and the ioctl still answered EEXIST.
    // Nothing but this thread maps pages at dst, so they are the ones that left src.
    *err = 0;
    moved = length;
  }
  return moved;
}

// moveIn(dst, src, srcOffset, length, written) -> bytes moved. Lands src bytes at dst write-protected,
// as copy(COPY_WP | COPY_DONTWAKE) does, but through the staging area and UFFDIO_MOVE: the pages
// arrive as one transparent huge page where the kernel has one, with no per-page allocation. A move
// installs writable pages, so a thread could write one between the move and the write protection
// unseen: after protecting, each moved page is compared with src, and written[i] = 1 where page i
// differs (it was written; the caller must treat it as dirty). Waiters are not woken. Returns less
// than length when the kernel stopped part way: the caller copy()s the rest, which steps over any page
// the kernel moved without counting it (such pages are protected and compared too). written[i] is set
// for every page of length, 0 where nothing is mapped. Throws when nothing at all was mapped.
Napi::Value Uffd::MoveIn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t dst, src_offset, length;
  ViewBytes src, written;
  if (!ToPageAddress(env, info[0], "dst", page_size_, &dst) || !ToViewBytes(env, info[1], "src", &src) ||
      !ToUint(env, info[2], "srcOffset", &src_offset) || !ToPageLength(env, info[3], "length", page_size_, &length) ||
      !CheckViewRange(env, "src", src_offset, length, src.length) || !ToViewBytes(env, info[4], "written", &written)) {
    return Napi::Value();
  }
  const uint64_t pages = length / page_size_;
  if (length > kStagingBytes) {
    ThrowRangeError(env, "moveIn moves at most " + std::to_string(kStagingBytes) + " bytes at once, got " +
                             std::to_string(length));
    return Napi::Value();
  }
  if (written.length < pages) {
    ThrowRangeError(env, "written must hold one byte per page (" + std::to_string(pages) + "), got " +
                             std::to_string(written.length));
    return Napi::Value();
  }
  if (!move_ || !write_protect_) {
    ThrowCodeError(env, "FARMEM_FEATURE_MISSING",
                   "moveIn needs UFFDIO_MOVE (Linux 6.8) and a Uffd created with writeProtect: true" + Closed());
    return Napi::Value();
  }
  if (!CheckRestrictedRange(env, dst, length) || !EnsureStaging(env)) return Napi::Value();
  // A huge page moves as one only into a range with no page table, and lands in the staging area only
  // if that has none either. Linux (PT_RECLAIM) frees an empty page table on a MADV_DONTNEED of its whole
  // 2 MiB, so both are dropped first. dst must hold no page: that is checked, since dropping one would
  // lose it.
  if (length == kStagingBytes && dst % kStagingBytes == 0) {
    if (AnyResident(dst, length)) {
      ThrowSyscallError(env, EEXIST, "moveIn", Range(dst, length) + " already holds pages (a pager bug)");
      return Napi::Value();
    }
    (void)madvise(reinterpret_cast<void*>(dst), length, MADV_DONTNEED);
  }
  // The staging area is empty between calls; a page table left by a fallback to small pages goes first.
  (void)madvise(staging_, kStagingBytes, MADV_DONTNEED);
  std::memcpy(staging_, src.data + src_offset, length);

  int err;
  const uint64_t moved = MovePages(dst, reinterpret_cast<uintptr_t>(staging_), length, &err);
  // What stayed behind is dropped, so that the staging area is empty again.
  if (moved < length) (void)madvise(staging_ + moved, length - moved, MADV_DONTNEED);

  // Part way, the kernel may have mapped more than it counted (as zeroBlockIn met: EEXIST, nothing
  // counted, a page mapped). Only this thread maps pages at dst, so a page present past `moved` came
  // from the staging area: it is protected and compared like the counted ones. Left writable and
  // taken for clean, a write to it would be lost at eviction.
  unsigned char present[kStagingBytes / 4096];
  const uint64_t counted = moved / page_size_;
  std::memset(present, 1, counted);
  uint64_t mapped = counted;
  if (moved < length) {
    // If mincore fails, only the counted pages are taken as mapped (ResidentPages leaves the rest 0):
    // reading an unmapped page of dst would fault, and this thread would wait on itself.
    (void)ResidentPages(dst + moved, length - moved, present + counted);
    for (uint64_t i = counted; i < pages; i++) mapped += present[i];
  }
  if (mapped == 0) {
    ThrowSyscallError(env, err, "ioctl(UFFDIO_MOVE)", "cannot move pages to " + Range(dst, length) + Closed());
    return Napi::Value();
  }

  const int64_t poke = move_window_write_for_test.exchange(-1);
  if (poke >= 0 && static_cast<uint64_t>(poke) < length && present[static_cast<uint64_t>(poke) / page_size_]) {
    reinterpret_cast<volatile uint8_t*>(dst)[poke] ^= 0xff;
  }

  // One protection per run of mapped pages: the whole length, unless the kernel stopped part way.
  for (uint64_t i = 0; i < pages;) {
    if (!present[i]) {
      written.data[i++] = 0;
      continue;
    }
    uint64_t end = i;
    while (end < pages && present[end]) end++;
    uffdio_writeprotect wp = {};
    wp.range.start = dst + i * page_size_;
    wp.range.len = (end - i) * page_size_;
    wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
    const bool protected_ok = ioctl(fd_, UFFDIO_WRITEPROTECT, &wp) == 0;
    for (; i < end; i++) {
      // Unprotected pages may be written at any time: all of them count as written.
      const uint64_t at = i * page_size_;
      written.data[i] = !protected_ok || std::memcmp(reinterpret_cast<const void*>(dst + at),
                                                     src.data + src_offset + at, page_size_) != 0;
    }
  }
  return Napi::Number::New(env, static_cast<double>(moved));
}

// zeroBlockIn(dst) -> bytes mapped from dst on: kStagingBytes, 0, or (should the kernel stop part way)
// the length of the mapped start. Lands one aligned 2 MiB block of zeros at dst,
// writable and without waking, as one transparent huge page: the kernel clears a fresh huge page in the
// staging area and UFFDIO_MOVE takes it to dst. For never-written pages a writer is about to fill, which
// the caller counts dirty from the start (so nothing is compared or protected). Returns 0, mapping
// nothing, where the kernel gave the staging area no huge page: the caller lands the zeros page by page.
Napi::Value Uffd::ZeroBlockIn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t dst;
  if (!ToPageAddress(env, info[0], "dst", page_size_, &dst)) return Napi::Value();
  if (dst % kStagingBytes != 0) {
    ThrowRangeError(env, "zeroBlockIn: dst must be aligned to " + std::to_string(kStagingBytes) + " bytes, got " +
                             Range(dst, kStagingBytes));
    return Napi::Value();
  }
  if (!move_) {
    ThrowCodeError(env, "FARMEM_FEATURE_MISSING", "zeroBlockIn needs UFFDIO_MOVE (Linux 6.8)" + Closed());
    return Napi::Value();
  }
  if (!CheckRestrictedRange(env, dst, kStagingBytes) || !EnsureStaging(env)) return Napi::Value();
  if (AnyResident(dst, kStagingBytes)) {
    ThrowSyscallError(env, EEXIST, "zeroBlockIn", Range(dst, kStagingBytes) + " already holds pages (a pager bug)");
    return Napi::Value();
  }
  // As in moveIn: a huge page moves as one only where neither side has a page table.
  (void)madvise(reinterpret_cast<void*>(dst), kStagingBytes, MADV_DONTNEED);
  (void)madvise(staging_, kStagingBytes, MADV_DONTNEED);
  // One write faults in the whole huge page, cleared by the kernel; anything less is not worth a move.
  reinterpret_cast<volatile uint8_t*>(staging_)[0] = 0;
  if (!AllResident(reinterpret_cast<uintptr_t>(staging_), kStagingBytes)) {
    (void)madvise(staging_, kStagingBytes, MADV_DONTNEED);
    return Napi::Number::New(env, 0);
  }
  int err;
  const uint64_t moved = MovePages(dst, reinterpret_cast<uintptr_t>(staging_), kStagingBytes, &err);
  // Part way: what stayed behind is dropped, and the caller copies zeros over the rest, stepping over
  // pages already there. Seen on Linux 6.18 in a PVM guest, about once in ten test runs: EEXIST with
  // nothing counted as moved, and a page of the block mapped after all (the kernel split the huge page,
  // dst having kept a page table, and moved part of it). Only this thread maps pages at dst, so such a
  // page is one of the staging area's zeros.
  if (moved < kStagingBytes) (void)madvise(staging_ + moved, kStagingBytes - moved, MADV_DONTNEED);
  if (moved == 0 && err != 0 && err != EEXIST) {
    ThrowSyscallError(env, err, "ioctl(UFFDIO_MOVE)", "cannot move zeros to " + Range(dst, kStagingBytes) + Closed());
    return Napi::Value();
  }
  return Napi::Number::New(env, static_cast<double>(moved));
}

Napi::Value Uffd::Close(const Napi::CallbackInfo& info) {
  Shutdown(false);
  // Drops what onFaults may close over, so the pair can be collected.
  events_.Reset();
  on_faults_.Reset();
  if (referenced_) {
    referenced_ = false;
    Unref();
  }
  return info.Env().Undefined();
}

}  // namespace farmem
