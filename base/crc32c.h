// CRC-32C (Castagnoli), the checksum of every Strata file format.
#ifndef STRATA_BASE_CRC32C_H_
#define STRATA_BASE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace strata::base {

// Extends `crc` (the CRC-32C of some preceding bytes, or 0 for none) with `n` bytes at `data`.
// Uses the SSE4.2 crc32 instruction when the CPU has it, else a table. Thread-safe.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

}  // namespace strata::base

#endif  // STRATA_BASE_CRC32C_H_
