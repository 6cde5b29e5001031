// Replaces the global operator new and delete of a test executable with two functions the
// test defines, so that it can count or fail the library's allocations (the library is a
// shared object: its C++ allocations resolve to the executable's operators). Include it in
// exactly one file of the executable.
#pragma once

#include <cstddef>
#include <new>

namespace global_new {

// n bytes aligned to align (0: the default alignment); nullptr or std::bad_alloc on failure.
void *allocate(std::size_t n, std::size_t align);
void release(void *p) noexcept;

inline void *or_throw(std::size_t n, std::size_t align) {
  void *p = allocate(n, align);
  if (!p) throw std::bad_alloc();
  return p;
}
inline void *or_null(std::size_t n, std::size_t align) noexcept {
  try {
    return allocate(n, align);
  } catch (const std::bad_alloc &) {
    return nullptr;
  }
}

}  // namespace global_new

void *operator new(std::size_t n) { return global_new::or_throw(n, 0); }
void *operator new[](std::size_t n) { return global_new::or_throw(n, 0); }
void *operator new(std::size_t n, const std::nothrow_t &) noexcept { return global_new::or_null(n, 0); }
void *operator new[](std::size_t n, const std::nothrow_t &) noexcept { return global_new::or_null(n, 0); }
void *operator new(std::size_t n, std::align_val_t a) { return global_new::or_throw(n, std::size_t(a)); }
void *operator new[](std::size_t n, std::align_val_t a) { return global_new::or_throw(n, std::size_t(a)); }
void *operator new(std::size_t n, std::align_val_t a, const std::nothrow_t &) noexcept {
  return global_new::or_null(n, std::size_t(a));
}
void *operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t &) noexcept {
  return global_new::or_null(n, std::size_t(a));
}
void operator delete(void *p) noexcept { global_new::release(p); }
void operator delete[](void *p) noexcept { global_new::release(p); }
void operator delete(void *p, std::size_t) noexcept { global_new::release(p); }
void operator delete[](void *p, std::size_t) noexcept { global_new::release(p); }
void operator delete(void *p, std::align_val_t) noexcept { global_new::release(p); }
void operator delete[](void *p, std::align_val_t) noexcept { global_new::release(p); }
void operator delete(void *p, std::size_t, std::align_val_t) noexcept { global_new::release(p); }
void operator delete[](void *p, std::size_t, std::align_val_t) noexcept { global_new::release(p); }
void operator delete(void *p, const std::nothrow_t &) noexcept { global_new::release(p); }
void operator delete[](void *p, const std::nothrow_t &) noexcept { global_new::release(p); }
