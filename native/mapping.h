// Anonymous mappings exposed to JS as external ArrayBuffers. A mapping lives
// until the registry and every ArrayBuffer over it have let go of it, so a
// thread still holding a buffer never touches unmapped memory.
#ifndef FARMEM_NATIVE_MAPPING_H_
#define FARMEM_NATIVE_MAPPING_H_

#include <napi.h>

#include <cstdint>

namespace farmem {

// mapCreate, storageCreate, mapAttach, mapRelease, dropRange, readOut.
void RegisterMapping(Napi::Env env, Napi::Object exports);
// In a restricted env (restrictEnv), true only if [address, address + length) lies in a mapping it may
// reach; otherwise throws (FARMEM_ISOLATION) and returns false. Always true elsewhere.
bool CheckRestrictedRange(Napi::Env env, uint64_t address, uint64_t length);
// mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE) of `length` bytes starting on a
// multiple of `align` (a power of two, at least a page): more is mapped and the slack unmapped. Returns
// MAP_FAILED with errno set, as mmap does.
void* MapAligned(uint64_t length, uint64_t align);
// Releases the registry's references to the mappings env `owner` created (its cleanup hook calls this).
void ReleaseMappingsOf(uint64_t owner);
// deadline.cc: callWithDeadline.
void RegisterDeadline(Napi::Env env, Napi::Object exports);

}  // namespace farmem

#endif  // FARMEM_NATIVE_MAPPING_H_
