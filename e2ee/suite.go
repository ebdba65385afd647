package e2ee

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// Suite is an SFrame cipher suite, numbered as in the IANA "SFrame Cipher
// Suites" registry (RFC 9605 §8.1). The constant names are the RFC's, as
// crypto/tls does for TLS suites.
type Suite uint16

// The cipher suites of RFC 9605 §4.5. Parley uses AES_128_GCM_SHA256_128.
const (
	AES_128_CTR_HMAC_SHA256_80 Suite = 0x0001
	AES_128_CTR_HMAC_SHA256_64 Suite = 0x0002
	AES_128_CTR_HMAC_SHA256_32 Suite = 0x0003
	AES_128_GCM_SHA256_128     Suite = 0x0004
	AES_256_GCM_SHA512_128     Suite = 0x0005
)

// HKDF labels, one per purpose (RFC 9605 §4.4.2 and §5.1). The key and salt
// labels end in a space and are followed by the KID (8 bytes, big-endian)
// and the suite (2 bytes, big-endian). The ratchet label has no trailing
// space and nothing appended: RFC 9605 §5.1 writes it as the literal
// "SFrame 1.0 Ratchet".
const (
	labelKey     = "SFrame 1.0 Secret key "
	labelSalt    = "SFrame 1.0 Secret salt "
	labelRatchet = "SFrame 1.0 Ratchet"
)

// MinBaseKeyLen is the shortest base key NewSender, AddKey and Ratchet
// accept. RFC 9605 sets no length; 16 bytes (the RFC vectors' length) is our
// floor. Parley's own base keys are 32 bytes.
const MinBaseKeyLen = 16

// nonceLen is AEAD.Nn, 12 bytes for every suite of RFC 9605.
const nonceLen = 12

// suiteParams holds the constants of RFC 9605 Table 1.
type suiteParams struct {
	name string
	hash func() hash.Hash
	nh   int  // hash output size
	nka  int  // AES key size for the CTR+HMAC construction, 0 for GCM
	nk   int  // AEAD key size (nka + nh for CTR+HMAC)
	nt   int  // tag size
	ctr  bool // AES-CTR + HMAC (§4.5.1) rather than AES-GCM
}

var suites = map[Suite]*suiteParams{
	AES_128_CTR_HMAC_SHA256_80: {"AES_128_CTR_HMAC_SHA256_80", sha256.New, 32, 16, 48, 10, true},
	AES_128_CTR_HMAC_SHA256_64: {"AES_128_CTR_HMAC_SHA256_64", sha256.New, 32, 16, 48, 8, true},
	AES_128_CTR_HMAC_SHA256_32: {"AES_128_CTR_HMAC_SHA256_32", sha256.New, 32, 16, 48, 4, true},
	AES_128_GCM_SHA256_128:     {"AES_128_GCM_SHA256_128", sha256.New, 32, 0, 16, 16, false},
	AES_256_GCM_SHA512_128:     {"AES_256_GCM_SHA512_128", sha512.New, 64, 0, 32, 16, false},
}

func (s Suite) params() (*suiteParams, error) {
	p, ok := suites[s]
	if !ok {
		return nil, fmt.Errorf("%w: 0x%04x", ErrUnknownSuite, uint16(s))
	}
	return p, nil
}

// Supported reports whether s is one of the suites of RFC 9605.
func (s Suite) Supported() bool { _, ok := suites[s]; return ok }

// String returns the RFC name of the suite, or Suite(0x....) if unknown.
func (s Suite) String() string {
	if p, ok := suites[s]; ok {
		return p.name
	}
	return fmt.Sprintf("Suite(0x%04x)", uint16(s))
}

// Nh is the size in bytes of the suite's hash output (0 if unknown).
func (s Suite) Nh() int { return s.get(func(p *suiteParams) int { return p.nh }) }

// Nka is the AES key size of the CTR+HMAC suites (0 for GCM or unknown).
func (s Suite) Nka() int { return s.get(func(p *suiteParams) int { return p.nka }) }

