// callWithDeadline: calls a JS function and interrupts it if it runs past a deadline, as node's own
// vm `timeout` does (V8 TerminateExecution from a watchdog thread, then CancelTerminateExecution once the
// call has unwound). The pager uses it for policy and guide code a user wrote, which runs on the pager
// thread and could otherwise hold every faulting thread forever with one endless loop.
//
// The budget is counted in the calling thread's CPU time, so that a call the scheduler kept off the CPU
// (a loaded host preempts for milliseconds) is not taken for a slow one. The JS thread reads no CPU clock
// (a system call, 1.7 µs in this VM): once a call is past its budget in wall time, the watchdog reads
// the JS thread's CPU clock and stops the call when the thread has used a further budget of CPU since,
// so a call that computes is stopped after one to two budgets of CPU time. One that blocks instead is
// stopped at kWallFactor times its budget of wall time.
//
// Threads: CallWithDeadline runs on the JS thread that owns the env (the pager thread). One watchdog
// thread per env watches the armed deadline and touches the isolate only through TerminateExecution
// (documented as callable from any thread). A runaway call is stopped within about twice its timeout.
#include <napi.h>
#include <v8.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <pthread.h>
#include <time.h>

#include "errors.h"

namespace farmem {

namespace {

using Clock = std::chrono::steady_clock;

// How much longer than its CPU budget a call may take in wall time, blocked or kept off the CPU.
constexpr int64_t kWallFactor = 20;

int64_t CpuNanos(clockid_t clock) {
  timespec now{};
  clock_gettime(clock, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

int64_t Nanos(Clock::duration d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); }

// The CPU-time clock of the calling thread, readable from another thread.
clockid_t OwnCpuClock() {
  clockid_t clock = CLOCK_THREAD_CPUTIME_ID;
  pthread_getcpuclockid(pthread_self(), &clock);
  return clock;
}

// The JS thread arms and disarms with atomics only, so a call costs no lock and no wakeup while calls keep
// coming; the watchdog polls at the armed timeout and sleeps on the condition variable once calls stop.
class Watchdog {
 public:
  // JS thread: its CPU clock is the one calls are timed by.
  explicit Watchdog(v8::Isolate* isolate) : isolate_(isolate), js_cpu_clock_(OwnCpuClock()), thread_([this] { Run(); }) {}

  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  // JS thread. `started`: the call's start.
  void Arm(Clock::duration timeout, Clock::time_point started) {
    const uint64_t call = ++calls_;
    const int64_t deadline = (started + timeout).time_since_epoch().count();
    period_.store(timeout.count(), std::memory_order_relaxed);
    started_.store(started.time_since_epoch().count(), std::memory_order_relaxed);
    deadline_.store(deadline, std::memory_order_relaxed);
    state_.store(call);  // seq_cst: ordered before the loads below
    // Wake the watchdog if it sleeps until told, or until later than this call's deadline (a long
    // factory call's, say): otherwise it would notice this call only then.
    if (sleeping_.load() || deadline < waiting_until_.load()) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_one();
    }
  }

  // JS thread. True if the watchdog fired for this call; the termination it asked for is then cancelled.
  bool Disarm() {
    uint64_t armed = calls_;
    if (state_.compare_exchange_strong(armed, kIdle)) return false;
    // FIRING or FIRED: wait until TerminateExecution has been called, so that the cancel comes after it.
    while (state_.load() != kFired) std::this_thread::yield();
    isolate_->CancelTerminateExecution();
    state_.store(kIdle);
    return true;
  }

 private:
  static constexpr uint64_t kIdle = 0;
  static constexpr uint64_t kFiring = ~uint64_t{0} - 1;
  static constexpr uint64_t kFired = ~uint64_t{0};
  static constexpr int64_t kNever = INT64_MAX;

  // Watchdog thread.
  void Run() {
    uint64_t calls_seen = 0;
    // The call found past its wall deadline, the JS thread's CPU time then, and the later deadline it got.
    uint64_t extended_call = kIdle;
    int64_t extended_cpu = 0;
    int64_t extended_deadline = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      const uint64_t armed = state_.load();
      if (armed != kIdle && armed < kFiring) {
        const Clock::time_point deadline{
            Clock::duration{armed == extended_call ? extended_deadline : deadline_.load(std::memory_order_relaxed)}};
        const Clock::time_point now = Clock::now();
        if (now < deadline) {
          waiting_until_.store(deadline.time_since_epoch().count());
          wake_.wait_until(lock, deadline);
          waiting_until_.store(kNever);
          continue;
        }
        // Past it in wall time. These fields may already be a later call's: then `armed` is no longer
        // the armed call, and the compare-exchange below fails whatever was decided here.
        const Clock::duration period{period_.load(std::memory_order_relaxed)};
        const Clock::time_point wall_cap = Clock::time_point{Clock::duration{started_.load(std::memory_order_relaxed)}} + kWallFactor * period;
        const int64_t cpu_now = CpuNanos(js_cpu_clock_);
        if (armed != extended_call) {
          extended_call = armed;
          extended_cpu = cpu_now;
        }
        const int64_t cpu_left = Nanos(period) - (cpu_now - extended_cpu);
        if (cpu_left > 0 && now < wall_cap) {
          // Kept off the CPU, or blocked, or not yet a further budget of CPU: look again when it could be.
          extended_deadline = std::min(now + std::chrono::nanoseconds{cpu_left}, wall_cap).time_since_epoch().count();
          continue;
        }
        uint64_t expected = armed;
        if (state_.compare_exchange_strong(expected, kFiring)) {
          isolate_->TerminateExecution();
          state_.store(kFired);
        }
        continue;
      }
      const uint64_t calls = calls_;
      if (calls != calls_seen) {
        // Calls are coming: look again one timeout from now instead of sleeping until told.
        calls_seen = calls;
        const auto until = Clock::now() + Clock::duration{period_.load(std::memory_order_relaxed)};
        waiting_until_.store(until.time_since_epoch().count());
        wake_.wait_until(lock, until);
        waiting_until_.store(kNever);
        continue;
      }
      sleeping_.store(true);
      wake_.wait(lock, [this] {
        const uint64_t s = state_.load();
        return stopping_ || (s != kIdle && s < kFiring);
      });
      sleeping_.store(false);
    }
  }

