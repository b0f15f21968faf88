# What `cmake --install` puts where, and the Debian package CPack makes of it
# (scripts/package.sh: cpack -G DEB in a Release build with CMAKE_INSTALL_PREFIX=/usr).
#
#   bin/faasd, bin/faas                        the two programs (src/CMakeLists.txt); `faas
#                                              init` carries the SDK files compiled in
#                                              (sdk/c/CMakeLists.txt), so nothing else is
#                                              installed for it
#   /lib/systemd/system/faasd.service          the unit (FAAS_SYSTEMD_UNIT_DIR, below)
#   share/doc/faasd/README.md, docs/           the docs, links between them kept

# Debian 12 ships units in /lib/systemd/system, outside the /usr prefix; other prefixes
# keep the unit under themselves. Chosen at each configure, so a build dir whose prefix
# changes follows it.
set(FAAS_SYSTEMD_UNIT_DIR "" CACHE STRING
    "Where the systemd unit is installed (relative: under the prefix; empty: \
/lib/systemd/system with the /usr prefix, lib/systemd/system under any other)")
set(faas_unit_dir "${FAAS_SYSTEMD_UNIT_DIR}")
if(NOT faas_unit_dir AND CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(faas_unit_dir "/lib/systemd/system")
elseif(NOT faas_unit_dir)
  set(faas_unit_dir "lib/systemd/system")
endif()

install(FILES packaging/faasd.service DESTINATION ${faas_unit_dir})
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs
        FILES_MATCHING PATTERN "*.md" PATTERN "*.png")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME faasd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "faasd")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "single-node Function-as-a-Service platform: one container per TCP connection")
set(CPACK_PACKAGE_DESCRIPTION
    "faasd deploys container images (docker save, podman save or OCI archives) as \
functions, each on its own IP address on the loopback interface, and answers every TCP \
connection to that address with a fresh container started by runc. The package holds \
the daemon (faasd), its command line client (faas) and a systemd unit; enable it with \
systemctl enable --now faasd.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # faasd_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "faasd maintainers")
find_program(FAAS_DPKG dpkg)
if(FAAS_DPKG)
  execute_process(COMMAND ${FAAS_DPKG} --print-architecture
                  OUTPUT_VARIABLE CPACK_DEBIAN_PACKAGE_ARCHITECTURE
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
endif()
# The shared libraries' packages come from dpkg-shlibdeps (dpkg-dev); the OCI runtime is
# only ever started as a program, so it is named here.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "runc")
# Pulls over HTTPS check registries against the system CA store.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "ca-certificates")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "crun, podman")
include(CPack)
