#include <gtest/gtest.h>

#include <string>

#include "pull/auth.h"
#include "pull/manifest.h"
#include "pull/puller.h"
#include "pull/reference.h"

namespace faas::pull {
namespace {

const std::string kHex(64, 'a');
const std::string kDigest = "sha256:" + kHex;

struct RefCase {
  const char* text;
  const char* domain;
  const char* repository;
  const char* tag;
  const char* canonical;
};

TEST(ReferenceTest, ResolvesAsDockerDoes) {
  const std::string pinned = "alpine@" + kDigest;
  const RefCase cases[] = {
      {"alpine", "docker.io", "library/alpine", "latest", "docker.io/library/alpine:latest"},
      {"alpine:3.19", "docker.io", "library/alpine", "3.19", "docker.io/library/alpine:3.19"},
      {"user/app:1", "docker.io", "user/app", "1", "docker.io/user/app:1"},
      {"docker.io/alpine", "docker.io", "library/alpine", "latest",
       "docker.io/library/alpine:latest"},
      {"index.docker.io/user/app", "docker.io", "user/app", "latest", "docker.io/user/app:latest"},
      {"127.0.0.1:5000/hello", "127.0.0.1:5000", "hello", "latest", "127.0.0.1:5000/hello:latest"},
      {"localhost/x/y:v_1.2-rc", "localhost", "x/y", "v_1.2-rc", "localhost/x/y:v_1.2-rc"},
      {"localhost:5000/a", "localhost:5000", "a", "latest", "localhost:5000/a:latest"},
      {"registry.example/team/sub/app", "registry.example", "team/sub/app", "latest",
       "registry.example/team/sub/app:latest"},
      {"[::1]:5000/repo:tag", "[::1]:5000", "repo", "tag", "[::1]:5000/repo:tag"},
      {"Host/app", "Host", "app", "latest", "Host/app:latest"},  // upper case: a host
      {"a__b/c-d/e---f.g", "docker.io", "a__b/c-d/e---f.g", "latest",
       "docker.io/a__b/c-d/e---f.g:latest"},
      {"localhost", "docker.io", "library/localhost", "latest",
       "docker.io/library/localhost:latest"},  // one component is a repository
  };
  for (const RefCase& c : cases) {
    auto ref = ParseReference(c.text);
    ASSERT_TRUE(ref.ok()) << c.text << ": " << ref.error().message;
    EXPECT_EQ(ref->domain, c.domain) << c.text;
    EXPECT_EQ(ref->repository, c.repository) << c.text;
    EXPECT_EQ(ref->tag, c.tag) << c.text;
    EXPECT_EQ(ref->digest, "") << c.text;
    EXPECT_EQ(ref->String(), c.canonical) << c.text;
    EXPECT_EQ(ref->Target(), c.tag) << c.text;
  }
}

TEST(ReferenceTest, DigestsPinTheManifest) {
  auto ref = ParseReference("127.0.0.1:5000/team/app@" + kDigest);
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  EXPECT_EQ(ref->tag, "");
  EXPECT_EQ(ref->digest, kDigest);
  EXPECT_EQ(ref->Target(), kDigest);
  EXPECT_EQ(ref->String(), "127.0.0.1:5000/team/app@" + kDigest);
  auto both = ParseReference("app:1@" + kDigest);
  ASSERT_TRUE(both.ok()) << both.error().message;
  EXPECT_EQ(both->String(), "docker.io/library/app:1@" + kDigest);
  EXPECT_EQ(both->Target(), kDigest);
}

TEST(ReferenceTest, ApiHostAndHostname) {
  EXPECT_EQ(ParseReference("alpine")->ApiHost(), "registry-1.docker.io");
  EXPECT_EQ(ParseReference("127.0.0.1:5000/a")->ApiHost(), "127.0.0.1:5000");
  EXPECT_EQ(ParseReference("127.0.0.1:5000/a")->Hostname(), "127.0.0.1");
  EXPECT_EQ(ParseReference("[::1]:5000/a")->Hostname(), "::1");
  EXPECT_EQ(ParseReference("localhost/a")->Hostname(), "localhost");
}

TEST(ReferenceTest, RefusesMalformed) {
  const std::string long_name(300, 'a');
  const std::string bad[] = {
      "",
      "Alpine",  // upper case repository on Docker Hub
      "app:",    // empty tag
      "app:.x",  // tag starting with '.'
      "app:" + std::string(129, 'x'),
      "app@sha256:abc",      // short digest
      "app@sha512:" + kHex,  // other algorithm
      "app@sha256:" + std::string(64, 'G'),
      "registry.example/",       // no repository
      "registry.example//app",   // empty component
      "a/-b",                    // component starting with a separator
      "a/b_",                    // ... or ending with one
      "a/b..c",                  // two dots
      "a/b___c",                 // three underscores
      "bad_host.example/app",    // '_' in a host
      "host.example:0/app",      // port 0
      "host.example:99999/app",  // port too large
      "[::1/app",                // unclosed bracket
      long_name + "/x",
      "a b",
      std::string("a\0b", 3),
  };
  for (const std::string& text : bad) {
    auto ref = ParseReference(text);
    EXPECT_FALSE(ref.ok()) << "accepted: " << text;
    if (!ref.ok()) {
      EXPECT_EQ(ref.error().code, Errc::kInvalidArgument);
    }
  }
}

TEST(ReferenceTest, ErrorsDoNotEchoWhatPrecedesAnAt) {
  auto ref = ParseReference("user:secret@registry.example/app");
  ASSERT_FALSE(ref.ok());
  EXPECT_EQ(ref.error().message.find("secret"), std::string::npos) << ref.error().message;
}

TEST(PlatformTest, ParsesAndPrints) {
  auto p = ParsePlatform("linux/arm64/v8");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->os, "linux");
  EXPECT_EQ(p->architecture, "arm64");
  EXPECT_EQ(p->variant, "v8");
  EXPECT_EQ(p->String(), "linux/arm64/v8");
  EXPECT_EQ(ParsePlatform("linux/amd64")->String(), "linux/amd64");
  for (const char* bad :
       {"", "linux", "linux/", "/amd64", "linux/amd64/v1/x", "Linux/amd64", "linux/am d64"})
    EXPECT_FALSE(ParsePlatform(bad).ok()) << bad;
  EXPECT_EQ(HostPlatform().os, "linux");
  EXPECT_FALSE(HostPlatform().architecture.empty());
}

TEST(AuthFileTest, FindsCredentialsByHost) {
  const std::string json = R"({"auths": {
      "127.0.0.1:5000": {"auth": ")" +
                           Base64Encode("alice:p:w") + R"("},
      "https://index.docker.io/v1/": {"auth": ")" +
                           Base64Encode("hub:secret") + R"("},
      "http://Registry.Example/v2/": {"username": "bob", "password": "pw"}},
      "credsStore": "ignored"})";
  auto file = AuthFile::Parse(json);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_EQ(file->size(), 3u);
  auto local = file->Find("127.0.0.1:5000");
  ASSERT_TRUE(local);
  EXPECT_EQ(local->username, "alice");
  EXPECT_EQ(local->password, "p:w");  // only the first ':' separates
  ASSERT_TRUE(file->Find("docker.io"));
  EXPECT_EQ(file->Find("docker.io")->password, "secret");
  ASSERT_TRUE(file->Find("registry.example"));
  EXPECT_EQ(file->Find("registry.example")->username, "bob");
  EXPECT_FALSE(file->Find("127.0.0.1:5001"));
  EXPECT_FALSE(file->Find("127.0.0.1"));
}

