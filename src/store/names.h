// Function names: the one rule for what a user may call a function.
#pragma once

#include <string_view>

#include "common/error.h"

namespace faas::store {

// Accepts [a-z0-9][a-z0-9_.-]{0,62}, so a valid name needs no escaping in a URL path,
// a header or a file name; anything else is kInvalidArgument with a message that quotes
// the name (control and non-ASCII bytes shown as '?') and states the rule. faasd and
// the faas CLI both check names with it, so both refuse a name alike.
Status ValidateName(std::string_view name);

}  // namespace faas::store
