// One expensive fixture (a fitted model bundle, data sets, certificates) shared by every test of
// a suite: built before the suite's first test, in a temporary directory that is removed after
// its last.
//
//   struct Fixture : test::FixtureDir {
//     std::string bundle_path;
//     static void Build(Fixture& f);  // fills f (f.dir exists); may use gtest ASSERTs
//   };
//   Fixture*& fixture = test::SuiteFixture<Fixture>::instance;  // for the file's helpers
//   class MyTest : public test::SuiteFixtureTest<Fixture> {};
//
// If Build() fails (a fatal gtest failure) every test of the suite fails at SetUp, saying so.
#ifndef STRATA_TESTS_SUITE_FIXTURE_H_
#define STRATA_TESTS_SUITE_FIXTURE_H_

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace strata::test {

// The temporary directory every shared fixture starts with.
struct FixtureDir {
  std::string dir;
  std::string Path(absl::string_view name) const { return dir + "/" + std::string(name); }
};

// The fixture of type F while a suite of it runs; null otherwise.
template <typename F>
struct SuiteFixture {
  inline static F* instance = nullptr;
};

template <typename F>
class SuiteFixtureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (SuiteFixture<F>::instance != nullptr) return;
    auto f = std::make_unique<F>();
    char dir_template[] = "/tmp/strata_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr) << "cannot make a temporary directory";
    f->dir = dir_template;
    SuiteFixture<F>::instance = f.get();  // Build's helpers may read it
    F::Build(*f);
    if (::testing::Test::HasFatalFailure()) {
      SuiteFixture<F>::instance = nullptr;
      std::filesystem::remove_all(f->dir);
      return;
    }
    f.release();
  }

  static void TearDownTestSuite() {
    F* f = SuiteFixture<F>::instance;
    if (f == nullptr) return;
    std::filesystem::remove_all(f->dir);
    delete f;
    SuiteFixture<F>::instance = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(SuiteFixture<F>::instance, nullptr)
        << "building the suite's shared fixture failed (see the first failure)";
  }
};

}  // namespace strata::test

#endif  // STRATA_TESTS_SUITE_FIXTURE_H_
