# `make engine` hands this to llama-cpp-python's build (CMAKE_PROJECT_INCLUDE: read after every project() call).
# llama-cpp-python turns llama.cpp's `common` library on (FORCE) although its bindings load only libllama and
# ggml: `common` serves llama.cpp's own tools and examples, and compiling it is about half of the build's CPU.
if(PROJECT_NAME STREQUAL "llama.cpp")
  set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
endif()