TEST(AuthFileTest, RefusesMalformedWithoutEchoingSecrets) {
  const std::string bad[] = {
      "",
      "[]",
      "not json",
      R"({"auths": []})",
      R"({"auths": {"h": "x"}})",
      R"({"auths": {"h": {"auth": "!!!"}}})",
      R"({"auths": {"h": {"auth": ")" + Base64Encode("nocolon-secret") + R"("}}})",
      R"({"auths": {"h": {"username": "u"}}})",
  };
  for (const std::string& text : bad) {
    auto file = AuthFile::Parse(text);
    ASSERT_FALSE(file.ok()) << "accepted: " << text;
    EXPECT_EQ(file.error().code, Errc::kInvalidArgument);
    EXPECT_EQ(file.error().message.find("secret"), std::string::npos) << file.error().message;
  }
  EXPECT_TRUE(AuthFile::Parse("{}").ok());
  auto missing = AuthFile::Load("/nonexistent/config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("/nonexistent/config.json"), std::string::npos);
}

TEST(Base64Test, RoundTrips) {
  for (const std::string text : {"", "a", "ab", "abc", "abcd", "user:pass\xff"})
    EXPECT_EQ(Base64Decode(Base64Encode(text)), text);
  EXPECT_EQ(Base64Encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_FALSE(Base64Decode("a"));
  EXPECT_FALSE(Base64Decode("ab$d"));
}

TEST(ChallengeTest, ParsesBearerAndBasic) {
  auto bearer =
      ParseChallenge(R"(Bearer realm="https://auth.example/token",service="registry.example",)"
                     R"(scope="repository:a/b:pull,push")");
  ASSERT_TRUE(bearer.ok());
  EXPECT_EQ(bearer->scheme, "bearer");
  EXPECT_EQ(bearer->params["realm"], "https://auth.example/token");
  EXPECT_EQ(bearer->params["service"], "registry.example");
  EXPECT_EQ(bearer->params["scope"], "repository:a/b:pull,push");
  auto basic = ParseChallenge(R"(Basic realm="faasd \"test\"")");
  ASSERT_TRUE(basic.ok());
  EXPECT_EQ(basic->scheme, "basic");
  EXPECT_EQ(basic->params["realm"], "faasd \"test\"");
  auto bare = ParseChallenge("BEARER Realm=http://x/t, Service=s");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->params["realm"], "http://x/t");
  EXPECT_EQ(bare->params["service"], "s");
  EXPECT_FALSE(ParseChallenge("").ok());
  EXPECT_FALSE(ParseChallenge(R"(Bearer realm="unterminated)").ok());
}

TEST(PlainHttpTest, LoopbackAndInsecureOnly) {
  EXPECT_TRUE(PlainHttpAllowed("127.0.0.1:5000", {}));
  EXPECT_TRUE(PlainHttpAllowed("127.9.8.7", {}));
  EXPECT_TRUE(PlainHttpAllowed("localhost:5000", {}));
  EXPECT_TRUE(PlainHttpAllowed("[::1]:5000", {}));
  EXPECT_FALSE(PlainHttpAllowed("128.0.0.1:5000", {}));
  EXPECT_FALSE(PlainHttpAllowed("registry.example", {}));
  EXPECT_FALSE(PlainHttpAllowed("localhost.example", {}));
  EXPECT_TRUE(PlainHttpAllowed("registry.example:5000", {"registry.example:5000"}));
  EXPECT_TRUE(PlainHttpAllowed("registry.example:5000", {"registry.example"}));
  EXPECT_FALSE(PlainHttpAllowed("registry.example:5001", {"registry.example:5000"}));
}

std::string Descriptor(const std::string& type, const std::string& extra = "") {
  return R"({"mediaType": ")" + type + R"(", "digest": ")" + kDigest + R"(", "size": 12)" + extra +
         "}";
}

std::string ImageManifest(const std::string& layer_type) {
  return R"({"schemaVersion": 2, "config": )" +
         Descriptor("application/vnd.oci.image.config.v1+json") + R"(, "layers": [)" +
         Descriptor(layer_type) + "]}";
}

TEST(ManifestTest, ReadsImageManifests) {
  for (const char* layer :
       {"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip"}) {
    auto m =
        ParseRegistryManifest(ImageManifest(layer), "application/vnd.oci.image.manifest.v1+json");
    ASSERT_TRUE(m.ok()) << layer << ": " << m.error().message;
    EXPECT_FALSE(m->is_index);
    ASSERT_EQ(m->layers.size(), 1u);
    EXPECT_EQ(m->layers[0].media_type, layer);
    EXPECT_EQ(m->layers[0].size, 12u);
    EXPECT_EQ(m->config.digest, kDigest);
  }
  // Without a Content-Type the document's own mediaType decides.
  std::string docker = R"({"schemaVersion": 2, "mediaType": )"
                       R"("application/vnd.docker.distribution.manifest.v2+json", "config": )" +
                       Descriptor("application/vnd.docker.container.image.v1+json") +
                       R"(, "layers": []})";
  EXPECT_TRUE(ParseRegistryManifest(docker, "").ok());
}

TEST(ManifestTest, RefusesWhatFaasdDoesNotRead) {
  const std::string oci = "application/vnd.oci.image.manifest.v1+json";
  struct Case {
    std::string text, type, why;
  } cases[] = {
      {"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema 1"},
      {R"({"schemaVersion": 1, "fsLayers": []})", "", "schema 1"},
      {"not json", oci, "manifest"},
      {"[]", oci, "not a JSON object"},
      {ImageManifest("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"), oci,
       "foreign layer"},
      {ImageManifest("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"), oci,
       "foreign layer"},
      {ImageManifest("application/x-unknown"), oci, "unknown media type"},
      {ImageManifest("application/vnd.oci.image.layer.v1.tar"), "text/html", "unknown media"},
      {R"({"config": )" + Descriptor("application/x-config") + R"(, "layers": []})", oci,
       "config of unknown media type"},
      {R"({"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": )"
       R"("md5:abc", "size": 1}, "layers": []})",
       oci, "bad digest"},
      {R"({"config": )" + Descriptor("application/vnd.oci.image.config.v1+json") + "}", oci,
       "without \"layers\""},
      {R"({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})", oci,
       "says it is"},
  };
  for (const Case& c : cases) {
    auto m = ParseRegistryManifest(c.text, c.type);
    ASSERT_FALSE(m.ok()) << "accepted: " << c.text;
    EXPECT_EQ(m.error().code, Errc::kBadImage);
    EXPECT_NE(m.error().message.find(c.why), std::string::npos)
        << c.why << " not in: " << m.error().message;
  }
}

TEST(ManifestTest, SelectsThePlatformOfAnIndex) {
  const std::string index =
      R"({"schemaVersion": 2, "manifests": [)" +
      Descriptor("application/vnd.oci.image.manifest.v1+json",
                 R"(, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"})") +
      "," +
      Descriptor("application/vnd.oci.image.manifest.v1+json",
                 R"(, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"})") +
      "," +
      Descriptor("application/vnd.oci.image.manifest.v1+json",
                 R"(, "platform": {"os": "unknown", "architecture": "unknown"})") +
      "]}";
  auto m = ParseRegistryManifest(index, "application/vnd.oci.image.index.v1+json");
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_TRUE(m->is_index);
  ASSERT_EQ(m->manifests.size(), 3u);
  auto arm64 = SelectPlatform(*m, {"linux", "arm64", ""});
  ASSERT_TRUE(arm64.ok());
  EXPECT_EQ(arm64->platform.variant, "v8");
  EXPECT_TRUE(SelectPlatform(*m, {"linux", "arm", "v7"}).ok());
  auto none = SelectPlatform(*m, {"linux", "amd64", ""});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message.find("linux/arm/v7, linux/arm64/v8"), std::string::npos)
      << none.error().message;
  EXPECT_FALSE(SelectPlatform(*m, {"linux", "arm", "v6"}).ok());
  // A Docker manifest list reads the same.
  EXPECT_TRUE(
      ParseRegistryManifest(index, "application/vnd.docker.distribution.manifest.list.v2+json")
          .ok());
}

}  // namespace
}  // namespace faas::pull
