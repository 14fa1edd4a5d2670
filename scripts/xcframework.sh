#!/usr/bin/env bash
# Assembles target/xcframework/Sutra.xcframework from the static libraries cargo built for
# Apple targets (no Xcode needed: an XCFramework is a folder with an Info.plist).
#
#   scripts/xcframework.sh            # builds the missing libraries first (cargo rustc ... staticlib)
#
# Slices: ios-arm64 (aarch64-apple-ios), ios-arm64-simulator (aarch64-apple-ios-sim),
# macos-arm64 (aarch64-apple-darwin). Each holds libsutra.a and Headers/ (sutra.h and a
# module map declaring the Clang module `Sutra`, so Swift can `import Sutra`). Libraries are
# built by scripts/staticlib.sh (nightly -Zbuild-std where no prebuilt standard library is
# installed); a slice that cannot be built is left out with a warning, and
# SUTRA_XCFRAMEWORK_STRICT=1 makes that an error.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/xcframework/Sutra.xcframework
SLICES=("ios-arm64 aarch64-apple-ios ios" "ios-arm64-simulator aarch64-apple-ios-sim ios simulator"
        "macos-arm64 aarch64-apple-darwin macos")
installed=$(rustup target list --installed)
rm -rf "$OUT"
mkdir -p "$OUT"
entries=""
for s in "${SLICES[@]}"; do
    read -r id target platform variant <<<"$s"
    lib="target/$target/release/libsutra.a"
    if [ ! -f "$lib" ] || [ -n "$(find src Cargo.toml -newer "$lib" -print -quit)" ]; then
        if ! scripts/staticlib.sh "$target"; then
            echo "xcframework: WARNING: $id left out: $target could not be built" >&2
            [ "${SUTRA_XCFRAMEWORK_STRICT:-0}" = 1 ] && exit 1
            continue
        fi
    fi
    mkdir -p "$OUT/$id/Headers"
    cp "$lib" "$OUT/$id/libsutra.a"
    cp include/sutra.h "$OUT/$id/Headers/sutra.h"
    cat >"$OUT/$id/Headers/module.modulemap" <<'MAP'
// Clang module of libsutra: `import Sutra` in Swift exposes the C API of sutra.h.
module Sutra {
    header "sutra.h"
    link "sutra"
    export *
}
MAP
    variant_key=""
    if [ -n "${variant:-}" ]; then
        variant_key="
			<key>SupportedPlatformVariant</key>
			<string>$variant</string>"
    fi
    entries+="
		<dict>
			<key>HeadersPath</key>
			<string>Headers</string>
			<key>LibraryIdentifier</key>
			<string>$id</string>
			<key>LibraryPath</key>
			<string>libsutra.a</string>
			<key>SupportedArchitectures</key>
			<array>
				<string>arm64</string>
			</array>
			<key>SupportedPlatform</key>
			<string>$platform</string>$variant_key
		</dict>"
    variant=""
    echo "xcframework: $id <- $lib ($(du -h "$lib" | cut -f1))"
done
cat >"$OUT/Info.plist" <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>AvailableLibraries</key>
	<array>$entries
	</array>
	<key>CFBundlePackageType</key>
	<string>XFWK</string>
	<key>XCFrameworkFormatVersion</key>
	<string>1.0</string>
</dict>
</plist>
PLIST
# The plist must parse (python's plistlib reads Apple's format) and list every slice copied.
python3 - "$OUT" <<'PY'
import os, plistlib, sys
out = sys.argv[1]
with open(os.path.join(out, "Info.plist"), "rb") as f:
    info = plistlib.load(f)
libs = info["AvailableLibraries"]
assert libs, "no slice"
for lib in libs:
    base = os.path.join(out, lib["LibraryIdentifier"])
    for p in (lib["LibraryPath"], os.path.join(lib["HeadersPath"], "sutra.h"), os.path.join(lib["HeadersPath"], "module.modulemap")):
        assert os.path.isfile(os.path.join(base, p)), p
    with open(os.path.join(base, lib["LibraryPath"]), "rb") as f:
        assert f.read(8) == b"!<arch>\n", "not an ar archive"
print("xcframework: %s (%s)" % (out, ", ".join(l["LibraryIdentifier"] for l in libs)))
PY
