// Image references as docker and podman write them, and platforms as os/arch[/variant].
//
//   alpine                          docker.io/library/alpine:latest
//   user/app:1                      docker.io/user/app:1
//   127.0.0.1:5000/hello            127.0.0.1:5000/hello:latest
//   localhost/x/y@sha256:<hex>      localhost/x/y@sha256:<hex>
//   [::1]:5000/repo:tag             [::1]:5000/repo:tag
//
// The first path component names the registry when it holds a '.' or a ':', is
// "localhost", or has an upper-case letter (as docker decides); otherwise the image is
// on Docker Hub ("docker.io"; a one-component name there is under "library/").
// Pure functions: no I/O, thread-safe, never throw.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"

namespace faas::pull {

struct Reference {
  std::string domain;      // "docker.io", "127.0.0.1:5000", "[::1]:5000", "localhost"
  std::string repository;  // "library/alpine", "user/app"
  std::string tag;         // "latest" when neither a tag nor a digest is given; may be ""
  std::string digest;      // "sha256:<64 hex>" or ""

  // The canonical form: domain/repository[:tag][@digest].
  std::string String() const;
  // What to ask the registry's manifests endpoint for: the digest when there is one.
  const std::string& Target() const { return digest.empty() ? tag : digest; }
  // The host answering the registry API: Docker Hub's is registry-1.docker.io.
  std::string ApiHost() const;
  // The domain without its port and brackets: "127.0.0.1", "::1", "localhost".
  std::string Hostname() const;
};

// The host of a domain, without its port and brackets: "127.0.0.1:5000" -> "127.0.0.1",
// "[::1]:5000" -> "::1".
std::string DomainHost(std::string_view domain);

// Parses `text` (untrusted). kInvalidArgument with what is wrong, e.g.
// "bad image reference 'Alpine': repository names are lower case".
Result<Reference> ParseReference(std::string_view text);

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64", "arm64"
  std::string variant;       // "v8", "" when not given

  std::string String() const;  // "linux/arm64/v8"
};

// Parses "os/arch[/variant]". kInvalidArgument when malformed.
Result<Platform> ParsePlatform(std::string_view text);

// The platform faasd runs on (linux and the architecture it was built for).
Platform HostPlatform();

}  // namespace faas::pull
