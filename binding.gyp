{
  "targets": [
    {
      "target_name": "farmem_native",
      "sources": ["native/addon.cc", "native/uffd.cc", "native/mapping.cc", "native/deadline.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_ENABLE_MAYBE", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti"],
      "conditions": [
        ["OS!='linux'", { "sources!": ["native/addon.cc", "native/uffd.cc", "native/mapping.cc", "native/deadline.cc"], "sources": ["native/unsupported.cc"] }]
      ]
    }
  ]
}
