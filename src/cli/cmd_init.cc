// faas init --lang LANG DIR: writes a new function project (handler skeleton, SDK, Dockerfile,
// build script, README) from the templates in cli/init_templates.h. Needs no daemon.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/init_templates.h"
#include "common/fd.h"
#include "common/file.h"
#include "common/io.h"
#include "store/names.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Creates a function project in DIR (created if needed): a handler skeleton that answers\n"
    "\"Hello, NAME!\", the SDK sources it needs, a Dockerfile and build.sh, which builds\n"
    "the image with podman (compiling C statically on this machine first) and with an\n"
    "argument writes 'podman save' output for 'faas new'. Languages:\n"
    "  c       C with the C SDK: a static binary in a FROM scratch image\n"
    "  python  Python 3 with the Python SDK (stdlib only), FROM ${BASE} (python:3.11-slim)\n"
    "  stdio   a shell script run by faas-stdio and a static busybox, FROM scratch\n"
    "NAME (the image and function name) defaults to DIR's last component. Existing files\n"
    "are never overwritten: faas init fails before writing anything if one is in the way.";

struct InitArgs {
  std::string lang;
  std::string dir;
  std::string name;
};

// The function name DIR suggests: its last component, lower-cased, other characters as '-'.
std::string NameFromDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::path path = std::filesystem::absolute(dir, ec).lexically_normal();
  std::string base = path.filename().string();
  if (base.empty()) base = path.parent_path().filename().string();  // "dir/" ends in ""
  std::string name;
  for (char c : base) {
    c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (name.empty() && !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) continue;
    name += ok ? c : '-';
  }
  if (name.size() > 63) name.resize(63);
  return name;
}

// `text` as one shell word: as it is when that is safe, else in single quotes.
std::string ShellQuote(const std::string& text) {
  const bool plain = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("_./-+:,=@%").find(c) != std::string_view::npos;
  });
  if (plain) return text;
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string Join(const std::string& dir, std::string_view rel) {
  return dir.empty() || dir.back() == '/' ? dir + std::string(rel) : dir + "/" + std::string(rel);
}

// Fails unless every file of `tmpl` can be created in `dir` without replacing anything.
Status CheckFree(const std::string& dir, const Template& tmpl) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    return MakeError(Errc::kConflict, dir + " exists and is not a directory");
  }
  std::vector<std::string> taken;
  for (const TemplateFile& file : tmpl.files) {
    std::string path = Join(dir, file.path);
    if (::lstat(path.c_str(), &st) == 0) {
      taken.push_back(path);
    } else if (errno != ENOENT && errno != ENOTDIR) {
      return SysError(errno, "cannot check " + path);
    }
    size_t slash = file.path.find('/');
    if (slash != std::string_view::npos) {
      std::string parent = Join(dir, file.path.substr(0, slash));
      if (::stat(parent.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) &&
          std::find(taken.begin(), taken.end(), parent) == taken.end()) {
        taken.push_back(parent);
      }
    }
  }
  if (taken.empty()) return Ok();
  std::string list;
  for (const std::string& path : taken) list += (list.empty() ? "" : ", ") + path;
  return MakeError(Errc::kConflict, "not overwriting " + list +
                                        ": faas init only creates new files (choose another "
                                        "directory or move them away)");
}

Status WriteNewFile(const std::string& path, const std::string& content, bool executable) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     executable ? 0755 : 0644));
  if (!fd) return SysError(errno, "cannot create " + path);
  if (Status written = WriteAll(fd.get(), content); !written.ok())
    return SysError(written.error().sys_errno, "cannot write " + path);
  if (::close(fd.Release()) != 0) return SysError(errno, "cannot write " + path);
  return Ok();
}

// Creates `dir` and its missing parents, remembering the ones it made in `made`.
Status MakeDirsNoted(const std::string& dir, std::vector<std::string>& made) {
  std::vector<std::string> missing;
  std::filesystem::path p(dir);
  while (!p.empty() && !std::filesystem::exists(p)) {
    missing.push_back(p.string());
    if (!p.has_parent_path() || p.parent_path() == p) break;
    p = p.parent_path();
  }
  FAAS_RETURN_IF_ERROR(MakeDirs(dir));
  made.insert(made.end(), missing.rbegin(), missing.rend());
  return Ok();
}

// Writes every file; on failure removes what it wrote and the directories it created.
Status WriteProject(const InitArgs& args, const Template& tmpl, std::vector<std::string>& paths) {
  std::vector<std::string> dirs;
  std::vector<std::string> files;
  Status status = MakeDirsNoted(args.dir, dirs);
  for (const TemplateFile& file : tmpl.files) {
    if (!status.ok()) break;
    std::string path = Join(args.dir, file.path);
    size_t slash = file.path.rfind('/');
    if (slash != std::string_view::npos) {
      status = MakeDirsNoted(Join(args.dir, file.path.substr(0, slash)), dirs);
      if (!status.ok()) break;
    }
    status =
        WriteNewFile(path, file.verbatim ? file.content : RenderTemplate(file.content, args.name),
                     file.executable);
    if (status.ok()) files.push_back(path);
  }
  if (status.ok()) {
    paths = std::move(files);
    return status;
  }
  for (const std::string& path : files) ::unlink(path.c_str());
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) ::rmdir(it->c_str());
  return status;
}

int RunInit(const InitArgs& given) {
  InitArgs args = given;
  const Template* tmpl = FindTemplate(args.lang);
  if (tmpl == nullptr) {
    return Fail(MakeError(Errc::kInvalidArgument,
                          "unknown language " + args.lang + ": use c, python or stdio"),
                kExitUsage);
  }
  if (args.name.empty()) {
    args.name = NameFromDir(args.dir);
    if (!store::ValidateName(args.name).ok()) {
      return Fail(MakeError(Errc::kInvalidArgument, "cannot make a function name out of " +
                                                        args.dir + ": give one with --name"),
                  kExitUsage);
    }
  } else if (int code = CheckName(args.name); code != kExitOk) {
    return code;
  }
  if (Status vacant = CheckFree(args.dir, *tmpl); !vacant.ok()) return Fail(vacant.error());
  std::vector<std::string> paths;
  if (Status written = WriteProject(args, *tmpl, paths); !written.ok()) {
    return Fail(written.error());
  }
  std::cout << "✓ Created " << args.name << " (" << tmpl->lang << ") in " << args.dir << "\n";
  for (const std::string& path : paths) std::cout << "  " << path << "\n";
  std::string dir = args.dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::cout << RenderTemplate(tmpl->next_steps, args.name, ShellQuote(dir));
  return kExitOk;
}

}  // namespace

Verb AddInitCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "init", "Create a function project: handler, SDK, Dockerfile and build script");
  command->footer(kHelp);
  auto args = std::make_shared<InitArgs>();
  command->add_option("--lang", args->lang, "Language of the handler: c, python or stdio")
      ->required()
      ->check(CLI::IsMember({"c", "python", "stdio"}));
  command->add_option("--name", args->name,
                      "Function and image name (default: from DIR's last component)");
  command->add_option("DIR", args->dir, "Directory to create the project in")->required();
  return {command, [args](const Client&) { return RunInit(*args); }};
}

}  // namespace faas::cli
