// dtype.h: the element types a Tensor can hold, their sizes and names, and the
// bf16/f16 <-> f32 conversions (round-to-nearest-even) every backend agrees on.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace loom::runtime {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType dtype_from_name(const std::string& name);  // throws on an unknown name
inline bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}
inline bool is_half(DType t) { return t == DType::bf16 || t == DType::f16; }

// Storage-only 16-bit floats; arithmetic happens in f32.
struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };

inline float bf16_to_float(bf16 h) {
  uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{uint16_t(u >> 16)};
}
float f16_to_float(f16 h);
f16 float_to_f16(float f);

// Maps a C++ type to its DType (used by typed accessors and kernels).
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };

}  // namespace loom::runtime
