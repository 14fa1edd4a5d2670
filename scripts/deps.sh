#!/usr/bin/env bash
# What the test suite needs beyond a Rust toolchain and a C compiler, installed from Debian
# packages only where missing (sudo when not root): the README's test command runs this first.
set -euo pipefail
# A JDK (javac, java, jni.h) for tests/java_binding.rs, the JNI binding of bindings/java; the
# distribution's default (OpenJDK 17 on Debian 12), installed only when javac is missing
# (slim images lack the man folder its postinst links into).
command -v javac >/dev/null || $([ "$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive sh -c 'mkdir -p /usr/share/man/man1 && apt-get update -qq && apt-get install -y -qq --no-install-recommends default-jdk-headless'
command -v clang >/dev/null || { S=$([ "$(id -u)" -eq 0 ] || echo sudo); $S apt-get update -qq && $S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang; }  # tests/swift_binding.rs compiles the Swift module maps with clang -fmodules
# make, g++, pkg-config and cmake for tests/install.rs (make install, pkg-config and CMake consumers) and tests/cpp_binding.rs (sutra.hpp); pip's cmake when apt cannot.
command -v cmake >/dev/null && command -v pkg-config >/dev/null && command -v g++ >/dev/null && command -v make >/dev/null || { S=$([ "$(id -u)" -eq 0 ] || echo sudo); $S apt-get update -qq && $S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake pkg-config g++ make; } || python3 -m pip install -q cmake
