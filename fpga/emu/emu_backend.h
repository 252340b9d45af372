// The "emu" backend: the FPGA kernels' own source compiled for the CPU (a C simulation), called
// directly. Bit-exact with the card; its OpCounts model the card's dataflow (fpga/dataflow.h).
#ifndef STRATA_FPGA_EMU_EMU_BACKEND_H_
#define STRATA_FPGA_EMU_EMU_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "fpga/backend.h"

namespace strata::fpga {

// Never fails; returns StatusOr for symmetry with the other factories.
absl::StatusOr<std::unique_ptr<Backend>> CreateEmuBackend(const BackendOptions& options);

}  // namespace strata::fpga

#endif  // STRATA_FPGA_EMU_EMU_BACKEND_H_