  v8::Isolate* const isolate_;
  const clockid_t js_cpu_clock_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> state_{kIdle};  // kIdle, the armed call's number, kFiring or kFired
  std::atomic<uint64_t> calls_{0};
  // started_ + period_, stored whole: one load gives the watchdog one call's deadline, where two could
  // mix a finished call's start with the next call's period and sleep past the next call's deadline.
  std::atomic<int64_t> deadline_{0};
  std::atomic<int64_t> period_{0};
  std::atomic<int64_t> started_{0};  // the armed call's start, steady clock
  std::atomic<bool> sleeping_{false};
  // When the watchdog's timed wait ends (kNever while it is not in one).
  std::atomic<int64_t> waiting_until_{kNever};
  bool stopping_ = false;  // under mutex_
  std::thread thread_;     // last: starts once the fields above exist
};

// callWithDeadline(timeoutMs, timedOutValue, fn, thisArg, ...args): fn.apply(thisArg, args), or
// timedOutValue if the watchdog stopped fn (see the top of this file) or fn returned after more than
// kWallFactor times timeoutMs. Exceptions fn throws propagate unchanged.
napi_value CallWithDeadline(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 4) {
    ThrowTypeError(env, "callWithDeadline(timeoutMs, timedOutValue, fn, thisArg, ...args): too few arguments");
    return nullptr;
  }
  double timeout_ms = 0;
  napi_valuetype fn_type;
  if (napi_get_value_double(env, argv[0], &timeout_ms) != napi_ok || !(timeout_ms > 0)) {
    ThrowRangeError(env, "callWithDeadline: timeoutMs must be a positive number");
    return nullptr;
  }
  napi_typeof(env, argv[2], &fn_type);
  if (fn_type != napi_function) {
    ThrowTypeError(env, "callWithDeadline: fn must be a function");
    return nullptr;
  }

  // One per thread, hence per env: an env lives on one thread.
  static thread_local Watchdog* thread_watchdog = nullptr;
  if (thread_watchdog == nullptr) {
    thread_watchdog = new Watchdog(v8::Isolate::GetCurrent());
    // Joined when the env goes away (the thread ends or the worker is terminated).
    napi_add_env_cleanup_hook(
        env,
        [](void*) {
          delete thread_watchdog;
          thread_watchdog = nullptr;
        },
        nullptr);
  }

  const auto timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(timeout_ms));
  const Clock::time_point started = Clock::now();
  thread_watchdog->Arm(timeout, started);
  napi_value result = nullptr;
  const napi_status status = napi_call_function(env, argv[3], argv[2], argc - 4, argv + 4, &result);
  const bool late = Clock::now() - started > kWallFactor * timeout;
  if (thread_watchdog->Disarm()) {
    v8::Isolate::GetCurrent()->CancelTerminateExecution();
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
    return argv[1];
  }
  if (status != napi_ok) return nullptr;  // fn threw: the exception is pending and propagates
  return late ? argv[1] : result;
}

}  // namespace

void RegisterDeadline(Napi::Env env, Napi::Object exports) {
  napi_value fn;
  napi_create_function(env, "callWithDeadline", NAPI_AUTO_LENGTH, CallWithDeadline, nullptr, &fn);
  exports.Set("callWithDeadline", Napi::Value(env, fn));
}

}  // namespace farmem
