#include "server/device.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fpga/xrt/xrt_backend.h"

namespace strata::server {
namespace {

absl::StatusOr<Device> OpenBackend(const std::string& name, const fpga::BackendOptions& options,
                                   std::string why) {
  absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend(name, options);
  if (!backend.ok()) return backend.status();
  absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor(name);
  if (!table.ok()) return table.status();
  Device device;
  device.name = name;
  device.description = absl::StrCat("int8 lower tier on the ", name, " backend (",
                                     (*backend)->info().description, ")", why);
  device.backend = *std::move(backend);
  device.energy_table = *table;
  device.energy_table_name = name;
  return device;
}

}  // namespace

std::vector<std::string> DeviceNames() { return {"float", "cpu", "emu", "xrt", "auto"}; }

absl::StatusOr<Device> OpenDevice(const DeviceOptions& options) {
  fpga::BackendOptions backend_options;
  backend_options.xclbin_path = options.xclbin_path;
  backend_options.xrt_device_index = options.xrt_device_index;
  const std::string& name = options.device;
  if (name == "float") {
    Device device;
    device.name = "float";
    device.description = "float lower tier (Eigen fp32)";
    device.energy_table = *fpga::EnergyTableFor("cpu");
    device.energy_table_name = "cpu";
    return device;
  }
  if (name == "cpu" || name == "emu" || name == "xrt") {
    return OpenBackend(name, backend_options, "");
  }
  if (name == "auto") {
    absl::Status card = fpga::XrtCardAndXclbinPresent(backend_options);
    if (card.ok()) {
      absl::StatusOr<Device> xrt =
          OpenBackend("xrt", backend_options, "; auto: a card and the xclbin are present");
      if (xrt.ok()) return xrt;
      card = xrt.status();
    }
    return OpenBackend("cpu", backend_options,
                       absl::StrCat("; auto chose cpu because xrt is unavailable: ",
                                    card.message()));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown device '", name,
                                                 "'; known: ", absl::StrJoin(DeviceNames(), ", ")));
}

}  // namespace strata::server
