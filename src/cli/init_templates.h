// The project templates of `faas init`: for each language, every file of a function that
// builds with podman and deploys with `faas new` as it is. The SDK sources among them are
// the ones in sdk/, compiled into faas (sdk/c/CMakeLists.txt generates sdk_sources.cc), so
// the faas binary is self-contained.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace faas::cli {

// The SDK sources, byte for byte (defined in the generated sdk_sources.cc).
extern const std::string_view kSdkFaasH;           // sdk/c/faas.h
extern const std::string_view kSdkFaasC;           // sdk/c/faas.c
extern const std::string_view kSdkFaasStdioC;      // sdk/stdio/faas-stdio.c
extern const std::string_view kSdkFaasHandlerPy;   // sdk/python/faas_handler.py
extern const std::string_view kSdkFaasLocalRun;    // sdk/tools/faas-local-run
extern const std::string_view kSdkFaasPythonBase;  // sdk/tools/faas-python-base

// One file of a project.
struct TemplateFile {
  std::string_view path;  // relative to the project directory, '/'-separated
  std::string content;    // every "{{NAME}}" stands for the function name, unless verbatim
  bool executable = false;
  bool verbatim = false;  // an SDK source: written as it is
};

struct Template {
  std::string_view lang;         // what --lang takes: c, python, stdio
  std::string_view description;  // e.g. "C (static binary, FROM scratch)"
  std::vector<TemplateFile> files;
  // What to do next, printed after the files are written. "{{NAME}}" is the function name
  // and "{{DIR}}" the project directory as the user gave it.
  std::string_view next_steps;
};

// Every template, in the order `faas init --help` lists them.
const std::vector<Template>& Templates();

// The template for `lang`, or nullptr.
const Template* FindTemplate(std::string_view lang);

// `text` with every "{{NAME}}" replaced by `name` and every "{{DIR}}" by `dir`.
std::string RenderTemplate(std::string_view text, std::string_view name, std::string_view dir = "");

}  // namespace faas::cli
