// The lexical view of a text model (model/lexical_view.h): its tokenisation and hash are fixed
// (stable across processes and machines), its closed-form fit, its features, the spec line, and
// a bundle with a lexical view read back bit for bit.
#include "model/lexical_view.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/architecture.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"

namespace strata::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

uint32_t Crc(const std::string& s) { return base::Crc32c(s.data(), s.size()); }

TEST(LexicalViewTest, BucketsAreCrc32cOfTheGrams) {
  LexicalSpec words;
  words.hash_bits = 32;
  words.ngrams = 1;
  // The CRC-32C check value (RFC 3720): the hash is a fixed function, not a per-process one.
  EXPECT_THAT(LexicalBuckets("123456789", words), ElementsAre(0xE3069283u));
  // ASCII lower-cased; runs of [a-z0-9] and UTF-8 bytes are tokens; anything else separates.
  LexicalSpec bigrams;
  bigrams.hash_bits = 32;
  EXPECT_THAT(LexicalBuckets("Perl-module, C++ Ünïcode", bigrams),
              ElementsAre(Crc("perl"), Crc("perl module"), Crc("module"), Crc("module c"), Crc("c"),
                          Crc("c \xc3\x9cn\xc3\xaf"
                              "code"),
                          Crc("\xc3\x9cn\xc3\xaf"
                              "code")));
  LexicalSpec small = bigrams;
  small.hash_bits = 10;
  small.seed = 7;
  const std::string gram = "module";
  EXPECT_THAT(LexicalBuckets("MODULE", small),
              ElementsAre(base::Crc32cExtend(7, gram.data(), gram.size()) & 1023u));
  EXPECT_TRUE(LexicalBuckets(" ,;! ", bigrams).empty());
}

TEST(LexicalViewTest, FitKeepsTheMostFrequentBucketsWithSmoothedIdf) {
  LexicalSpec spec;
  spec.ngrams = 1;
  spec.hash_bits = 32;
  spec.features = 2;
  spec.min_df = 2;
  const std::vector<std::string> texts = {"perl module", "perl library", "rust crate perl",
                                          "rust library"};
  absl::StatusOr<LexicalView> view = LexicalView::Fit(spec, texts);
  ASSERT_TRUE(view.ok()) << view.status();
  // df: perl 3, library 2, rust 2, module 1, crate 1: perl, then the lower bucket of the df-2 pair.
  const uint32_t second = std::min(Crc("library"), Crc("rust"));
  EXPECT_THAT(view->buckets(), ElementsAre(Crc("perl"), second));
  EXPECT_FLOAT_EQ(view->idf()[0], static_cast<float>(std::log(5.0 / 4.0) + 1));
  EXPECT_FLOAT_EQ(view->idf()[1], static_cast<float>(std::log(5.0 / 3.0) + 1));

  spec.weight = 0.5f;
  view = LexicalView::Fit(spec, texts);
  ASSERT_TRUE(view.ok());
  const MatrixF x = view->Features(std::vector<std::string>{"Perl, perl!", "crate", "perl rust"});
  ASSERT_EQ(x.cols(), 2);
  EXPECT_FLOAT_EQ(x(0, 0), 0.5f);  // one kept bucket: the whole norm
  EXPECT_EQ(x(0, 1), 0.0f);
  EXPECT_EQ(x.row(1).norm(), 0.0f);  // no kept gram: zeros
  EXPECT_NEAR(x.row(2).norm(), 0.5f, 1e-6f);

  spec.features = 10;  // more columns than qualifying buckets: the rest stay zero
  view = LexicalView::Fit(spec, texts);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->buckets().size(), 3u);
  EXPECT_EQ(view->Features(texts).cols(), 10);
  EXPECT_FALSE(LexicalView::Fit(spec, std::vector<std::string>{"one"}).ok());
}

TEST(LexicalViewTest, SpecLine) {
  absl::StatusOr<Architecture> a = ParseArchitecture(
      "text encoder=/m max_tokens=64\nlexical features=16 weight=0.7\nexpand units=8\n");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(a->lexical.has_value());
  EXPECT_EQ(a->channels, 384 + 16);
  EXPECT_EQ(a->lexical->weight, 0.7f);
  absl::StatusOr<Architecture> again = ParseArchitecture(a->ToText());
  ASSERT_TRUE(again.ok()) << again.status() << a->ToText();
  EXPECT_EQ(again->ToText(), a->ToText());
  EXPECT_EQ(again->lexical->weight, 0.7f);  // bit for bit: the served features are the fitted ones

  for (const char* bad :
       {"input 4 4\nlexical features=4\nsqrt\n",
        "text encoder=/m\nexpand units=4\nlexical features=4\n",
        "text encoder=/m\nlexical\nlexical\n", "text encoder=/m\nlexical features=0\n",
        "text encoder=/m\nlexical features=512 hash_bits=8\n",
        "text encoder=/m\nlexical weight=0\n"}) {
    absl::StatusOr<Architecture> parsed = ParseArchitecture(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_THAT(parsed.status().message(), HasSubstr("lexical")) << bad;
  }
}

TEST(LexicalViewTest, BundleRoundTripKeepsTheViewAndItsFeatures) {
  absl::StatusOr<Architecture> architecture =
      ParseArchitecture("text encoder=/m embedding=8\nlexical features=6 min_df=1 weight=0.7\n");
  ASSERT_TRUE(architecture.ok()) << architecture.status();
  const std::vector<std::string> texts = {"a perl module", "a rust crate", "the perl library",
                                          "rust library crate"};
  absl::StatusOr<LexicalView> fitted = LexicalView::Fit(*architecture->lexical, texts);
  ASSERT_TRUE(fitted.ok()) << fitted.status();
  auto view = std::make_shared<const LexicalView>(*std::move(fitted));
  const MatrixF embeddings = MatrixF::Random(4, 8);
  const MatrixF inputs = AppendLexical(embeddings, view.get(), texts);
  ASSERT_EQ(inputs.cols(), 14);

  EXPECT_EQ(LowerTier::Fit(*architecture, inputs, 0, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<LowerTier> lower = LowerTier::Fit(*architecture, inputs, 0, view);
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_EQ(lower->feature_size(), 14);
  UpperTier upper(lower->feature_size(), 1.0);
  const std::vector<std::string> labels = {"perl", "rust", "perl", "rust"};
  ASSERT_TRUE(upper.AbsorbLabeled(inputs, labels).ok());
  const std::string path =
      ::testing::TempDir() + "/lexical_view_test." + std::to_string(getpid()) + ".bundle";
  ASSERT_TRUE(
      WriteBundle(Bundle{std::make_shared<const LowerTier>(*std::move(lower)), upper, 1}, path)
          .ok());
  absl::StatusOr<Bundle> read = ReadBundle(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_NE(read->lower->lexical(), nullptr);
  EXPECT_EQ(read->lower->lexical()->buckets(), view->buckets());
  EXPECT_EQ(read->lower->lexical()->idf(), view->idf());
  const MatrixF again = read->lower->TextInputs(embeddings, texts);
  EXPECT_TRUE((again.array() == inputs.array()).all());
}

}  // namespace
}  // namespace strata::model
