# Builds strata.xclbin with Vitis: `ninja strata_xclbin`. The target exists only when v++ is on
# PATH (source Vitis's settings64.sh first); without Vitis this file defines nothing.
#
#   STRATA_FPGA_PLATFORM  the target card's platform (default: Alveo U55C,
#                         xilinx_u55c_gen3x16_xdma_3_202210_1; e.g. U250:
#                         xilinx_u250_gen3x16_xdma_4_1_202210_1). Change the sp= banks of
#                         connectivity.cfg for DDR cards (DDR[0..3] instead of HBM[..]).
#   STRATA_FPGA_TARGET    hw (default), hw_emu or sw_emu.
#   STRATA_FPGA_CLOCK_MHZ kernel clock (default 300).
find_program(STRATA_VPP v++)
if(NOT STRATA_VPP)
  return()
endif()

set(STRATA_FPGA_PLATFORM "xilinx_u55c_gen3x16_xdma_3_202210_1" CACHE STRING "Vitis platform")
set(STRATA_FPGA_TARGET "hw" CACHE STRING "v++ target: hw, hw_emu or sw_emu")
set(STRATA_FPGA_CLOCK_MHZ "300" CACHE STRING "Kernel clock in MHz")
set(STRATA_FPGA_OUT ${CMAKE_BINARY_DIR}/xclbin)
set(STRATA_FPGA_KERNELS_DIR ${CMAKE_CURRENT_SOURCE_DIR}/kernels)
set(STRATA_VPP_COMMON
  -t ${STRATA_FPGA_TARGET} --platform ${STRATA_FPGA_PLATFORM}
  --hls.clock ${STRATA_FPGA_CLOCK_MHZ}000000:strata_dense_int8
  --hls.clock ${STRATA_FPGA_CLOCK_MHZ}000000:strata_gram_int8
  -I${CMAKE_SOURCE_DIR} --temp_dir ${STRATA_FPGA_OUT}/tmp --log_dir ${STRATA_FPGA_OUT}/log
  --report_dir ${STRATA_FPGA_OUT}/report)

set(STRATA_FPGA_OBJECTS)
foreach(kernel dense_int8 gram_int8)
  set(object ${STRATA_FPGA_OUT}/strata_${kernel}.xo)
  add_custom_command(
    OUTPUT ${object}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${STRATA_FPGA_OUT}
    COMMAND ${STRATA_VPP} -c ${STRATA_VPP_COMMON} -k strata_${kernel}
      -o ${object} ${STRATA_FPGA_KERNELS_DIR}/${kernel}.cc
    DEPENDS ${STRATA_FPGA_KERNELS_DIR}/${kernel}.cc ${STRATA_FPGA_KERNELS_DIR}/kernels.h
            ${STRATA_FPGA_KERNELS_DIR}/fixed.h
    COMMENT "v++ -c strata_${kernel} for ${STRATA_FPGA_PLATFORM} (${STRATA_FPGA_TARGET})"
    VERBATIM)
  list(APPEND STRATA_FPGA_OBJECTS ${object})
endforeach()

set(STRATA_XCLBIN ${STRATA_FPGA_OUT}/strata.${STRATA_FPGA_TARGET}.xclbin)
add_custom_command(
  OUTPUT ${STRATA_XCLBIN}
  COMMAND ${STRATA_VPP} -l ${STRATA_VPP_COMMON}
    --config ${STRATA_FPGA_KERNELS_DIR}/connectivity.cfg
    -o ${STRATA_XCLBIN} ${STRATA_FPGA_OBJECTS}
  DEPENDS ${STRATA_FPGA_OBJECTS} ${STRATA_FPGA_KERNELS_DIR}/connectivity.cfg
  COMMENT "v++ -l: linking ${STRATA_XCLBIN} (hours for hw)"
  VERBATIM)
add_custom_target(strata_xclbin DEPENDS ${STRATA_XCLBIN})
message(STATUS "v++ found: target strata_xclbin builds ${STRATA_XCLBIN} for ${STRATA_FPGA_PLATFORM}")
