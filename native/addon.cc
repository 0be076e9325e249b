// The module entry (Linux): per-env state, JS errors, argument checks.
// Every function here runs on the JS thread that called it.
#include <napi.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "errors.h"
#include "mapping.h"
#include "uffd.h"

namespace farmem {

namespace {

// Per env (main thread and each worker that loads the addon), not per
// process: the probe is cheap, and envs must not share JS-facing state.
struct AddonData {
  bool probed = false;
  Capabilities caps;
  // Never reused, unlike the address of this struct: mappings name their creating env by it.
  uint64_t id = 0;
  // Set by restrictEnv() (a coffer's thread, and its pager thread): only its own mappings and those of
  // `also_reaches` (the pager: its coffer's), and no new userfaultfd.
  bool restricted = false;
  uint64_t also_reaches = 0;
};

std::atomic<uint64_t> next_env_id{1};

std::string TypeName(Napi::Value value) {
  switch (value.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "a boolean";
    case napi_number: return "a number";
    case napi_string: return "a string";
    case napi_symbol: return "a symbol";
    case napi_object: return "an object";
    case napi_function: return "a function";
    case napi_external: return "an external";
    case napi_bigint: return "a bigint";
    default: return "an unknown value";
  }
}

std::string FormatNumber(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

Napi::Value Probe(const Napi::CallbackInfo& info) {
  return CapabilitiesToJs(info.Env(), CachedCapabilities(info.Env()));
}

// restrictEnv(alsoReaches = 0): irreversible for this env (thread). A second call may not widen it.
Napi::Value RestrictEnv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* data = env.GetInstanceData<AddonData>();
  uint64_t also = 0;
  if (!info[0].IsUndefined() && !ToUint(env, info[0], "alsoReaches", &also)) return Napi::Value();
  if (data->restricted && also != data->also_reaches) {
    ThrowCodeError(env, "FARMEM_ISOLATION", "this thread is already restricted; its restriction cannot change");
    return Napi::Value();
  }
  data->restricted = true;
  data->also_reaches = also;
  return env.Undefined();
}

// setMoveWindowWriteForTest(offset): see SetMoveWindowWriteForTest (uffd.h); -1 disarms it.
Napi::Value SetMoveWindowWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) {
    ThrowTypeError(env, "setMoveWindowWriteForTest(offset): offset must be a number");
    return Napi::Value();
  }
  SetMoveWindowWriteForTest(info[0].As<Napi::Number>().Int64Value());
  return env.Undefined();
}

// setPartialMoveForTest(bytes, counted): see SetPartialMoveForTest (uffd.h); bytes -1 disarms it.
Napi::Value SetPartialMove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsBoolean()) {
    ThrowTypeError(env, "setPartialMoveForTest(bytes, counted): bytes must be a number and counted a boolean");
    return Napi::Value();
  }
  SetPartialMoveForTest(info[0].As<Napi::Number>().Int64Value(), info[1].As<Napi::Boolean>().Value());
  return env.Undefined();
}

// envId(): this env's never-reused id, for another thread's restrictEnv(alsoReaches).
Napi::Value GetEnvId(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(EnvId(info.Env())));
}

}  // namespace

uint64_t EnvId(Napi::Env env) { return env.GetInstanceData<AddonData>()->id; }

bool EnvRestricted(Napi::Env env) { return env.GetInstanceData<AddonData>()->restricted; }

bool EnvMayReach(Napi::Env env, uint64_t owner) {
  const AddonData* data = env.GetInstanceData<AddonData>();
  return !data->restricted || owner == data->id || (data->also_reaches != 0 && owner == data->also_reaches);
}

const Capabilities& CachedCapabilities(Napi::Env env) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (!data->probed) {
    data->caps = RunProbe();
    data->probed = true;
  }
  return data->caps;
}

namespace {

void SetNamed(napi_env env, napi_value object, const char* key, napi_value value) {
  if (value != nullptr) napi_set_named_property(env, object, key, value);
}

napi_value NewString(napi_env env, const std::string& text) {
  napi_value value;
  return napi_create_string_utf8(env, text.data(), text.size(), &value) == napi_ok ? value : nullptr;
}

void Throw(napi_env env, napi_value error) {
  if (error != nullptr) napi_throw(env, error);
}

}  // namespace

napi_value CodeError(napi_env env, const char* code, const std::string& message) {
  napi_value code_value = NewString(env, code), message_value = NewString(env, message), error;
  if (code_value == nullptr || message_value == nullptr) return nullptr;
  return napi_create_error(env, code_value, message_value, &error) == napi_ok ? error : nullptr;
}

napi_value SyscallError(napi_env env, int err, const char* syscall, const std::string& what) {
  const char* name = strerrorname_np(err);
  const std::string code = name != nullptr ? name : "UNKNOWN_ERRNO_" + std::to_string(err);
  const char* description = strerrordesc_np(err);
  napi_value error = CodeError(env, code.c_str(),
                               what + ": " + syscall + " failed: " +
                                   (description != nullptr ? description : "unknown error") + " (" + code + ")");
  if (error == nullptr) return nullptr;
  napi_value errno_value;
  if (napi_create_int32(env, err, &errno_value) == napi_ok) SetNamed(env, error, "errno", errno_value);
  SetNamed(env, error, "syscall", NewString(env, syscall));
  return error;
}

