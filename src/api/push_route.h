// POST /api/functions/NAME/push?image=REF[&version=N]: recognising the path and reading
// its query.
#pragma once

#include <boost/beast/http/verb.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "api/handlers.h"

namespace faas::api {

struct PushRequest {
  std::string name;
  std::string image;  // the reference to push to, as given (checked by the backend)
  std::optional<uint64_t> version;
};

// None when `target` is not a function's push path; a Reply (405, or 400 naming what
// is missing or bad) when the request cannot be served; else what it asks for.
std::optional<std::variant<Reply, PushRequest>> ParsePushRequest(boost::beast::http::verb method,
                                                                 const std::string& target);

}  // namespace faas::api
