#include <gtest/gtest.h>

#include "core/common/units.hpp"

namespace parasol {
namespace {

TEST(Units, DecimalAndBinaryPrefixesAndBitsParseToSi) {
  EXPECT_DOUBLE_EQ(*parse_quantity("450 GB/s", Dimension::kBandwidth), 450e9);
  EXPECT_DOUBLE_EQ(*parse_quantity("400 Gb/s", Dimension::kBandwidth), 50e9);
  EXPECT_DOUBLE_EQ(*parse_quantity("80 GiB", Dimension::kBytes), 80.0 * 1073741824.0);
  EXPECT_DOUBLE_EQ(*parse_quantity("1.5 us", Dimension::kTime), 1.5e-6);
  EXPECT_DOUBLE_EQ(*parse_quantity("989 TFLOP/s", Dimension::kFlopRate), 989e12);
  EXPECT_DOUBLE_EQ(*parse_quantity("700 W", Dimension::kPower), 700.0);
  EXPECT_DOUBLE_EQ(*parse_quantity("2e3 ms", Dimension::kTime), 2.0);
}

TEST(Units, MissingOrWrongUnitIsRejected) {
  EXPECT_FALSE(parse_quantity("450", Dimension::kBandwidth));
  EXPECT_FALSE(parse_quantity("450 GB", Dimension::kBandwidth));
  EXPECT_FALSE(parse_quantity("fast", Dimension::kTime));
  EXPECT_FALSE(parse_quantity("1.5 parsecs", Dimension::kTime));
  EXPECT_FALSE(parse_quantity("", Dimension::kBytes));
}

TEST(Units, FormattingRoundTripsThroughParsing) {
  for (double v : {1.0, 80.0 * 1073741824.0, 3.35e12}) {
    auto s = format_bytes(v);
    ASSERT_TRUE(parse_quantity(s, Dimension::kBytes)) << s;
    EXPECT_NEAR(*parse_quantity(s, Dimension::kBytes), v, v * 1e-3) << s;
  }
  EXPECT_EQ(format_bandwidth(450e9), "450 GB/s");
}

}  // namespace
}  // namespace parasol
