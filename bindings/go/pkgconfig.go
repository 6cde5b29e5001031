//go:build sparseattn_pkgconfig

package sparseattn

// Built with -tags sparseattn_pkgconfig: compiler and linker flags come from
// `pkg-config --cflags --libs sparseattn` (PKG_CONFIG_PATH and
// PKG_CONFIG_SYSROOT_DIR are honoured).

// #cgo pkg-config: sparseattn
import "C"
