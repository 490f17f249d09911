package datasets

import (
	"bufio"
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
func ParseIDX(b []byte) (*IDX, error) { return readIDX(bytes.NewReader(b)) }

// ReadIDX reads an IDX file, gzipped or not; errors name it. The file is
// streamed: a gzipped file is decompressed only as far as its header
// promises (see readIDX), so a small file that would expand to gigabytes
// (a gzip bomb) is refused after reading that much.
func ReadIDX(path string) (*IDX, error) {
	f, err := files.Open(path, maxIDX+1<<20) // a regular file of bounded size
	if err != nil {
		return nil, err
	}
	defer f.Close()
	x, err := readIDX(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return x, nil
}

// readIDX decodes an IDX stream, gzipped or not: the header first, then
// the data through a reader limited to the size the header's dimensions
// promise (at most maxIDX) and one byte more, which tells a file holding
// more than its header says (a gzip bomb's gigabytes of zeros after a
// small header) without reading the rest. Memory grows with the data that
// arrives, not with what the header claims.
func readIDX(r io.Reader) (*IDX, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("bad gzip stream: %v", err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	gzipErr := func(err error) error {
		if _, ok := r.(*gzip.Reader); ok {
			return fmt.Errorf("bad gzip stream: %v", err)
		}
		return err
	}
	head := make([]byte, 4, 4+4*4)
	if n, err := io.ReadFull(r, head); err != nil {
		if n < 4 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
			return nil, errors.New("too short for an IDX header")
		}
		return nil, gzipErr(err)
	}
	if head[0] != 0 || head[1] != 0 {
		return nil, fmt.Errorf("bad magic number %02x%02x%02x%02x (not an IDX file)", head[0], head[1], head[2], head[3])
	}
	if head[2] != 0x08 {
		return nil, fmt.Errorf("element type 0x%02x is not unsigned byte (0x08)", head[2])
	}
	nd := int(head[3])
	if nd == 0 || nd > 4 {
		return nil, fmt.Errorf("%d dimensions (want 1 to 4)", nd)
	}
	dims := head[4 : 4+4*nd]
	if _, err := io.ReadFull(r, dims); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, errors.New("truncated header")
		}
		return nil, gzipErr(err)
	}
	x := &IDX{Dims: make([]int, nd)}
	size := 1
	for i := range nd {
		d := int(binary.BigEndian.Uint32(dims[4*i:]))
		if d == 0 {
			return nil, fmt.Errorf("dimension %d is 0: the file holds no data", i)
		}
		if d > maxIDX || size > maxIDX/d {
			return nil, fmt.Errorf("dimension %d is %d: the array would exceed %d bytes", i, d, maxIDX)
		}
		x.Dims[i] = d
		size *= d
	}
	// Read the promised size and one byte more: that byte, if it comes,
	// is data the header does not account for.
	var buf bytes.Buffer
	buf.Grow(min(size+1, 64<<20)) // grows further only as data arrives
	if _, err := buf.ReadFrom(io.LimitReader(r, int64(size)+1)); err != nil {
		return nil, gzipErr(err)
	}
	data := buf.Bytes()
	if len(data) < size {
		return nil, fmt.Errorf("truncated: %d data bytes, the header promises %d", len(data), size)
	}
	if len(data) > size {
		return nil, fmt.Errorf("data beyond the %d bytes the header promises (refused without reading further: a corrupt file, or a gzip bomb)", size)
	}
	x.Data = data
	return x, nil
}
