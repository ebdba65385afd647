package e2ee

import "unsafe"

// anyOverlap reports whether x and y share any element, as
// crypto/internal/alias.AnyOverlap does. Seal and Open use it to keep
// their scratch room clear of the inputs and to turn an overlapping dst
// into an exact in-place operation instead of a panic in crypto/cipher.
// It is small enough for the compiler to inline into their fast paths.
func anyOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 {
		return false
	}
	px, py := uintptr(unsafe.Pointer(unsafe.SliceData(x))), uintptr(unsafe.Pointer(unsafe.SliceData(y)))
	return py < px+uintptr(len(x)) && px < py+uintptr(len(y))
}
