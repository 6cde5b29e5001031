// Package sparseattn binds libsparseattn, sparse attention over long KV caches
// behind a stable C ABI (include/sparseattn.h).
//
// An engine keeps, per layer, an Index over its cached keys, asks which keys
// each query should attend to (Index.Select), runs exact-softmax attention
// over just those (Context.Attend) and keeps its cache at a fixed size by
// freeing the least useful slots (Context.Evict).
//
// Handles own C memory: call Close when done (a finalizer frees a handle the
// program forgot, but only when the garbage collector gets to it). Errors are
// *Error values carrying the library's Status and message; errors.Is(err,
// sparseattn.StatusShape) tests the status.
//
// Go memory is passed to C only for the duration of a call and never holds a
// Go pointer; no pointer to Go memory is kept by the library.
//
// Build flags: set CGO_CFLAGS=-I<prefix>/include and CGO_LDFLAGS=-L<libdir>
// (plus -Wl,-rpath,<libdir> to run without LD_LIBRARY_PATH), or install the
// library where the compiler looks by default, or build with
// -tags sparseattn_pkgconfig to take the flags from `pkg-config sparseattn`.
//
// The module path is not served by any proxy: other modules reach it with
// `go mod edit -replace sparseattn.dev/sparseattn=<checkout>/bindings/go`
// and `go get sparseattn.dev/sparseattn` (bindings/README.md).
package sparseattn

// #cgo LDFLAGS: -lsparseattn
// #include "shim.h"
import "C"

import (
	"fmt"
	"unsafe"
)

// Status is a status code of the library (sa_status). It implements error so
// that errors.Is(err, StatusShape) matches an *Error with that status.
type Status uint32

const (
	StatusOK                 Status = C.SA_OK
	StatusNullPointer        Status = C.SA_ERR_NULL_POINTER
	StatusInvalidArgument    Status = C.SA_ERR_INVALID_ARGUMENT
	StatusDType              Status = C.SA_ERR_DTYPE
	StatusShape              Status = C.SA_ERR_SHAPE
	StatusOutOfRange         Status = C.SA_ERR_OUT_OF_RANGE
	StatusOverflow           Status = C.SA_ERR_OVERFLOW
	StatusStructSize         Status = C.SA_ERR_STRUCT_SIZE
	StatusOutOfMemory        Status = C.SA_ERR_OUT_OF_MEMORY
	StatusUnsupported        Status = C.SA_ERR_UNSUPPORTED
	StatusBackendUnavailable Status = C.SA_ERR_BACKEND_UNAVAILABLE
	StatusFormat             Status = C.SA_ERR_FORMAT
	StatusInternal           Status = C.SA_ERR_INTERNAL
)

// String is the library's name for the status, e.g. "SA_ERR_SHAPE".
func (s Status) String() string {
	return C.GoString(C.sa_status_name(C.sa_status(s)))
}

// Error makes a Status usable as a target of errors.Is.
func (s Status) Error() string { return s.String() }

// Error is a failed call: the status and the message naming the argument and
// the reason (the library's sa_last_error(), or this package's own check made
// before calling C).
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return e.Status.String() + ": " + e.Message }

// Is reports whether target is this error's Status.
func (e *Error) Is(target error) bool {
	s, ok := target.(Status)
	return ok && s == e.Status
}

// check turns a status and the message copied by the shim into an error.
func check(st C.sa_status, msg *C.char) error {
	if st == C.SA_OK {
		return nil
	}
	m := ""
	if msg != nil {
		m = C.GoString(msg)
		C.free(unsafe.Pointer(msg))
	}
	return &Error{Status: Status(st), Message: m}
}

func errorf(st Status, format string, args ...interface{}) error {
	return &Error{Status: st, Message: fmt.Sprintf(format, args...)}
}

// Version is the library's version, (major << 16) | (minor << 8) | patch.
func Version() uint32 { return uint32(C.sa_version()) }

// VersionString is the library's version as "major.minor.patch".
func VersionString() string { return C.GoString(C.sa_version_string()) }

// HeaderVersion is the version of the header this package was compiled with.
const HeaderVersion = uint32(C.SA_VERSION_MAJOR<<16 | C.SA_VERSION_MINOR<<8 | C.SA_VERSION_PATCH)

// ISA is an instruction set of the attention kernels.
type ISA uint32

const (
	ISAScalar ISA = C.SA_ISA_SCALAR
	ISANeon   ISA = C.SA_ISA_NEON
	ISAAVX2   ISA = C.SA_ISA_AVX2
	ISAAVX512 ISA = C.SA_ISA_AVX512
	ISAAuto   ISA = C.SA_ISA_AUTO
)

// String is the library's name: "scalar", "neon", "avx2", "avx512" or "auto".
func (i ISA) String() string { return C.GoString(C.sa_isa_name(C.sa_isa(i))) }

// SelectorKind says how an Index chooses keys.
type SelectorKind uint32

const (
	SelectorExact   SelectorKind = C.SA_SELECTOR_EXACT   // all scores, exact top-K
	SelectorPage    SelectorKind = C.SA_SELECTOR_PAGE    // Quest-style page bounds
	SelectorLSH     SelectorKind = C.SA_SELECTOR_LSH     // multi-round SimHash
	SelectorHNSW    SelectorKind = C.SA_SELECTOR_HNSW    // hnswlib graph per KV head
	SelectorLearned SelectorKind = C.SA_SELECTOR_LEARNED // learned projections
	SelectorIndexer SelectorKind = C.SA_SELECTOR_INDEXER // lightning indexer
)

func (k SelectorKind) String() string {
	switch k {
	case SelectorExact:
		return "exact"
	case SelectorPage:
		return "page"
	case SelectorLSH:
		return "lsh"
	case SelectorHNSW:
		return "hnsw"
	case SelectorLearned:
		return "learned"
	case SelectorIndexer:
		return "indexer"
	}
	return fmt.Sprintf("SelectorKind(%d)", uint32(k))
}

func cbool(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}
