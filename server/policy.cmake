# strata_policy: the energy meter, drift detectors and update policies of the Update pipeline.
# No gRPC: the server and the stream benchmark both link it. Included from server/CMakeLists.txt
# (or the top-level CMakeLists.txt) with include(${CMAKE_SOURCE_DIR}/server/policy.cmake).
include_guard(GLOBAL)
add_library(strata_policy
  ${CMAKE_SOURCE_DIR}/server/energy_meter.cc
  ${CMAKE_SOURCE_DIR}/server/drift_detector.cc
  ${CMAKE_SOURCE_DIR}/server/update_policy.cc)
target_include_directories(strata_policy PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(strata_policy
  PUBLIC strata_fpga strata_model absl::status absl::statusor absl::strings absl::synchronization
         absl::time)