// Nk is the size in bytes of the AEAD key, sframe_key (0 if unknown).
func (s Suite) Nk() int { return s.get(func(p *suiteParams) int { return p.nk }) }

// Nn is the size in bytes of the nonce and of sframe_salt (0 if unknown).
func (s Suite) Nn() int { return s.get(func(p *suiteParams) int { return nonceLen }) }

// Nt is the size in bytes of the authentication tag (0 if unknown).
func (s Suite) Nt() int { return s.get(func(p *suiteParams) int { return p.nt }) }

func (s Suite) get(f func(*suiteParams) int) int {
	if p, ok := suites[s]; ok {
		return f(p)
	}
	return 0
}

// Overhead is the number of bytes Seal adds to a plaintext for kid and ctr:
// the header and the tag.
func (s Suite) Overhead(kid, ctr uint64) int { return HeaderLen(kid, ctr) + s.Nt() }

// keyMaterial is what RFC 9605 §4.4.2 derives from a base key for one KID.
type keyMaterial struct {
	secret []byte // sframe_secret
	key    []byte // sframe_key, Nk bytes
	salt   []byte // sframe_salt, Nn bytes
}

// kdfLabel builds label || KID (8 bytes BE) || suite (2 bytes BE).
func kdfLabel(label string, kid uint64, s Suite) string {
	b := make([]byte, 0, len(label)+10)
	b = append(b, label...)
	b = binary.BigEndian.AppendUint64(b, kid)
	b = binary.BigEndian.AppendUint16(b, uint16(s))
	return string(b)
}

// deriveKeySalt is derive_key_salt of RFC 9605 §4.4.2:
//
//	sframe_secret = HKDF-Extract("", base_key)
//	sframe_key    = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret key "  + KID + cipher_suite, AEAD.Nk)
//	sframe_salt   = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret salt " + KID + cipher_suite, AEAD.Nn)
//
// with the suite's hash, KID as 8 bytes and cipher_suite as 2 bytes, both
// big-endian.
func (s Suite) deriveKeySalt(kid uint64, baseKey []byte) (*keyMaterial, error) {
	p, err := s.params()
	if err != nil {
		return nil, err
	}
	if len(baseKey) < MinBaseKeyLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrBadKey, len(baseKey), MinBaseKeyLen)
	}
	secret, err := hkdf.Extract(p.hash, baseKey, nil)
	if err != nil {
		return nil, err
	}
	key, err := hkdf.Expand(p.hash, secret, kdfLabel(labelKey, kid, s), p.nk)
	if err != nil {
		return nil, err
	}
	salt, err := hkdf.Expand(p.hash, secret, kdfLabel(labelSalt, kid, s), nonceLen)
	if err != nil {
		return nil, err
	}
	return &keyMaterial{secret: secret, key: key, salt: salt}, nil
}

// Ratchet returns the next base key in a sender's ratchet chain, RFC 9605
// §5.1:
//
//	base_key[i+1] = HKDF-Expand(HKDF-Extract("", base_key[i]), "SFrame 1.0 Ratchet", CipherSuite.Nh)
//
// The label is exactly "SFrame 1.0 Ratchet" (18 bytes, no trailing space,
// no KID or suite appended), unlike the key and salt labels of §4.4.2. The
// result is Nh bytes: 32 for the SHA-256 suites, 64 for
// AES_256_GCM_SHA512_128. The RFC has no ratchet vectors;
// testdata/parley-ratchet-vectors.json holds ours.
func Ratchet(suite Suite, baseKey []byte) ([]byte, error) {
	p, err := suite.params()
	if err != nil {
		return nil, err
	}
	if len(baseKey) < MinBaseKeyLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrBadKey, len(baseKey), MinBaseKeyLen)
	}
	prk, err := hkdf.Extract(p.hash, baseKey, nil)
	if err != nil {
		return nil, err
	}
	return hkdf.Expand(p.hash, prk, labelRatchet, p.nh)
}

