// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length, a JSON header mapping tensor names to dtype,
// shape and byte offsets (plus an optional "__metadata__" string map), then
// the raw little-endian tensor bytes. It has no cgo and no libtorch.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"kakusan/internal/atomic"
	"kakusan/internal/files"
)

// MaxHeader bounds the JSON header, as the reference implementation does.
const MaxHeader = 100 << 20

// DType names an element type as the format spells it.
type DType string

const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

var sizes = map[DType]int{F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, Bool: 1}

// Size is the byte size of one element, 0 for an unknown dtype.
func (d DType) Size() int { return sizes[d] }

// Tensor is one named array.
type Tensor struct {
	DType DType
	Shape []int64
	Data  []byte
}

// Numel is the element count.
func (t Tensor) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is a whole safetensors file.
type File struct {
	Tensors  map[string]Tensor
	Metadata map[string]string
}

type entry struct {
	DType   DType    `json:"dtype"`
	Shape   []int64  `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// Parse decodes a safetensors file held in memory. The tensors' Data slices
// alias b. Every structural problem is an error: a short file, a header that
// is not JSON, an unknown dtype, offsets outside the data, overlapping or
// missing byte ranges, a byte count that does not match dtype and shape.
func Parse(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, errors.New("too short for a safetensors header")
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeader {
		return nil, fmt.Errorf("header length %d exceeds %d bytes", n, MaxHeader)
	}
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("header length %d runs past the end of the file (%d bytes)", n, len(b))
	}
	header, data := b[8:8+n], b[8+n:]
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return nil, fmt.Errorf("header is not a JSON object: %v", err)
	}
	f := &File{Tensors: map[string]Tensor{}}
	type span struct {
		name       string
		start, end int64
	}
	var spans []span
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.Metadata); err != nil {
				return nil, fmt.Errorf("__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		var e entry
		dec := json.NewDecoder(bytes.NewReader(msg))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("tensor %q: %v", name, err)
		}
		size := e.DType.Size()
		if size == 0 {
			return nil, fmt.Errorf("tensor %q: unknown dtype %q", name, e.DType)
		}
		count := int64(1)
		for _, d := range e.Shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %q: negative dimension in shape %v", name, e.Shape)
			}
			if d != 0 && count > math.MaxInt64/d {
				return nil, fmt.Errorf("tensor %q: shape %v overflows", name, e.Shape)
			}
			count *= d
		}
		start, end := e.Offsets[0], e.Offsets[1]
		if start < 0 || end < start || end > int64(len(data)) {
			return nil, fmt.Errorf("tensor %q: offsets [%d, %d] outside the %d data bytes", name, start, end, len(data))
		}
		if count > math.MaxInt64/int64(size) || end-start != count*int64(size) {
			return nil, fmt.Errorf("tensor %q: %d bytes for %s of shape %v", name, end-start, e.DType, e.Shape)
		}
		f.Tensors[name] = Tensor{DType: e.DType, Shape: e.Shape, Data: data[start:end:end]}
		spans = append(spans, span{name, start, end})
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].start != spans[j].start {
			return spans[i].start < spans[j].start
		}
		return spans[i].end < spans[j].end
	})
	var at int64
	for _, s := range spans {
		if s.start != at {
			return nil, fmt.Errorf("tensor %q: data starts at byte %d, expected %d (holes and overlaps are not allowed)", s.name, s.start, at)
		}
		at = s.end
	}
	if at != int64(len(data)) {
		return nil, fmt.Errorf("%d trailing data bytes belong to no tensor", int64(len(data))-at)
	}
	return f, nil
}

// MaxFile bounds the files ReadFile reads whole (16 GiB), so a mistaken
// path cannot exhaust memory.
const MaxFile = 16 << 30

// ReadFile reads and parses a regular file of at most MaxFile bytes (it
// looks before it opens: a FIFO would wait for a writer); errors name the
// path.
func ReadFile(path string) (*File, error) {
	b, err := files.Read(path, MaxFile)
	if err != nil {
		return nil, err
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: not a valid safetensors file: %w", path, err)
	}
	return f, nil
}

// ReadMetadata reads a regular file's __metadata__ from its header alone,
// without reading its tensors (the header is bounded by MaxHeader); errors
// name the path.
func ReadMetadata(path string) (map[string]string, error) {
	f, err := files.Open(path, MaxFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var n uint64
	if err := binary.Read(f, binary.LittleEndian, &n); err != nil || n > MaxHeader {
		return nil, fmt.Errorf("%s: not a valid safetensors file (header length %d)", path, n)
	}
	header := make([]byte, n)
	if _, err := io.ReadFull(f, header); err != nil {
		return nil, fmt.Errorf("%s: not a valid safetensors file: %w", path, err)
	}
	var h struct {
		Metadata map[string]string `json:"__metadata__"`
	}
	if err := json.Unmarshal(header, &h); err != nil {
		return nil, fmt.Errorf("%s: not a valid safetensors file: header is not a JSON object: %v", path, err)
	}
	return h.Metadata, nil
}

// WriteTo encodes f: tensors in name order, header padded with spaces to a
// multiple of 8 bytes so the data is aligned.
func (f *File) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(f.Tensors))
	for name := range f.Tensors {
		if name == "__metadata__" {
			return 0, errors.New(`"__metadata__" is reserved`)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	header := map[string]any{}
	if len(f.Metadata) > 0 {
		header["__metadata__"] = f.Metadata
	}
	var off int64
	for _, name := range names {
		t := f.Tensors[name]
		if t.DType.Size() == 0 {
			return 0, fmt.Errorf("tensor %q: unknown dtype %q", name, t.DType)
		}
		if int64(len(t.Data)) != t.Numel()*int64(t.DType.Size()) {
			return 0, fmt.Errorf("tensor %q: %d bytes for %s of shape %v", name, len(t.Data), t.DType, t.Shape)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int64{}
		}
		header[name] = entry{t.DType, shape, [2]int64{off, off + int64(len(t.Data))}}
		off += int64(len(t.Data))
	}
	h, err := json.Marshal(header)
	if err != nil {
		return 0, err
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(h)))
	bw := &countWriter{w: w}
	bw.Write(n[:])
	bw.Write(h)
	for _, name := range names {
		bw.Write(f.Tensors[name].Data)
	}
	return bw.n, bw.err
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// WriteFile writes f to path atomically (internal/atomic).
func WriteFile(path string, f *File) error {
	return atomic.Write(path, func(w io.Writer) error {
		_, err := f.WriteTo(w)
		return err
	})
}
