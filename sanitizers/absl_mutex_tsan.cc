// ThreadSanitizer annotations for Debian's absl::Mutex and absl::CondVar (STRATA_SANITIZE=thread).
//
// Why: Debian ships Abseil as shared libraries built without -fsanitize=thread, so the TSan
// annotations inside absl::Mutex are compiled out and TSan never sees it lock or unlock: every
// ABSL_GUARDED_BY member touched by two threads is reported as a data race (false positives that
// would bury real ones). Rebuilding Abseil (and gRPC, which links it) from source for one CI job is
// far more than this needs.
//
// How: this file defines the out-of-line absl::Mutex / absl::CondVar member functions that lock,
// unlock or wait, in the executable itself. The executable's definitions take precedence over
// libabsl_synchronization.so's for every caller: our code, and (through the dynamic symbol table)
// the Debian libraries, gRPC included. Each one tells TSan what happens with the
// __tsan_mutex_* API (the same calls Abseil makes when built with TSan) and calls the library's
// own function, found with dlsym(RTLD_NEXT). So TSan gets real mutex semantics: happens-before
// from unlock to lock, reader / writer modes, and lock-order (deadlock) checking.
//
// Only compiled into the TSan build (the top-level CMakeLists.txt adds it to strata_base and forces
// the linker to keep it); never part of a release binary.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#define STRATA_STR2(x) #x
#define STRATA_STR(x) STRATA_STR2(x)

namespace {

// The library's definition of the absl member function whose mangled name, after
// "_ZN4absl<inline namespace>", is `suffix` (e.g. "5Mutex4LockEv" for absl::Mutex::Lock()).
template <typename Fn>
Fn Real(const char* suffix) {
  const std::string ns = STRATA_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name = "_ZN4absl" + std::to_string(ns.size()) + ns + suffix;
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_mutex_tsan: %s not found: %s\n", name.c_str(), dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

#define STRATA_REAL(type, suffix) static const auto real = Real<type>(suffix)

using Plain = void (*)(absl::Mutex*);
using Try = bool (*)(absl::Mutex*);
using When = void (*)(absl::Mutex*, const absl::Condition&);
using WhenTimeout = bool (*)(absl::Mutex*, const absl::Condition&, absl::Duration);
using WhenDeadline = bool (*)(absl::Mutex*, const absl::Condition&, absl::Time);
using WaitFn = void (*)(absl::CondVar*, absl::Mutex*);
using WaitTimeoutFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Duration);
using WaitDeadlineFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Time);

constexpr unsigned kRead = __tsan_mutex_read_lock;

// Abseil's own functions call each other through the PLT, so they land here too (for example
// CondVar::WaitWithTimeout calls CondVar::WaitWithDeadline). Only the outermost call on a thread
// annotates; nested ones go straight to the library.
thread_local int shim_depth = 0;
struct Outermost {
  Outermost() : outer(shim_depth++ == 0) {}
  ~Outermost() { --shim_depth; }
  const bool outer;
};

