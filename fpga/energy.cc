#include "fpga/energy.h"

namespace strata::fpga {
namespace {

constexpr double kHorowitzInt8MacPj = 0.2 + 0.1;  // 8-bit multiply + 32-bit add
constexpr double kHorowitzFp32MacPj = 3.7 + 0.9;
constexpr double kFp64MacPj = 4 * kHorowitzFp32MacPj;
constexpr double kHostDramPjPerByte = 2000.0 / 8;  // 2.0 nJ per 64-bit access
constexpr double kCardInt8MacPj = 2 * 0.85;        // 0.85 pJ/op, 2 ops per MAC
constexpr double kCardHbmPjPerByte = 3.9 * 8;
constexpr double kPcieLinkPjPerByte = 6.0 * 8;

}  // namespace

EnergyTable HostEnergyTable() {
  EnergyTable table;
  table.int8_mac_pj = kHorowitzInt8MacPj;
  table.fp32_mac_pj = kHorowitzFp32MacPj;
  table.fp64_mac_pj = kFp64MacPj;
  table.dram_pj_per_byte = kHostDramPjPerByte;
  table.host_link_pj_per_byte = 0;  // no card
  return table;
}

EnergyTable CardEnergyTable() {
  // The host's fp32 and fp64 figures: the card has no float path.
  EnergyTable table = HostEnergyTable();
  table.int8_mac_pj = kCardInt8MacPj;
  table.dram_pj_per_byte = kCardHbmPjPerByte;
  table.host_link_pj_per_byte = kPcieLinkPjPerByte + kHostDramPjPerByte;
  return table;
}

double Joules(const OpCounts& c, const EnergyTable& t) {
  const double pj = static_cast<double>(c.int8_macs) * t.int8_mac_pj +
                    static_cast<double>(c.fp32_macs) * t.fp32_mac_pj +
                    static_cast<double>(c.fp64_macs) * t.fp64_mac_pj +
                    static_cast<double>(c.dram_bytes) * t.dram_pj_per_byte +
                    static_cast<double>(c.host_to_device_bytes + c.device_to_host_bytes) *
                        t.host_link_pj_per_byte;
  return pj * 1e-12;
}

}  // namespace strata::fpga
