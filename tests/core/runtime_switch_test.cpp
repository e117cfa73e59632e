// RuntimeSwitch: the default from its environment variable, by the rule of its kind, and
// the setter.
#include "longnet/core/runtime_switch.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace longnet::testing {
namespace {

constexpr char kVariable[] = "LONGNET_TEST_RUNTIME_SWITCH";

bool with_value(const char* value, RuntimeSwitch::Unset when_unset) {
  if (value == nullptr) {
    unsetenv(kVariable);
  } else {
    setenv(kVariable, value, 1);
  }
  const RuntimeSwitch s{kVariable, when_unset};
  unsetenv(kVariable);
  return s.enabled();
}

TEST(RuntimeSwitch, OptInIsOnOnlyForOne) {
  EXPECT_FALSE(with_value(nullptr, RuntimeSwitch::Unset::off));
  EXPECT_TRUE(with_value("1", RuntimeSwitch::Unset::off));
  EXPECT_FALSE(with_value("0", RuntimeSwitch::Unset::off));
  EXPECT_FALSE(with_value("yes", RuntimeSwitch::Unset::off));
}

TEST(RuntimeSwitch, OptOutIsOffOnlyForZero) {
  EXPECT_TRUE(with_value(nullptr, RuntimeSwitch::Unset::on));
  EXPECT_FALSE(with_value("0", RuntimeSwitch::Unset::on));
  EXPECT_TRUE(with_value("1", RuntimeSwitch::Unset::on));
  EXPECT_TRUE(with_value("", RuntimeSwitch::Unset::on));
}

TEST(RuntimeSwitch, TheSetterOverridesTheEnvironment) {
  RuntimeSwitch s{kVariable, RuntimeSwitch::Unset::off};
  EXPECT_FALSE(s.enabled());
  s.set(true);
  EXPECT_TRUE(s.enabled());
  s.set(false);
  EXPECT_FALSE(s.enabled());
}

}  // namespace
}  // namespace longnet::testing