// Lock / unlock around a call that acquires (or releases) `mu` in mode `flags`.
template <typename F>
auto Locking(absl::Mutex* mu, unsigned flags, F call) {
  Outermost scope;
  if (!scope.outer) return call();
  __tsan_mutex_pre_lock(mu, flags);
  auto result = call();
  __tsan_mutex_post_lock(mu, flags, 0);
  return result;
}
template <typename F>
void Unlocking(absl::Mutex* mu, unsigned flags, F call) {
  Outermost scope;
  if (!scope.outer) return call();
  __tsan_mutex_pre_unlock(mu, flags);
  call();
  __tsan_mutex_post_unlock(mu, flags);
}
// A call that releases `mu` (held in write mode), waits, and reacquires it: Await, CondVar::Wait.
// The whole wait stays inside the pre_unlock .. post_unlock bracket, where TSan ignores this
// thread's memory accesses: Abseil evaluates the Condition there while it really holds `mu`
// (which TSan, told of the unlock, could not know), so without the bracket every guarded read in a
// Condition would be reported as a race with the next writer.
template <typename F>
auto Waiting(absl::Mutex* mu, F call) {
  Outermost scope;
  if (!scope.outer) return call();
  __tsan_mutex_pre_unlock(mu, 0);
  auto result = call();
  __tsan_mutex_post_unlock(mu, 0);
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_mutex_post_lock(mu, 0, 0);
  return result;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  STRATA_REAL(Plain, "5Mutex4LockEv");
  Locking(this, 0, [&] { return (real(this), 0); });
}
void Mutex::ReaderLock() {
  STRATA_REAL(Plain, "5Mutex10ReaderLockEv");
  Locking(this, kRead, [&] { return (real(this), 0); });
}
void Mutex::Unlock() {
  STRATA_REAL(Plain, "5Mutex6UnlockEv");
  Unlocking(this, 0, [&] { real(this); });
}
void Mutex::ReaderUnlock() {
  STRATA_REAL(Plain, "5Mutex12ReaderUnlockEv");
  Unlocking(this, kRead, [&] { real(this); });
}

bool Mutex::TryLock() {
  STRATA_REAL(Try, "5Mutex7TryLockEv");
  Outermost scope;
  if (!scope.outer) return real(this);
  __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  const bool locked = real(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed),
                         0);
  return locked;
}
bool Mutex::ReaderTryLock() {
  STRATA_REAL(Try, "5Mutex13ReaderTryLockEv");
  Outermost scope;
  if (!scope.outer) return real(this);
  const unsigned flags = kRead | __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(this, flags);
  const bool locked = real(this);
  __tsan_mutex_post_lock(this, flags | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
  return locked;
}

void Mutex::LockWhen(const Condition& cond) {
  STRATA_REAL(When, "5Mutex8LockWhenERKNS0_9ConditionE");
  Locking(this, 0, [&] { return (real(this, cond), 0); });
}
void Mutex::ReaderLockWhen(const Condition& cond) {
  STRATA_REAL(When, "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Locking(this, kRead, [&] { return (real(this, cond), 0); });
}
// The *WithTimeout / *WithDeadline forms hold the mutex on return whatever they return.
bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  STRATA_REAL(WhenTimeout, "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return Locking(this, 0, [&] { return real(this, cond, timeout); });
}
bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  STRATA_REAL(WhenDeadline, "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return Locking(this, 0, [&] { return real(this, cond, deadline); });
}
bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  STRATA_REAL(WhenTimeout, "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return Locking(this, kRead, [&] { return real(this, cond, timeout); });
}
bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  STRATA_REAL(WhenDeadline, "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return Locking(this, kRead, [&] { return real(this, cond, deadline); });
}

void Mutex::Await(const Condition& cond) {
  STRATA_REAL(When, "5Mutex5AwaitERKNS0_9ConditionE");
  Waiting(this, [&] { return (real(this, cond), 0); });
}
bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  STRATA_REAL(WhenTimeout, "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return Waiting(this, [&] { return real(this, cond, timeout); });
}
bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  STRATA_REAL(WhenDeadline, "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return Waiting(this, [&] { return real(this, cond, deadline); });
}

void CondVar::Wait(Mutex* mu) {
  STRATA_REAL(WaitFn, "7CondVar4WaitEPNS0_5MutexE");
  Waiting(mu, [&] { return (real(this, mu), 0); });
}
bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  STRATA_REAL(WaitTimeoutFn, "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return Waiting(mu, [&] { return real(this, mu, timeout); });
}
bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  STRATA_REAL(WaitDeadlineFn, "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return Waiting(mu, [&] { return real(this, mu, deadline); });
}

ABSL_NAMESPACE_END
}  // namespace absl

// Referenced by the link option that makes the linker keep this object (see CMakeLists.txt).
extern "C" void StrataAbslMutexTsanShim() {}
