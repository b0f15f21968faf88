// Routing of the control API's small requests (everything but the streamed deploy).
#pragma once

#include <boost/beast/http/verb.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "api/server.h"

namespace faas::api {

inline constexpr char kImageNameHeader[] = "X-Image-Name";
inline constexpr char kFunctionOptionsHeader[] = "X-Function-Options";

struct Reply {
  int status = 200;
  nlohmann::json body;
};

nlohmann::json ErrorJson(const std::string& message);

// Maps a method and target to the backend; unknown paths are 404, known paths with
// the wrong method 405.
Reply Route(Backend& backend, boost::beast::http::verb method, const std::string& target);

}  // namespace faas::api
