// Function names: the one rule for what a user may call a function.
#pragma once

#include <string_view>

#include "common/error.h"

namespace faas::store {

// Accepts [a-z0-9][a-z0-9_.-]{0,62}; anything else is kInvalidArgument with a message
// that quotes the name and states the rule.
Status ValidateName(std::string_view name);

}  // namespace faas::store
