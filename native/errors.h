// JS errors and argument checks shared by the native sources. Every helper
// that reports a problem leaves a JS exception pending and returns false (or an
// empty value): the addon is built without C++ exceptions.
#ifndef FARMEM_NATIVE_ERRORS_H_
#define FARMEM_NATIVE_ERRORS_H_

#include <napi.h>

#include <cstdint>
#include <string>

namespace farmem {

// JS errors are made and thrown with plain N-API calls whose failures are
// ignored: while a worker is being terminated every such call fails, and
// node-addon-api would turn a failed throw into a fatal error.

// An Error whose .code is the errno name ('EEXIST'), .errno the positive errno
// and .syscall the call that failed ('ioctl(UFFDIO_COPY)'). The message reads
// "<what>: <syscall> failed: <strerror> (<code>)". Null if it cannot be made.
napi_value SyscallError(napi_env env, int err, const char* syscall, const std::string& what);
void ThrowSyscallError(napi_env env, int err, const char* syscall, const std::string& what);

// An Error with a farmem code ('FARMEM_REGION_FREED', 'FARMEM_FEATURE_MISSING').
napi_value CodeError(napi_env env, const char* code, const std::string& message);
void ThrowCodeError(napi_env env, const char* code, const std::string& message);
void ThrowTypeError(napi_env env, const std::string& message);
// The env's never-reused id, and whether restrictEnv() was called in it (addon.cc).
uint64_t EnvId(Napi::Env env);
bool EnvRestricted(Napi::Env env);
// Whether this env may reach a mapping created by env `owner` (always, unless restricted).
bool EnvMayReach(Napi::Env env, uint64_t owner);
void ThrowRangeError(napi_env env, const std::string& message);

// "0x7f12345000", for messages.
std::string Hex(uint64_t value);

// A JS number that is an integer in [0, 2^53).
bool ToUint(Napi::Env env, Napi::Value value, const char* name, uint64_t* out);
// An address aligned to page_size.
bool ToPageAddress(Napi::Env env, Napi::Value value, const char* name, uint64_t page_size, uint64_t* out);
// A length that is positive and a multiple of page_size.
bool ToPageLength(Napi::Env env, Napi::Value value, const char* name, uint64_t page_size, uint64_t* out);
bool ToBool(Napi::Env env, Napi::Value value, const char* name, bool* out);

// The bytes of an ArrayBufferView (TypedArray or DataView); null data when detached.
struct ViewBytes {
  uint8_t* data;
  size_t length;
};
bool ToViewBytes(Napi::Env env, Napi::Value value, const char* name, ViewBytes* out);

// Checks that [offset, offset + length) lies inside a view of view_length bytes.
bool CheckViewRange(Napi::Env env, const char* name, uint64_t offset, uint64_t length, size_t view_length);

}  // namespace farmem

#endif  // FARMEM_NATIVE_ERRORS_H_
