// The text task's class-incremental proof (docs/text-task.md) on a small real slice: Debian
// package descriptions of the installed packages (data/debian_sections.py --from_dpkg_status, run
// by the ctest fixture text_task_data: offline), embedded by the real all-MiniLM-L6-v2 encoder
// (int8 on the cpu backend, the served path). Sections arrive in groups, each absorbed by
// Update-sized batches and refreshed; the head then equals the head trained on all rows at once.
// Also: the data set reader's errors and the embedding cache's round trip.
#include "text/text_task.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "fpga/backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/text/minilm_dir.h"
#include "text/text_encoder.h"

namespace strata::text {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / name).string();
}

// The int8 cpu encoder at 64 tokens per text (enough for the proof, a quarter of the time).
struct Int8Encoder {
  std::unique_ptr<fpga::Backend> backend;
  std::unique_ptr<TextEncoder> encoder;
};

Int8Encoder LoadEncoder() {
  Int8Encoder e;
  auto backend = fpga::CreateBackend("cpu");
  EXPECT_TRUE(backend.ok()) << backend.status();
  e.backend = *std::move(backend);
  TextEncoderOptions options;
  options.backend = e.backend.get();
  options.tokenizer.max_length = 64;
  auto encoder = TextEncoder::Load(test::MiniLmDir(), options);
  EXPECT_TRUE(encoder.ok()) << encoder.status();
  e.encoder = *std::move(encoder);
  return e;
}

TEST(TextTaskTest, ClassIncrementalEqualsJointOnRealSlice) {
  absl::StatusOr<TextTask> task = ReadTextTask(STRATA_TEXT_TASK_DATA);
  ASSERT_TRUE(task.ok()) << task.status();
  ASSERT_GE(task->train.size(), 50u);
  const Int8Encoder e = LoadEncoder();
  const std::string cache = TempPath("text_task_train.f32");
  std::filesystem::remove(cache);
  EncodeCost cost;
  absl::StatusOr<model::MatrixF> train =
      EmbedCached(*e.encoder, task->train.texts, 32, cache, &cost);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_FALSE(cost.from_cache);
  EXPECT_GT(cost.counts.int8_macs, 0u);
  absl::StatusOr<model::MatrixF> test = EmbedCached(*e.encoder, task->test.texts, 32, "", nullptr);
  ASSERT_TRUE(test.ok()) << test.status();

  const std::vector<std::vector<std::string>> groups = GroupLabels(task->train.labels, 4);
  ASSERT_EQ(groups.size(), 4u);
  const std::set<std::string> distinct(task->train.labels.begin(), task->train.labels.end());
  absl::StatusOr<IncrementalComparison> c =
      CompareIncrementalToJoint(*train, task->train.labels, *test, task->test.labels, groups,
                                /*lambda=*/0.1, /*batch=*/16);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->classes, static_cast<int>(distinct.size()));
  EXPECT_LE(c->statistics_difference, 1e-12);
  EXPECT_LE(c->solution_difference, 1e-9);
  EXPECT_EQ(c->prediction_differences, 0);
  ASSERT_EQ(c->accuracy_after_group.size(), 4u);
  // The head learned something: on the training texts, above always answering their largest
  // class. (Not on the test side: the installed packages differ from machine to machine, and on a
  // clean container the test side is a handful of texts, too few to judge a head by.)
  absl::StatusOr<IncrementalComparison> fit =
      CompareIncrementalToJoint(*train, task->train.labels, *train, task->train.labels, groups,
                                /*lambda=*/0.1, /*batch=*/16);
  ASSERT_TRUE(fit.ok()) << fit.status();
  std::map<std::string, int> train_counts;
  for (const std::string& label : task->train.labels) ++train_counts[label];
  int largest = 0;
  for (const auto& [label, count] : train_counts) largest = std::max(largest, count);
  EXPECT_GT(fit->accuracy_after_group.back(),
            static_cast<double>(largest) / static_cast<double>(task->train.size()));

  // The cache gives back the same embeddings, and the cost of the run that wrote it.
  EncodeCost cached_cost;
  absl::StatusOr<model::MatrixF> again =
      EmbedCached(*e.encoder, task->train.texts, 32, cache, &cached_cost);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(cached_cost.from_cache);
  EXPECT_EQ(cached_cost.counts, cost.counts);
  EXPECT_TRUE(*again == *train);
}

TEST(TextTaskTest, IncrementalWithoutAGroupIsNotJoint) {
  // The comparison notices a missing group (its classes are absent from the incremental head).
  model::MatrixF x = model::MatrixF::Identity(4, 4);
  const std::vector<std::string> labels = {"a", "b", "c", "d"};
  const std::vector<std::vector<std::string>> groups = {{"a", "b"}, {"c"}};
  absl::StatusOr<IncrementalComparison> c =
      CompareIncrementalToJoint(x, labels, x, labels, groups, 1.0, 2);
  EXPECT_FALSE(c.ok());
}

TEST(TextTaskTest, GroupLabelsDealsSortedLabelsEvenly) {
  const std::vector<std::string> labels = {"e", "a", "c", "b", "d", "a"};
  EXPECT_EQ(GroupLabels(labels, 2),
            (std::vector<std::vector<std::string>>{{"a", "b"}, {"c", "d", "e"}}));
  EXPECT_EQ(GroupLabels(labels, 9).size(), 5u);
}

TEST(TextTaskTest, ReaderRejectsBadLines) {
  const std::string path = TempPath("bad_task.jsonl");
  const auto write = [&](const std::string& contents) {
    std::ofstream(path, std::ios::trunc) << contents;
  };
  const std::string good =
      R"({"package":"p","source":"p","section":"libs","split":"train","text":"t"})"
      "\n"
      R"({"package":"q","source":"q","section":"libs","split":"test","text":"u"})"
      "\n";
  write(good);
  EXPECT_TRUE(ReadTextTask(path).ok());
  write(good + R"({"package":"r","source":"r","section":"libs","split":"dev","text":"v"})");
  EXPECT_THAT(ReadTextTask(path).status().message(), HasSubstr("line 3: split \"dev\""));
  write(good + R"({"package":"r","section":"libs","split":"train","text":"v"})");
  EXPECT_THAT(ReadTextTask(path).status().message(), HasSubstr("line 3"));
  write(R"({"package":"p","source":"p","section":"libs","split":"train","text":"t"})");
  EXPECT_THAT(ReadTextTask(path).status().message(), HasSubstr("empty"));
  EXPECT_EQ(ReadTextTask(TempPath("missing.jsonl")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace strata::text
