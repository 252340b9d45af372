// strata-bench-text-drift: the text task's drift run through a real strata-server's Update
// (docs/text-task.md, "Drift through the server"), as strata-bench-stream does for images.
//
//   strata-bench-text-drift --bundle=TEXT.bundle --data=DATA.jsonl [--configs=...]
//
// The bundle is a text model with an empty head (strata-train --empty_upper on a `text` spec):
// every class comes from the stream. The stream, from the data set (data/debian_sections.py):
//   phases 1..G  the training texts of one group of sections each (text::GroupLabels: sections
//                sorted by name, dealt into --groups groups): class-incremental through Update;
//   phase "swap" the test texts of every section (and with --swap_texts=all then the training
//                texts again), with the labels of the two --swap sections exchanged (the world
//                changed: what was called A is now called B).
// Messages of --message texts, each sent as its own Update stream so that each UpdateSummary is
// one message's result: its prequential errors (each sample predicted before it is absorbed),
// the server's joules, refreshes and skipped samples. For each policy configuration
// (NAME=strata-server flags) one server process runs the whole stream. Prints per configuration
// and phase: texts, prequential accuracy, joules; for the swap phase also each of its
// --swap_parts parts (how fast the policy follows the swap); then the server's drift alarms and
// forgotten classes (GetStats).
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/server_process.h"
#include "text/text_task.h"

ABSL_FLAG(std::string, bundle, "", "a text model's bundle with an empty head");
ABSL_FLAG(std::string, data, "", "the data set (data/debian_sections.py's JSONL)");
ABSL_FLAG(int, groups, 5, "sections arrive in this many groups");
ABSL_FLAG(int, message, 100, "texts per Update message");
ABSL_FLAG(std::string, swap, "libdevel,libs",
          "the two sections whose labels the last phase swaps (default: the two largest)");
ABSL_FLAG(std::string, swap_texts, "all",
          "the swap phase's texts: test (the test texts) or all (the test texts, then the "
          "training texts again: long enough for a drift detector to fire and a forget to show)");
ABSL_FLAG(int, swap_parts, 4, "the swap phase is also reported in this many parts (by messages)");
ABSL_FLAG(std::string, device, "cpu", "strata-server --device");
ABSL_FLAG(std::vector<std::string>, configs,
          std::vector<std::string>(
              {"eager=--update_policy=eager",
               "energy-aware+forget=--update_policy=energy-aware --policy_forget_on_drift"}),
          "policy configurations, NAME=strata-server flags (space-separated), comma-separated");

