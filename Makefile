# Builds libsutra and installs it for C and C++ programs (Linux).
#
#   make                               # cargo build --release --lib
#   make install [PREFIX=/usr/local] [DESTDIR=] [LIBDIR=$(PREFIX)/lib] [INCLUDEDIR=$(PREFIX)/include]
#   make uninstall [PREFIX=...]        # removes exactly what install put there
#
# install puts under $(DESTDIR): $(INCLUDEDIR)/sutra.h and sutra.hpp; $(LIBDIR)/libsutra.so.$(VERSION)
# with the links libsutra.so.$(MAJOR) (the SONAME) and libsutra.so, libsutra.a,
# pkgconfig/sutra.pc and sutra-static.pc, and the CMake package cmake/sutra/ (imported targets
# sutra::sutra and sutra::sutra_static). The .pc and .cmake files are made from the templates in
# packaging/ with the paths (without DESTDIR) filled in.
#
# NO_BUILD=1 installs what is already built in $(BUILD_DIR) without running cargo (tests/install.rs
# uses it: it runs inside `cargo test`, which holds the build directory's lock).
#
# The static link line (NATIVE_STATIC_LIBS: what libsutra.a needs from the system) is computed
# at install time by `rustc --print native-static-libs` on an empty static library for the same
# target (the Rust standard library's needs; libsutra's dependencies add none), falling back to
# the Linux/glibc set below if rustc gives nothing. Pass NATIVE_STATIC_LIBS=... to override.

PREFIX     ?= /usr/local
DESTDIR    ?=
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
CARGO      ?= cargo
RUSTC      ?= rustc
# A Rust target triple for a cross build (cargo build --target ...); empty: the host.
TARGET     ?=
CARGO_TARGET_DIR ?= target
BUILD_DIR  ?= $(CARGO_TARGET_DIR)/$(if $(TARGET),$(TARGET)/)release
NO_BUILD   ?=
NATIVE_STATIC_LIBS ?=
NATIVE_STATIC_LIBS_FALLBACK := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
INSTALL    ?= install

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR   := $(word 1,$(subst ., ,$(VERSION)))
MINOR   := $(word 2,$(subst ., ,$(VERSION)))
SONAME  := libsutra.so.$(MAJOR)
REALNAME := libsutra.so.$(VERSION)

PKGDIR   := $(DESTDIR)$(LIBDIR)/pkgconfig
CMAKEDIR := $(DESTDIR)$(LIBDIR)/cmake/sutra

.PHONY: all build install uninstall
all: build

ifeq ($(NO_BUILD),1)
build:
	@for f in $(BUILD_DIR)/libsutra.so $(BUILD_DIR)/libsutra.a; do \
		test -f $$f || { echo "make: $$f is not built (NO_BUILD=1): run cargo build --release" >&2; exit 1; }; \
	done
else
build:
	$(CARGO) build --release --lib $(if $(TARGET),--target $(TARGET))
endif

install: build
	@test -n "$(VERSION)" || { echo "make: no version in Cargo.toml" >&2; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(PKGDIR) $(CMAKEDIR)
	$(INSTALL) -m 644 include/sutra.h include/sutra.hpp $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL) -m 755 $(BUILD_DIR)/libsutra.so $(DESTDIR)$(LIBDIR)/$(REALNAME)
	ln -sf $(REALNAME) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libsutra.so
	$(INSTALL) -m 644 $(BUILD_DIR)/libsutra.a $(DESTDIR)$(LIBDIR)/libsutra.a
	@set -e; \
	libs='$(NATIVE_STATIC_LIBS)'; \
	if [ -z "$$libs" ]; then \
		tmp=$$(mktemp -d); \
		libs=$$(echo '' | $(RUSTC) --crate-type staticlib --crate-name sutra_probe $(if $(TARGET),--target $(TARGET)) \
			--print native-static-libs -o $$tmp/libsutra_probe.a - 2>&1 | sed -n 's/^note: native-static-libs: //p'); \
		rm -rf $$tmp; \
	fi; \
	[ -n "$$libs" ] || libs='$(NATIVE_STATIC_LIBS_FALLBACK)'; \
	list=$$(echo $$libs | tr ' ' ';'); \
	echo "static link line: $$libs"; \
	for t in sutra.pc sutra-static.pc; do \
		sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
			-e 's|@VERSION@|$(VERSION)|g' -e "s|@NATIVE_STATIC_LIBS@|$$libs|g" \
			packaging/$$t.in > $(PKGDIR)/$$t; \
	done; \
	for t in sutraConfig.cmake sutraConfigVersion.cmake; do \
		sed -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
			-e 's|@MAJOR@|$(MAJOR)|g' -e 's|@MINOR@|$(MINOR)|g' -e "s|@NATIVE_STATIC_LIBS_LIST@|$$list|g" \
			packaging/$$t.in > $(CMAKEDIR)/$$t; \
	done
	@echo "installed libsutra $(VERSION) under $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/sutra.h $(DESTDIR)$(INCLUDEDIR)/sutra.hpp
	rm -f $(DESTDIR)$(LIBDIR)/$(REALNAME) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libsutra.so
	rm -f $(DESTDIR)$(LIBDIR)/libsutra.a $(PKGDIR)/sutra.pc $(PKGDIR)/sutra-static.pc
	rm -f $(CMAKEDIR)/sutraConfig.cmake $(CMAKEDIR)/sutraConfigVersion.cmake
	-rmdir $(CMAKEDIR) 2>/dev/null