// newAEAD builds the suite's AEAD from sframe_key.
func (s Suite) newAEAD(key []byte) (cipher.AEAD, error) {
	p, err := s.params()
	if err != nil {
		return nil, err
	}
	if len(key) != p.nk {
		return nil, fmt.Errorf("%w: sframe_key is %d bytes, want %d", ErrBadKey, len(key), p.nk)
	}
	if p.ctr {
		return newCTRHMAC(key, p.nka, p.hash, p.nt)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// ctrHMAC is the AES-CTR + HMAC AEAD of RFC 9605 §4.5.1 (encrypt-then-MAC).
// The AEAD key is enc_key (Nka bytes) || auth_key (Nh bytes); the CTR
// initial counter block is nonce || 0x00000000; the tag is HMAC(auth_key,
// len(aad) || len(ct) || Nt || nonce || aad || ct), each length 8 bytes
// big-endian, truncated to Nt bytes.
type ctrHMAC struct {
	block   cipher.Block
	authKey []byte
	hash    func() hash.Hash
	nt      int
}

func newCTRHMAC(key []byte, nka int, h func() hash.Hash, nt int) (*ctrHMAC, error) {
	block, err := aes.NewCipher(key[:nka])
	if err != nil {
		return nil, err
	}
	return &ctrHMAC{block: block, authKey: append([]byte(nil), key[nka:]...), hash: h, nt: nt}, nil
}

func (c *ctrHMAC) NonceSize() int { return nonceLen }
func (c *ctrHMAC) Overhead() int  { return c.nt }

var errOpen = errors.New("sframe: message authentication failed")

func (c *ctrHMAC) tag(dst, nonce, aad, ct []byte) []byte {
	m := hmac.New(c.hash, c.authKey)
	var lens [24]byte
	binary.BigEndian.PutUint64(lens[0:], uint64(len(aad)))
	binary.BigEndian.PutUint64(lens[8:], uint64(len(ct)))
	binary.BigEndian.PutUint64(lens[16:], uint64(c.nt))
	m.Write(lens[:])
	m.Write(nonce)
	m.Write(aad)
	m.Write(ct)
	return m.Sum(dst)[:c.nt]
}

func (c *ctrHMAC) xor(out, nonce, in []byte) {
	var iv [aes.BlockSize]byte
	copy(iv[:], nonce) // the last four bytes, the block counter, start at 0
	cipher.NewCTR(c.block, iv[:]).XORKeyStream(out, in)
}

// Seal follows cipher.AEAD: out may overlap plaintext only exactly.
func (c *ctrHMAC) Seal(dst, nonce, plaintext, aad []byte) []byte {
	if len(nonce) != nonceLen {
		panic("sframe: bad nonce length")
	}
	ret, out := grow(dst, len(plaintext)+c.nt)
	ct := out[:len(plaintext)]
	c.xor(ct, nonce, plaintext)
	var sum [sha512.Size]byte
	copy(out[len(plaintext):], c.tag(sum[:0], nonce, aad, ct))
	return ret
}

// Open follows cipher.AEAD: the tag is checked in constant time before
// anything is decrypted.
func (c *ctrHMAC) Open(dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	if len(nonce) != nonceLen {
		panic("sframe: bad nonce length")
	}
	if len(ciphertext) < c.nt {
		return nil, errOpen
	}
	inner, tag := ciphertext[:len(ciphertext)-c.nt], ciphertext[len(ciphertext)-c.nt:]
	var sum [sha512.Size]byte
	if !hmac.Equal(c.tag(sum[:0], nonce, aad, inner), tag) {
		return nil, errOpen
	}
	ret, out := grow(dst, len(inner))
	c.xor(out, nonce, inner)
	return ret, nil
}

// grow extends dst by n bytes and returns the whole slice and the new tail.
func grow(dst []byte, n int) (whole, tail []byte) {
	if total := len(dst) + n; cap(dst) >= total {
		whole = dst[:total]
	} else {
		whole = make([]byte, total, total+total/4)
		copy(whole, dst)
	}
	return whole, whole[len(dst):]
}