namespace strata {
namespace {

struct Phase {
  std::string name;
  std::vector<std::string> texts, labels;
};

absl::StatusOr<std::vector<Phase>> BuildStream(const text::TextTask& task) {
  const std::string swap_texts = absl::GetFlag(FLAGS_swap_texts);
  if (swap_texts != "test" && swap_texts != "all") {
    return absl::InvalidArgumentError(
        absl::StrCat("--swap_texts=", swap_texts, ": expected test or all"));
  }
  std::vector<Phase> phases;
  const auto groups = text::GroupLabels(task.train.labels, absl::GetFlag(FLAGS_groups));
  for (size_t g = 0; g < groups.size(); ++g) {
    Phase p;
    p.name = absl::StrCat(g + 1, " (", groups[g].front(), "..", groups[g].back(), ")");
    for (size_t i = 0; i < task.train.size(); ++i) {
      for (const std::string& label : groups[g]) {
        if (task.train.labels[i] != label) continue;
        p.texts.push_back(task.train.texts[i]);
        p.labels.push_back(label);
      }
    }
    phases.push_back(std::move(p));
  }
  const std::vector<std::string> swap = absl::StrSplit(absl::GetFlag(FLAGS_swap), ',');
  Phase p;
  p.name = absl::StrCat("swap ", swap.at(0), "<->", swap.at(1));
  auto add_swapped = [&p, &swap](const text::TaskSplit& texts) {
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string& label = texts.labels[i];
      p.texts.push_back(texts.texts[i]);
      p.labels.push_back(label == swap[0] ? swap[1] : label == swap[1] ? swap[0] : label);
    }
  };
  add_swapped(task.test);
  if (swap_texts == "all") add_swapped(task.train);
  phases.push_back(std::move(p));
  return phases;
}

struct Tally {
  uint64_t texts = 0, errors = 0, skipped = 0, refreshes = 0;
  double joules = 0;
  void Add(const Tally& t) {
    texts += t.texts;
    errors += t.errors;
    skipped += t.skipped;
    refreshes += t.refreshes;
    joules += t.joules;
  }
  void Add(const v1::UpdateSummary& s) {
    texts += s.accepted();
    errors += s.prequential_errors();
    skipped += s.skipped();
    refreshes += s.refreshes();
    joules += s.energy().total_joules();
  }
  double accuracy() const { return texts ? 1.0 - static_cast<double>(errors) / texts : 0; }
};

void PrintTally(const std::string& config, const std::string& phase, const Tally& t) {
  std::printf("| %s | %s | %lu | %.4f | %.3f | %lu | %lu |\n", config.c_str(), phase.c_str(),
              static_cast<unsigned long>(t.texts), t.accuracy(), t.joules,
              static_cast<unsigned long>(t.refreshes), static_cast<unsigned long>(t.skipped));
  std::fflush(stdout);
}

// One message after another, each its own Update stream; returns the tally of each of `parts`
// consecutive parts of the phase (by messages).
absl::StatusOr<std::vector<Tally>> SendPhase(client::Client& client, const Phase& phase,
                                             size_t parts) {
  const size_t message = static_cast<size_t>(absl::GetFlag(FLAGS_message));
  const size_t messages = (phase.texts.size() + message - 1) / message;
  std::vector<Tally> tallies(parts);
  for (size_t m = 0; m < messages; ++m) {
    v1::UpdateRequest request;
    for (size_t i = m * message; i < std::min(phase.texts.size(), (m + 1) * message); ++i) {
      v1::LabeledSample* sample = request.add_samples();
      sample->set_label(phase.labels[i]);
      sample->mutable_sample()->set_text(phase.texts[i]);
    }
    absl::StatusOr<v1::UpdateSummary> summary = client.Update({&request, 1});
    if (!summary.ok()) return summary.status();
    tallies[m * parts / messages].Add(*summary);
  }
  return tallies;
}

absl::Status RunConfig(const std::string& config, const std::vector<Phase>& phases) {
  const size_t eq = config.find('=');
  const std::string name = config.substr(0, eq);
  std::vector<std::string> args = {"--device=" + absl::GetFlag(FLAGS_device)};
  if (eq != std::string::npos) {
    for (absl::string_view a : absl::StrSplit(config.substr(eq + 1), ' ', absl::SkipEmpty()))
      args.emplace_back(a);
  }
  absl::StatusOr<std::unique_ptr<test::ServerProcess>> server =
      test::ServerProcess::Launch(absl::GetFlag(FLAGS_bundle), args);
  if (!server.ok()) return server.status();
  Tally all;
  for (const Phase& phase : phases) {
    const bool swap = &phase == &phases.back();
    const size_t parts =
        swap ? static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_swap_parts))) : 1;
    const absl::Time start = absl::Now();
    absl::StatusOr<std::vector<Tally>> tallies = SendPhase((*server)->client(), phase, parts);
    if (!tallies.ok()) return tallies.status();
    Tally t;
    for (const Tally& part : *tallies) t.Add(part);
    all.Add(t);
    PrintTally(
        name,
        absl::StrFormat("%s (%.0f s)", phase.name, absl::ToDoubleSeconds(absl::Now() - start)), t);
    for (size_t i = 0; swap && parts > 1 && i < parts; ++i) {
      PrintTally(name, absl::StrCat("swap, part ", i + 1, " of ", parts), (*tallies)[i]);
    }
  }
  PrintTally(name, "whole stream", all);
  absl::StatusOr<v1::Stats> stats = (*server)->client().GetStats();
  if (!stats.ok()) return stats.status();
  std::printf("| %s | drift alarms %lu, classes forgotten %lu | | | | | |\n", name.c_str(),
              static_cast<unsigned long>(stats->drift_alarms()),
              static_cast<unsigned long>(stats->classes_forgotten()));
  (*server)->Terminate();
  return absl::OkStatus();
}

absl::Status Run() {
  absl::StatusOr<text::TextTask> task = text::ReadTextTask(absl::GetFlag(FLAGS_data));
  if (!task.ok()) return task.status();
  absl::StatusOr<std::vector<Phase>> stream = BuildStream(*task);
  if (!stream.ok()) return stream.status();
  const std::vector<Phase>& phases = *stream;
  std::printf("stream: %zu phases, messages of %d texts, server --device=%s\n\n", phases.size(),
              absl::GetFlag(FLAGS_message), absl::GetFlag(FLAGS_device).c_str());
  std::printf(
      "| policy | phase | texts | prequential accuracy | joules (server) | refreshes | skipped "
      "|\n| --- | --- | --- | --- | --- | --- | --- |\n");
  for (const std::string& config : absl::GetFlag(FLAGS_configs)) {
    if (absl::Status s = RunConfig(config, phases); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("The text task's drift stream through a real strata-server");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = strata::Run(); !s.ok()) {
    std::fprintf(stderr, "strata-bench-text-drift: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
