package datasets

import (
	"bufio"
	"bytes"
	"fmt"
	"image/color"
	"io"
)

// DecodeImage reads one PNG or JPEG image from r (name is its name in
// errors) as a model's input: c planes of size×size (CHW) in [0, 1],
// resized and centre-cropped as an image folder's images are (Resize then
// CenterCrop), transparency composited on bg. A colour image for a grey
// model (c = 1) becomes its luma (ITU-R BT.601, as PIL's convert("L")).
// The header's dimensions are checked against the folders' limits before
// anything is decoded; r should be bounded by the caller (a request body).
func DecodeImage(r io.Reader, name string, c, size int, bg color.RGBA) ([]float32, error) {
	if c != 1 && c != 3 || size < 1 || size > maxSide {
		return nil, fmt.Errorf("%s: cannot make %d channels of %dx%d", name, c, size, size)
	}
	br := bufio.NewReader(r)
	h, read, err := readHeader(name, br)
	if err != nil {
		return nil, err
	}
	img, err := h.decode(io.MultiReader(bytes.NewReader(read), br))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if b := img.Bounds(); b.Dx() != h.w || b.Dy() != h.h {
		return nil, fmt.Errorf("%s: decoded %dx%d, the header says %dx%d", name, b.Dx(), b.Dy(), h.w, h.h)
	}
	planes := c
	if c == 1 && !h.grey {
		planes = 3
	}
	px := make([]uint8, planes*size*size)
	resizeCrop(img, planes, size, bg, px)
	out := make([]float32, c*size*size)
	n := size * size
	for i := range out {
		if planes == 3 && c == 1 {
			out[i] = (0.299*float32(px[i]) + 0.587*float32(px[n+i]) + 0.114*float32(px[2*n+i])) / 255
		} else {
			out[i] = float32(px[i]) / 255
		}
	}
	return out, nil
}
