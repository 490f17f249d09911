package datasets

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"kakusan/internal/files"
)

// IDX is an unsigned-byte array from an IDX file, the format of MNIST and
// Fashion-MNIST: a magic number (0, 0, type, number of dimensions), the
// dimensions as big-endian uint32, then the data.
type IDX struct {
	Dims []int
	Data []uint8
}

// maxIDX bounds what an IDX header may ask for (1 GiB), so a corrupt header
// cannot make the reader allocate without limit.
const maxIDX = 1 << 30

// ParseIDX decodes an IDX file (gzipped or not) held in memory.
func ParseIDX(b []byte) (*IDX, error) {
	if len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("bad gzip stream: %v", err)
		}
		raw, err := io.ReadAll(io.LimitReader(zr, maxIDX+1<<20))
		if err != nil {
			return nil, fmt.Errorf("bad gzip stream: %v", err)
		}
		b = raw
	}
	if len(b) < 4 {
		return nil, errors.New("too short for an IDX header")
	}
	if b[0] != 0 || b[1] != 0 {
		return nil, fmt.Errorf("bad magic number %02x%02x%02x%02x (not an IDX file)", b[0], b[1], b[2], b[3])
	}
	if b[2] != 0x08 {
		return nil, fmt.Errorf("element type 0x%02x is not unsigned byte (0x08)", b[2])
	}
	nd := int(b[3])
	if nd == 0 || nd > 4 {
		return nil, fmt.Errorf("%d dimensions (want 1 to 4)", nd)
	}
	if len(b) < 4+4*nd {
		return nil, errors.New("truncated header")
	}
	x := &IDX{Dims: make([]int, nd)}
	size := 1
	for i := range nd {
		d := int(binary.BigEndian.Uint32(b[4+4*i:]))
		if d == 0 {
			return nil, fmt.Errorf("dimension %d is 0: the file holds no data", i)
		}
		if d > maxIDX || size > maxIDX/d {
			return nil, fmt.Errorf("dimension %d is %d: the array would exceed %d bytes", i, d, maxIDX)
		}
		x.Dims[i] = d
		size *= d
	}
	data := b[4+4*nd:]
	if len(data) < size {
		return nil, fmt.Errorf("truncated: %d data bytes, the header promises %d", len(data), size)
	}
	if len(data) > size {
		return nil, fmt.Errorf("%d bytes beyond the %d the header promises", len(data)-size, size)
	}
	x.Data = data
	return x, nil
}

// ReadIDX reads an IDX file; errors name it.
func ReadIDX(path string) (*IDX, error) {
	b, err := files.Read(path, maxIDX+1<<20)
	if err != nil {
		return nil, err
	}
	x, err := ParseIDX(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return x, nil
}
