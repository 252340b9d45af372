// The cpu backend's dense int8 product on oneDNN (Debian's libdnnl-dev 2.6): its brgemm kernels
// reach about 90 % of this machine's VNNI peak on the lower tier's expansion (M = 64, K = 2352,
// N = 4096), where the hand-written kernel (int8_gemm.h) reaches about a third, as they block
// for the caches and the hand-written one streams B from L2 for every 4 rows.
//
// C[r][o] = sum_k A'[r][k] * B[o][k] in int32, with A' = A xor 0x80 unsigned and B signed: the
// same product as int8_gemm.h's MultiplyPacked (the caller removes the +128 bias). The products
// and their int32 sums are exact integer arithmetic in any order, so the result is bit-identical
// to every other backend's; only oneDNN's VNNI (and AMX) kernels are used, because without VNNI
// oneDNN sums u8 x s8 pairs in saturating 16-bit arithmetic (vpmaddubsw), which is not exact.
//
// oneDNN primitives are created for fixed shapes (its runtime-dimension kernels are slower): one
// per number of rows, made on first use (a few milliseconds of code generation) and cached.
// Thread-safety: Multiply is thread-safe (each call has its own scratchpad).
#ifndef STRATA_FPGA_CPU_ONEDNN_MATMUL_H_
#define STRATA_FPGA_CPU_ONEDNN_MATMUL_H_

#include <cstdint>
#include <map>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace strata::fpga::cpu {

class OnednnInt8Matmul {
 public:
  // B is out x in int8, row-major (a dense layer's weights); A' rows will be lda >= in bytes
  // apart. Null if oneDNN has no exact (VNNI or AMX) kernel for this shape on this CPU; the
  // caller then uses its own kernel.
  static std::unique_ptr<OnednnInt8Matmul> Create(const int8_t* weights, int out, int in,
                                                  int64_t lda);
  ~OnednnInt8Matmul();

  // c (rows x out, leading dimension out) = A' B^T for `rows` rows of A' (in bytes each, lda
  // apart, as given to Create). On `threads` OpenMP threads (0: OpenMP's default; inside a parallel
  // region oneDNN runs on the calling thread). False (nothing written) if oneDNN offers no exact
  // kernel for this number of rows: the caller computes it another way.
  bool Multiply(const uint8_t* a, int rows, int32_t* c, int threads) const;

 private:
  struct Weights;    // B in the layout oneDNN's kernels chose
  struct Primitive;  // one number of rows
  OnednnInt8Matmul(int out, int in, int64_t lda);
  // The primitive for `rows` rows, created on first use; null if none is exact.
  const Primitive* ForRows(int rows) const;

  const int out_, in_;
  const int64_t lda_;
  std::unique_ptr<Weights> weights_;
  mutable absl::Mutex mu_;
  mutable std::map<int, std::unique_ptr<Primitive>> primitives_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::fpga::cpu

#endif  // STRATA_FPGA_CPU_ONEDNN_MATMUL_H_
