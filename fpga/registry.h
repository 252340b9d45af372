// The registry of compiled-in backends: for each one its name, factory, availability probe and
// energy table, in one table (fpga/registry.cc), and the one rule "auto" follows. Shaped after
// ggml's backend registry (ggml-backend-reg): code that needs "a backend by name", the list of
// names, or the table a backend's OpCounts are priced with asks here instead of listing the
// backends itself.
//
// CreateBackend and BackendNames (fpga/backend.h) and EnergyTableFor (fpga/energy.h) are thin
// look-ups in this table.
#ifndef STRATA_FPGA_REGISTRY_H_
#define STRATA_FPGA_REGISTRY_H_

#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fpga/backend.h"
#include "fpga/energy.h"

namespace strata::fpga {

// One compiled-in backend.
struct BackendRegistration {
  absl::string_view name;  // "cpu", "emu", "xrt"
  // Creates the backend; each factory's header (fpga/<name>/<name>_backend.h) states its errors.
  absl::StatusOr<std::unique_ptr<Backend>> (*create)(const BackendOptions& options);
  // Whether `create` can be expected to succeed, cheaply (opens no device): OK, or the reason it
  // cannot (xrt: no card, no xclbin file). cpu and emu are always available.
  absl::Status (*available)(const BackendOptions& options);
  // What the backend's OpCounts cost (fpga/energy.h: the host's table for cpu, the card's for emu
  // and xrt, since emu's counts model the card's dataflow).
  EnergyTable energy;
};

// The compiled-in backends, in the order "cpu", "emu", "xrt". Never empty; "cpu" is first.
std::span<const BackendRegistration> Backends();

// The backend registered as `name`, or null ("auto" is a rule, not a backend: null too).
const BackendRegistration* FindBackend(absl::string_view name);

// What "auto" chose, and why (for logs and the server's device description).
struct AutoChoice {
  std::unique_ptr<Backend> backend;
  std::string reason;
};

// The one "auto" rule for the int8 backends: xrt if it is available (XRT sees a card and
// options.xclbin_path names an existing file) and opens (the card accepts the xclbin); else cpu.
// emu is never chosen automatically: it is a slow simulation, as exact as cpu. Never fails for
// lack of a card. (A model without int8 quantisation runs on no backend at all: strata-server's
// --device=auto then serves the float lower tier, server/device.h.) Thread-compatible.
absl::StatusOr<AutoChoice> ChooseAutoBackend(const BackendOptions& options);

}  // namespace strata::fpga

#endif  // STRATA_FPGA_REGISTRY_H_
