// The "xrt" backend: an AMD/Xilinx Alveo card running strata_dense_int8 and strata_gram_int8 from
// an xclbin, through XRT's native C++ API. This header includes no XRT header: only
// fpga/xrt/xrt_backend.cc does.
#ifndef STRATA_FPGA_XRT_XRT_BACKEND_H_
#define STRATA_FPGA_XRT_XRT_BACKEND_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fpga/backend.h"

namespace strata::fpga {

// Opens card options.xrt_device_index, loads options.xclbin_path and looks both kernels up.
// Checks, in order: the xclbin file exists if a path is given (NOT_FOUND); a card is present
// (FAILED_PRECONDITION, the "no FPGA card found" message of backend.h); the index is in range and
// a path was given (INVALID_ARGUMENT); the file is an xclbin with both kernels (INVALID_ARGUMENT);
// the device accepts it (UNAVAILABLE, with XRT's message).
absl::StatusOr<std::unique_ptr<Backend>> CreateXrtBackend(const BackendOptions& options);

// OK if XRT sees at least one card and options.xclbin_path names an existing file; otherwise the
// reason (the same statuses as CreateXrtBackend's first checks). Cheap: opens no device.
absl::Status XrtCardAndXclbinPresent(const BackendOptions& options);

}  // namespace strata::fpga

#endif  // STRATA_FPGA_XRT_XRT_BACKEND_H_
