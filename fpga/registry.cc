#include "fpga/registry.h"

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/log.h"
#include "fpga/cpu/cpu_backend.h"
#include "fpga/emu/emu_backend.h"
#include "fpga/xrt/xrt_backend.h"

namespace strata::fpga {
namespace {

absl::Status AlwaysAvailable(const BackendOptions&) { return absl::OkStatus(); }

const std::array<BackendRegistration, 3>& Registry() {
  static const std::array<BackendRegistration, 3> registry = {{
      {"cpu", CreateCpuBackend, AlwaysAvailable, HostEnergyTable()},
      {"emu", CreateEmuBackend, AlwaysAvailable, CardEnergyTable()},
      {"xrt", CreateXrtBackend, XrtCardAndXclbinPresent, CardEnergyTable()},
  }};
  return registry;
}

constexpr absl::string_view kAuto = "auto";

}  // namespace

std::span<const BackendRegistration> Backends() { return Registry(); }

const BackendRegistration* FindBackend(absl::string_view name) {
  for (const BackendRegistration& backend : Registry()) {
    if (backend.name == name) return &backend;
  }
  return nullptr;
}

absl::StatusOr<AutoChoice> ChooseAutoBackend(const BackendOptions& options) {
  const BackendRegistration& xrt = *FindBackend("xrt");
  absl::Status unavailable = xrt.available(options);
  if (unavailable.ok()) {
    absl::StatusOr<std::unique_ptr<Backend>> opened = xrt.create(options);
    if (opened.ok()) {
      return AutoChoice{*std::move(opened), "auto: a card and the xclbin are present"};
    }
    unavailable = opened.status();
  }
  absl::StatusOr<std::unique_ptr<Backend>> cpu = FindBackend("cpu")->create(options);
  if (!cpu.ok()) return cpu.status();
  return AutoChoice{*std::move(cpu), absl::StrCat("auto chose cpu because xrt is unavailable: ",
                                                  unavailable.message())};
}

std::vector<std::string> BackendNames() {
  std::vector<std::string> names;
  for (const BackendRegistration& backend : Registry()) names.emplace_back(backend.name);
  names.emplace_back(kAuto);
  return names;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(absl::string_view name,
                                                       const BackendOptions& options) {
  if (const BackendRegistration* backend = FindBackend(name); backend != nullptr) {
    return backend->create(options);
  }
  if (name == kAuto) {
    absl::StatusOr<AutoChoice> chosen = ChooseAutoBackend(options);
    if (!chosen.ok()) return chosen.status();
    STRATA_LOG(INFO) << "backend auto: chose " << chosen->backend->info().name << " ("
                     << chosen->backend->info().description << "); " << chosen->reason;
    return std::move(chosen->backend);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown backend '", std::string(name), "'; known: ", absl::StrJoin(BackendNames(), ", ")));
}

absl::StatusOr<EnergyTable> EnergyTableFor(absl::string_view backend) {
  if (const BackendRegistration* registered = FindBackend(backend); registered != nullptr) {
    return registered->energy;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no energy table for backend '", std::string(backend), "'"));
}

}  // namespace strata::fpga
