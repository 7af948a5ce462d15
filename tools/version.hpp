// The build's version (project(VERSION)) and git commit ("<sha>", "<sha>-dirty" or "unknown"), generated at build
// time by cmake/version.cmake, for --version and the provenance every output records.
#pragma once

namespace parasol {

const char* build_version();
const char* build_commit();

}  // namespace parasol
