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
// The header's dimensions are checked against the folders' limits, and
// against maxPixels when it is positive, before anything is decoded; r
// should be bounded by the caller (a request body). It returns the image's
// own width and height too.
func DecodeImage(r io.Reader, name string, c, size int, bg color.RGBA, maxPixels int) (px []float32, w, h int, err error) {
	if c != 1 && c != 3 || size < 1 || size > maxSide {
		return nil, 0, 0, fmt.Errorf("%s: cannot make %d channels of %dx%d", name, c, size, size)
	}
	br := bufio.NewReader(r)
	head, read, err := readHeader(name, br)
	if err != nil {
		return nil, 0, 0, err
	}
	if maxPixels > 0 && head.w*head.h > maxPixels {
		return nil, 0, 0, fmt.Errorf("%s: %dx%d pixels, over the limit of %d", name, head.w, head.h, maxPixels)
	}
	px, err = decodeInput(head, io.MultiReader(bytes.NewReader(read), br), name, c, size, bg)
	return px, head.w, head.h, err
}

// decodeInput decodes an image whose header h was read and resizes it.
func decodeInput(h imageHeader, r io.Reader, name string, c, size int, bg color.RGBA) ([]float32, error) {
	img, err := h.decode(r)
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
