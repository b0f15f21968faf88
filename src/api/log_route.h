// GET /api/functions/NAME/logs: recognising the path and reading its query.
#pragma once

#include <boost/beast/http/verb.hpp>
#include <optional>
#include <string>
#include <variant>

#include "api/handlers.h"
#include "logs/query.h"

namespace faas::api {

struct LogsRequest {
  std::string name;
  logs::LogQuery query;
};

// None when `target` is not a function's logs path; a Reply (405, or 400 naming the
// bad query value) when the request cannot be served; else what it asks for.
std::optional<std::variant<Reply, LogsRequest>> ParseLogsRequest(boost::beast::http::verb method,
                                                                 const std::string& target,
                                                                 logs::Clock::time_point now);

// Frames `data` as one chunk of a chunked body; nothing for empty data (an empty chunk
// would end the body).
std::string Chunk(std::string_view data);

inline constexpr char kEndOfChunks[] = "0\r\n\r\n";

}  // namespace faas::api
