// The module entry off Linux: userfaultfd does not exist there, so the only
// export is probe(), which says so. The memory node runs without the addon.
#include <napi.h>

static Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  (void)o.Set("platformSupported", Napi::Boolean::New(env, false));
  (void)o.Set("mode", Napi::String::New(env, "unavailable"));
  (void)o.Set("source", Napi::String::New(env, "none"));
  (void)o.Set("errno", Napi::Number::New(env, 0));
  (void)o.Set("reason", Napi::String::New(env, "userfaultfd exists only on Linux; run the pager on Linux "
                                                "(a memory node runs anywhere)"));
  (void)o.Set("apiFeatures", Napi::Number::New(env, 0));
  (void)o.Set("writeProtect", Napi::Boolean::New(env, false));
  (void)o.Set("wpUnpopulated", Napi::Boolean::New(env, false));
  (void)o.Set("wpAsync", Napi::Boolean::New(env, false));
  (void)o.Set("poison", Napi::Boolean::New(env, false));
  (void)o.Set("move", Napi::Boolean::New(env, false));
  (void)o.Set("threadId", Napi::Boolean::New(env, false));
  (void)o.Set("registerIoctls", Napi::Number::New(env, 0));
  (void)o.Set("pageSize", Napi::Number::New(env, 0));
  (void)o.Set("kernelRelease", Napi::String::New(env, ""));
  return o;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  (void)exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
  return exports;
}

NODE_API_MODULE(farmem_native, Init)
