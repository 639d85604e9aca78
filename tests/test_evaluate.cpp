// Scoring streams by position: the buckets add up to the whole, the state carried through a file is
// what eval always measured, and a reset every window scores each window as a fresh stream.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "src/model/evaluate.h"
#include "src/model/model.h"
#include "tests/test_util.h"

namespace rb {
namespace {

TEST(EvaluateByPosition, BucketsAddUpAndAResetScoresEachWindowAfresh) {
  auto be = make_cpu_backend(2);
  ModelConfig cfg = named_config("tiny");
  cfg.T = 64;
  Model model(cfg, *be);
  model.init_random(4);
  std::vector<uint8_t> body(6000);
  for (size_t i = 0; i < body.size(); i++) body[i] = uint8_t("abracadabra, said the wizard. "[i % 30] + (i / 997) % 3);
  const std::vector<uint8_t> none;
  PositionBuckets buckets = PositionBuckets::standard();
  const EvalResult carried = evaluate_stream(model, none, body.data(), body.size(), 64, nullptr, 0, &buckets);
  EXPECT_EQ(evaluate_stream(model, none, body.data(), body.size(), 64).nats, carried.nats) << "buckets change nothing";
  double nats = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < buckets.edges.size(); i++) nats += buckets.nats[i], bytes += buckets.bytes[i];
  EXPECT_EQ(bytes, body.size());
  EXPECT_NEAR(nats, carried.nats, 1e-6 * carried.nats);
  EXPECT_EQ(buckets.bytes[0], 4096u);
  EXPECT_EQ(buckets.bytes[1], body.size() - 4096);
  // Reset every 128 bytes: the same as scoring each 128-byte piece as its own stream.
  const EvalResult reset = evaluate_stream(model, none, body.data(), body.size(), 64, nullptr, 128);
  double pieces = 0;
  for (size_t at = 0; at < body.size(); at += 128)
    pieces += evaluate_stream(model, none, body.data() + at, std::min<size_t>(128, body.size() - at), 64).nats;
  EXPECT_NEAR(reset.nats, pieces, 1e-9 * pieces);
  EXPECT_NE(reset.nats, carried.nats);
  EXPECT_THROW(evaluate_stream(model, none, body.data(), body.size(), 64, nullptr, 100), Error);
}

}  // namespace
}  // namespace rb