void ThrowSyscallError(napi_env env, int err, const char* syscall, const std::string& what) {
  Throw(env, SyscallError(env, err, syscall, what));
}

void ThrowCodeError(napi_env env, const char* code, const std::string& message) {
  Throw(env, CodeError(env, code, message));
}

void ThrowTypeError(napi_env env, const std::string& message) {
  napi_throw_type_error(env, nullptr, message.c_str());
}

void ThrowRangeError(napi_env env, const std::string& message) {
  napi_throw_range_error(env, nullptr, message.c_str());
}

std::string Hex(uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

bool ToUint(Napi::Env env, Napi::Value value, const char* name, uint64_t* out) {
  if (!value.IsNumber()) {
    ThrowTypeError(env, std::string(name) + " must be a number, got " + TypeName(value));
    return false;
  }
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != std::floor(d)) {
    ThrowRangeError(env, std::string(name) + " must be an integer in [0, 2^53), got " + FormatNumber(d));
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

bool ToPageAddress(Napi::Env env, Napi::Value value, const char* name, uint64_t page_size, uint64_t* out) {
  if (!ToUint(env, value, name, out)) return false;
  if (*out % page_size != 0) {
    ThrowRangeError(env, std::string(name) + " must be aligned to the page size (" + std::to_string(page_size) +
                             "), got " + Hex(*out));
    return false;
  }
  return true;
}

bool ToPageLength(Napi::Env env, Napi::Value value, const char* name, uint64_t page_size, uint64_t* out) {
  if (!ToUint(env, value, name, out)) return false;
  if (*out == 0 || *out % page_size != 0) {
    ThrowRangeError(env, std::string(name) + " must be a positive multiple of the page size (" +
                             std::to_string(page_size) + "), got " + std::to_string(*out));
    return false;
  }
  return true;
}

bool ToBool(Napi::Env env, Napi::Value value, const char* name, bool* out) {
  if (!value.IsBoolean()) {
    ThrowTypeError(env, std::string(name) + " must be a boolean, got " + TypeName(value));
    return false;
  }
  *out = value.As<Napi::Boolean>().Value();
  return true;
}

bool ToViewBytes(Napi::Env env, Napi::Value value, const char* name, ViewBytes* out) {
  if (value.IsTypedArray()) {
    Napi::TypedArray array = value.As<Napi::TypedArray>();
    void* data = array.ArrayBuffer().Data();
    out->data = data != nullptr ? static_cast<uint8_t*>(data) + array.ByteOffset() : nullptr;
    out->length = data != nullptr ? array.ByteLength() : 0;
    return true;
  }
  if (value.IsDataView()) {
    Napi::DataView view = value.As<Napi::DataView>();
    void* data = view.ArrayBuffer().Data();
    out->data = data != nullptr ? static_cast<uint8_t*>(data) + view.ByteOffset() : nullptr;
    out->length = data != nullptr ? view.ByteLength() : 0;
    return true;
  }
  ThrowTypeError(env, std::string(name) + " must be a TypedArray or DataView, got " + TypeName(value));
  return false;
}

bool CheckViewRange(Napi::Env env, const char* name, uint64_t offset, uint64_t length, size_t view_length) {
  if (offset > view_length || length > view_length - offset) {
    ThrowRangeError(env, "bytes [" + std::to_string(offset) + ", " + std::to_string(offset + length) +
                             ") are outside " + name + " (" + std::to_string(view_length) + " bytes)");
    return false;
  }
  return true;
}

}  // namespace farmem

// Runs once per env that loads the addon.
static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new farmem::AddonData();
  data->id = farmem::next_env_id.fetch_add(1);
  env.SetInstanceData(data);
  // A thread that ends without freeing its regions (a coffer killed, a worker that exits) can never free
  // them: let them go once no buffer of any thread holds them.
  napi_add_env_cleanup_hook(
      env, [](void* id) { farmem::ReleaseMappingsOf(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(id))); },
      reinterpret_cast<void*>(static_cast<uintptr_t>(data->id)));
  (void)exports.Set("restrictEnv", Napi::Function::New(env, farmem::RestrictEnv, "restrictEnv"));
  (void)exports.Set("envId", Napi::Function::New(env, farmem::GetEnvId, "envId"));
  (void)exports.Set("setMoveWindowWriteForTest",
                    Napi::Function::New(env, farmem::SetMoveWindowWrite, "setMoveWindowWriteForTest"));
  (void)exports.Set("setPartialMoveForTest",
                    Napi::Function::New(env, farmem::SetPartialMove, "setPartialMoveForTest"));
  (void)exports.Set("probe", Napi::Function::New(env, farmem::Probe, "probe"));
  (void)exports.Set("Uffd", farmem::Uffd::Define(env));
  farmem::RegisterMapping(env, exports);
  farmem::RegisterDeadline(env, exports);
  return exports;
}

NODE_API_MODULE(farmem_native, Init)
