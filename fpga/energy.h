// Energy per operation, per backend, and the conversion of OpCounts into joules.
//
// The constants are documented estimates, not measurements of this machine (docs/fpga.md):
//
//   Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, 0.9 V:
//     8-bit int multiply 0.2 pJ, 32-bit int add 0.1 pJ  -> int8 MAC into int32 = 0.3 pJ.
//       (The often-quoted 0.23 pJ pairs the 8-bit multiply with an 8-bit add, 0.03 pJ; our
//       accumulators are 32-bit, so we charge the 32-bit add.)
//     fp32 multiply 3.7 pJ, fp32 add 0.9 pJ             -> fp32 MAC = 4.6 pJ.
//     fp64: not in the table; multiplier energy grows about with the square of the mantissa
//       width (53^2 / 24^2 ~ 4.9), so we estimate 4 x fp32 -> fp64 MAC = 18.4 pJ.
//     DRAM: 1.3-2.6 nJ per 64-bit access; we use 2.0 nJ / 8 bytes = 250 pJ/byte.
//   FPGA card (Alveo/Versal class, int8 GEMM on DSPs/AI engines): 0.6-1.1 pJ per int8 op from
//     AMD's measured efficiency figures (the project's MISSION.md anchor); midpoint 0.85 pJ/op,
//     2 ops per MAC -> 1.7 pJ per int8 MAC (fabric, routing and BRAM included).
//     Card memory: HBM2 ~3.9 pJ/bit (O'Connor et al., MICRO 2017) -> 31.2 pJ/byte.
//   PCIe host<->card: ~6 pJ/bit for a Gen3/Gen4 link's SerDes and controllers -> 48 pJ/byte on
//     the link, plus the host DRAM access at the host end (250 pJ/byte) -> 298 pJ/byte.
//
// cpu: Horowitz arithmetic and DRAM (a lower bound: it ignores instruction overhead).
// emu and xrt: the card's constants; emu models the card (its OpCounts are the card's dataflow),
// so its joules are what the card would spend, not what the simulating CPU burns.
#ifndef STRATA_FPGA_ENERGY_H_
#define STRATA_FPGA_ENERGY_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fpga/backend.h"

namespace strata::fpga {

struct EnergyTable {
  double int8_mac_pj = 0;
  double fp32_mac_pj = 0;
  double fp64_mac_pj = 0;
  double dram_pj_per_byte = 0;
  double host_link_pj_per_byte = 0;  // per byte crossing PCIe, either direction
};

// The host CPU's table (Horowitz arithmetic, host DRAM, no PCIe link).
EnergyTable HostEnergyTable();
// The FPGA card's table (the card's int8 MACs and HBM, PCIe plus host DRAM per byte moved).
EnergyTable CardEnergyTable();

// The table of a registered backend (fpga/registry.h: "cpu" the host's, "emu" and "xrt" the
// card's); INVALID_ARGUMENT for any other name.
absl::StatusOr<EnergyTable> EnergyTableFor(absl::string_view backend);

// sum(count * energy) over the OpCounts fields, in joules.
double Joules(const OpCounts& counts, const EnergyTable& table);

}  // namespace strata::fpga

#endif  // STRATA_FPGA_ENERGY_H_
