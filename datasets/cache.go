package datasets

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"kakusan/internal/atomic"
)

// The decoded-set cache: one file per (files' contents, labels, size,
// background, channels), named by the SHA-256 of all of them, holding a
// header, the pixels, the labels and the SHA-256 of what precedes it.
// Nothing in it is trusted: a file whose header disagrees with the folder
// just listed, or whose checksum fails, is ignored (and rewritten).

// cacheMagic starts every cache file; its last byte is the format's version.
var cacheMagic = []byte("kakusan images\x00\x01")

// cacheKey hashes what a decoded set depends on.
type cacheKey struct{ h hash.Hash }

func newCacheKey(classes []string, size, c int, bg [3]uint8) *cacheKey {
	k := &cacheKey{sha256.New()}
	k.h.Write(cacheMagic)
	fmt.Fprintf(k.h, "size %d channels %d background %v classes %q\n", size, c, bg, classes)
	return k
}

// file adds image i: its label and its contents' digest.
func (k *cacheKey) file(label uint8, digest []byte) {
	k.h.Write([]byte{label})
	k.h.Write(digest)
}

func (k *cacheKey) name() string { return hex.EncodeToString(k.h.Sum(nil)) + ".images" }

// readCache fills s (whose N, C, H and W are set and Pixels and Labels
// allocated) from the cache file path; false when there is none or it is
// not exactly what s needs.
func readCache(path string, s *Images) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	want := cacheHeader(s)
	st, err := f.Stat()
	if err != nil || st.Size() != int64(len(want)+len(s.Pixels)+len(s.Labels)+sha256.Size) {
		return false
	}
	h := sha256.New()
	r := io.TeeReader(f, h)
	head := make([]byte, len(want))
	if _, err := io.ReadFull(r, head); err != nil || !bytes.Equal(head, want) {
		return false
	}
	if _, err := io.ReadFull(r, s.Pixels); err != nil {
		return false
	}
	if _, err := io.ReadFull(r, s.Labels); err != nil {
		return false
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, sum); err != nil || !bytes.Equal(sum, h.Sum(nil)) {
		return false
	}
	return true
}

// cacheHeader is the magic, then N, C, H, W as little-endian uint64s.
func cacheHeader(s *Images) []byte {
	b := append([]byte(nil), cacheMagic...)
	for _, v := range []int{s.N, s.C, s.H, s.W} {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

// writeCache writes s to path atomically (a reader never sees a partial
// file).
func writeCache(path string, s *Images) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomic.Write(path, func(f io.Writer) error {
		h := sha256.New()
		w := io.MultiWriter(f, h)
		for _, b := range [][]byte{cacheHeader(s), s.Pixels, s.Labels} {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		_, err := f.Write(h.Sum(nil))
		return err
	})
}
