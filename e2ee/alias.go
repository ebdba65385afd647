package e2ee

import "unsafe"

// anyOverlap reports whether x and y share any element, as
// crypto/internal/alias.AnyOverlap does. Seal and Open use it to turn an
// overlapping dst into an exact in-place operation instead of a panic in
// crypto/cipher.
func anyOverlap(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}

// overlaps is anyOverlap for a non-empty x, cheap enough for the compiler
// to inline into the fast paths of Seal and Open.
func overlaps(x, y []byte) bool {
	if len(y) == 0 {
		return false
	}
	px, py := uintptr(unsafe.Pointer(unsafe.SliceData(x))), uintptr(unsafe.Pointer(unsafe.SliceData(y)))
	return py < px+uintptr(len(x)) && px < py+uintptr(len(y))
}
