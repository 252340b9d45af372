// Where the text tests find all-minilm-l6-v2 (scripts/fetch-minilm.sh, run by the ctest fixture
// text_setup): $STRATA_MINILM_DIR if set, else the project's .tools/models folder.
#ifndef STRATA_TESTS_TEXT_MINILM_DIR_H_
#define STRATA_TESTS_TEXT_MINILM_DIR_H_

#include <cstdlib>
#include <string>

namespace strata::test {

inline std::string MiniLmDir() {
  const char* dir = std::getenv("STRATA_MINILM_DIR");
  return dir != nullptr ? dir : STRATA_SOURCE_DIR "/.tools/models/all-minilm-l6-v2";
}

}  // namespace strata::test

#endif  // STRATA_TESTS_TEXT_MINILM_DIR_H_
