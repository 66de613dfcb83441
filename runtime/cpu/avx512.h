// cpu/avx512.h: AVX-512 helpers shared by the kernels built with AVX-512 flags whatever the
// target (cpu/gemm_bf16.cpp, cpu/gemm_avx512.cpp; see runtime/CMakeLists.txt). Include it
// only from those files: their code runs only where the CPU has been checked at run time.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace loom::runtime::cpu::avx512 {

// Lanes [0, n) set, for any n (none when n <= 0, all when n >= 16).
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// Sixteen floats from p, the first n of them (n <= 0: none, the rest zero); never reads past
// them.
inline __m512 load16(const float* p, int64_t n) {
  if (n >= 16) return _mm512_loadu_ps(p);
  if (n <= 0) return _mm512_setzero_ps();
  return _mm512_maskz_loadu_ps(first_lanes(n), p);
}

// r[i][j] <- r[j][i] for a 16 x 16 matrix of 32-bit units held in 16 registers.
inline void transpose16x16(__m512i r[16]) {
  __m512i a[16] = {}, b[16] = {};  // (initialised: gcc 12 warns otherwise)
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // b[4g + c], 128-bit lane L: rows 4g..4g+3 of column 4L + c.
  for (int g = 0; g < 16; g += 4) {
    b[g] = _mm512_unpacklo_epi64(a[g], a[g + 2]);
    b[g + 1] = _mm512_unpackhi_epi64(a[g], a[g + 2]);
    b[g + 2] = _mm512_unpacklo_epi64(a[g + 1], a[g + 3]);
    b[g + 3] = _mm512_unpackhi_epi64(a[g + 1], a[g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i c0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44), c1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
    const __m512i c2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44),
                  c3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(c0, c2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(c1, c3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
  }
}

}  // namespace loom::runtime::cpu::avx512
