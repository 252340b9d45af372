#include "server/device.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fpga/registry.h"

namespace strata::server {
namespace {

constexpr char kFloat[] = "float";

Device Int8Device(std::unique_ptr<fpga::Backend> backend, absl::string_view why) {
  Device device;
  device.name = backend->info().name;
  device.description = absl::StrCat("int8 lower tier on the ", device.name, " backend (",
                                    backend->info().description, ")", why);
  device.backend = std::move(backend);
  return device;
}

}  // namespace

std::vector<std::string> DeviceNames() {
  std::vector<std::string> names = {kFloat};
  for (std::string& name : fpga::BackendNames()) names.push_back(std::move(name));
  return names;
}

absl::StatusOr<Device> OpenDevice(const DeviceOptions& options) {
  fpga::BackendOptions backend_options;
  backend_options.xclbin_path = options.xclbin_path;
  backend_options.xrt_device_index = options.xrt_device_index;
  const std::string& name = options.device;
  if (name == kFloat) {
    Device device;
    device.name = kFloat;
    device.description = "float lower tier (Eigen fp32)";
    return device;
  }
  if (const fpga::BackendRegistration* registered = fpga::FindBackend(name);
      registered != nullptr) {
    absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = registered->create(backend_options);
    if (!backend.ok()) return backend.status();
    return Int8Device(*std::move(backend), "");
  }
  if (name == "auto") {
    absl::StatusOr<fpga::AutoChoice> chosen = fpga::ChooseAutoBackend(backend_options);
    if (!chosen.ok()) return chosen.status();
    Device device = Int8Device(std::move(chosen->backend), absl::StrCat("; ", chosen->reason));
    device.automatic = true;
    return device;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", name, "'; known: ", absl::StrJoin(DeviceNames(), ", ")));
}

fpga::Backend* Device::ServedBackend(bool bundle_has_int8_scales) const {
  if (automatic && !bundle_has_int8_scales) return nullptr;
  return backend.get();
}

}  // namespace strata::server
