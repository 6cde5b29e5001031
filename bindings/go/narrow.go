package sparseattn

// #include "shim.h"
import "C"

import "math"

// narrower converts the Go ints of option structs into the C ABI's int32
// fields. A value that does not fit would silently wrap in a plain
// conversion, so the first such field is remembered and reported instead.
type narrower struct{ err error }

func (n *narrower) i32(field string, v int) C.int32_t {
	if n.err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
		n.err = errorf(StatusInvalidArgument, "%s is %d, which does not fit the C ABI's int32", field, v)
	}
	return C.int32_t(v)
}
