// The "cpu" backend: the reference implementation, in plain C++ with an AVX-512 VNNI int8 GEMM
// (fpga/cpu/int8_gemm.h) when the build targets a CPU that has it. Integer arithmetic is exact, so
// it equals the kernels (emu, xrt) bit for bit.
#ifndef STRATA_FPGA_CPU_CPU_BACKEND_H_
#define STRATA_FPGA_CPU_CPU_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "fpga/backend.h"

namespace strata::fpga {

// Never fails; returns StatusOr for symmetry with the other factories.
absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options);

}  // namespace strata::fpga

#endif  // STRATA_FPGA_CPU_CPU_BACKEND_H_
