// The device the served lower tier computes on (strata-server --device): the float Eigen path, or
// the int8 lower tier (model/quantized_lower_tier.h) on an fpga::Backend (fpga/backend.h).
//
//   float  model::LowerTier in fp32 (Eigen), priced with the "cpu" energy table.
//   cpu    int8 on the CPU backend (AVX-512 VNNI where available); bit-exact with emu and xrt.
//   emu    int8 on the FPGA kernels' C simulation: bit-exact with the card, slow; priced as the
//          card would spend (fpga/energy.h).
//   xrt    int8 on an Alveo card through XRT, running the kernels of --xclbin.
//   auto   xrt when XRT sees a card and --xclbin names an existing file (and the card accepts it),
//          else cpu (fpga::ChooseAutoBackend, the one rule, fpga/registry.h; emu is a slow
//          simulation, never a sensible automatic choice), the reason recorded in
//          Device::description; and float for a bundle without int8 scales
//          (Device::ServedBackend, once the bundle is read).
// The names other than float are the fpga registry's (fpga/registry.h).
// docs/operations.md ("Device") explains the default and the trade-offs.
#ifndef STRATA_SERVER_DEVICE_H_
#define STRATA_SERVER_DEVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/backend.h"

namespace strata::server {

struct DeviceOptions {
  // One of DeviceNames().
  std::string device = "auto";
  // xrt and auto: the xclbin holding strata_dense_int8 and strata_gram_int8. Empty: none.
  std::string xclbin_path;
  // xrt and auto: the card's index in XRT's enumeration.
  unsigned int xrt_device_index = 0;
};

// An opened device. Movable, not copyable; owns its backend.
struct Device {
  std::string name;         // what runs: "float", "cpu", "emu" or "xrt" (never "auto")
  std::string description;  // for logs: the backend's description, and for auto why it chose
  // The backend the int8 lower tier runs on; null for "float".
  std::unique_ptr<fpga::Backend> backend;
  // Opened as "auto": ServedBackend may still choose float.
  bool automatic = false;

  // The backend to serve a bundle's lower tier on, or null for the float lower tier: `backend`,
  // except that an automatic device serves float when the bundle has no int8 activation scales
  // (the last step of the auto rule above). Not owned: valid while this Device lives.
  fpga::Backend* ServedBackend(bool bundle_has_int8_scales) const;
};

// "float", then fpga::BackendNames(): "cpu", "emu", "xrt", "auto".
std::vector<std::string> DeviceNames();

// Opens the device. INVALID_ARGUMENT for an unknown name (listing the known ones); for xrt, the
// backend's errors unchanged (fpga::CreateBackend: with no card, FAILED_PRECONDITION "xrt backend:
// no FPGA card found ...; pick another device with --device=emu or --device=cpu"). auto never
// fails for lack of a card. Thread-compatible; call once at start-up.
absl::StatusOr<Device> OpenDevice(const DeviceOptions& options);

}  // namespace strata::server

#endif  // STRATA_SERVER_DEVICE_H_
