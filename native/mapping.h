// Anonymous mappings exposed to JS as external ArrayBuffers. A mapping lives
// until the registry and every ArrayBuffer over it have let go of it, so a
// thread still holding a buffer never touches unmapped memory.
#ifndef FARMEM_NATIVE_MAPPING_H_
#define FARMEM_NATIVE_MAPPING_H_

#include <napi.h>

namespace farmem {

// mapCreate, mapAttach, mapRelease, dropRange, readOut.
void RegisterMapping(Napi::Env env, Napi::Object exports);
// deadline.cc: callWithDeadline.
void RegisterDeadline(Napi::Env env, Napi::Object exports);

}  // namespace farmem

#endif  // FARMEM_NATIVE_MAPPING_H_
