package sample

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"slices"

	"kakusan/internal/atomic"
	"kakusan/internal/files"
	"kakusan/torch"
)

// Images is a batch of images on the host, C×H×W each (channels first, as
// PyTorch lays them out), values in [0, 1].
type Images struct {
	N, C, H, W int
	Pix        []float32
}

// FromTensor copies images shaped (N, C, H, W) with 1 or 3 channels to the
// host, clamped to [0, 1].
func FromTensor(t *torch.Tensor) (*Images, error) {
	s := t.Shape()
	if len(s) != 4 || (s[1] != 1 && s[1] != 3) {
		return nil, fmt.Errorf("shape %v is not a batch of greyscale or RGB images (N, C, H, W)", s)
	}
	pix := torch.Values[float32](t.Detach().Clamp(0, 1).To(torch.Float32).To(torch.CPU))
	return &Images{N: int(s[0]), C: int(s[1]), H: int(s[2]), W: int(s[3]), Pix: pix}, nil
}

// Check refuses images with NaN or infinite values (weights that overflow
// make them), which would be written as black PNGs, and a batch whose every
// pixel is one value (exploded weights saturate the output to black or
// white; no working model draws that).
func (im *Images) Check() error {
	for i, v := range im.Pix {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("image %d of the batch has non-finite values: the model's output overflows (its weights are too large or not finite)", i/(im.C*im.H*im.W))
		}
	}
	if len(im.Pix) > 0 && !slices.ContainsFunc(im.Pix, func(v float32) bool { return v != im.Pix[0] }) {
		return fmt.Errorf("every pixel of the batch's %d images is %g: the model's output is saturated (its weights are broken, exploded or altered)", im.N, im.Pix[0])
	}
	return nil
}

// at is channel c of pixel (x, y) of image i as an 8-bit value.
func (im *Images) at(i, c, x, y int) uint8 {
	return uint8(math.Round(float64(im.Pix[((i*im.C+c)*im.H+y)*im.W+x]) * 255))
}

// Image is image i as an 8-bit image: *image.Gray for one channel,
// *image.NRGBA (opaque) for three.
func (im *Images) Image(i int) image.Image {
	r := image.Rect(0, 0, im.W, im.H)
	if im.C == 1 {
		g := image.NewGray(r)
		for j, v := range im.Pix[i*im.H*im.W : (i+1)*im.H*im.W] {
			g.Pix[j] = uint8(math.Round(float64(v) * 255))
		}
		return g
	}
	rgb := image.NewNRGBA(r)
	for y := range im.H {
		for x := range im.W {
			rgb.SetNRGBA(x, y, color.NRGBA{im.at(i, 0, x, y), im.at(i, 1, x, y), im.at(i, 2, x, y), 255})
		}
	}
	return rgb
}

// Grid lays the images out cols to a row on a grey background with a
// 2-pixel border, each pixel drawn scale×scale.
func (im *Images) Grid(cols, scale int) image.Image {
	scale, cols = max(scale, 1), max(cols, 1)
	rows := (im.N + cols - 1) / cols
	const pad = 2
	w, h := im.W*scale, im.H*scale
	r := image.Rect(0, 0, cols*(w+pad)+pad, rows*(h+pad)+pad)
	var dst interface {
		image.Image
		Set(x, y int, c color.Color)
	}
	if im.C == 1 {
		g := image.NewGray(r)
		for i := range g.Pix {
			g.Pix[i] = 128
		}
		dst = g
	} else {
		g := image.NewNRGBA(r)
		for i := range g.Pix {
			g.Pix[i] = 128
			if i%4 == 3 {
				g.Pix[i] = 255
			}
		}
		dst = g
	}
	for i := range im.N {
		row, col := i/cols, i%cols
		src := im.Image(i)
		for y := range h {
			for x := range w {
				dst.Set(pad+col*(w+pad)+x, pad+row*(h+pad)+y, src.At(x/scale, y/scale))
			}
		}
	}
	return dst
}

// SavePNG writes img to path atomically, as EncodePNG encodes it.
func SavePNG(path string, img image.Image) error {
	b, err := EncodePNG(img)
	if err != nil {
		return err
	}
	return atomic.WriteFile(path, b)
}

// EncodePNG is img as a PNG file: what a sampling job writes, byte for
// byte, and a server answers.
func EncodePNG(img image.Image) ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxPNG bounds a PNG a job reads back (a sample, not a photograph).
const maxPNG = 64 << 20

// ReadPNG reads a C×H×W image as a sampling job writes it (8-bit grey for
// one channel, RGB or RGBA for three) into pix, values in [0, 1]; any
// other image is an error naming the file.
func ReadPNG(path string, c, h, w int, pix []float32) error {
	b, err := files.Read(path, maxPNG)
	if err != nil {
		return err
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if cfg.Width != w || cfg.Height != h {
		return fmt.Errorf("%s: a %dx%d image; want %dx%d", path, cfg.Width, cfg.Height, w, h)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if g, ok := img.(*image.Gray); ok != (c == 1) {
		return fmt.Errorf("%s: a %T; want %s", path, img, map[bool]string{true: "an 8-bit greyscale image", false: "an RGB image"}[c == 1])
	} else if ok {
		for i, v := range g.Pix {
			pix[i] = float32(v) / 255
		}
		return nil
	}
	for y := range h {
		for x := range w {
			r, g, b, _ := img.At(x, y).RGBA()
			for ch, v := range []uint32{r, g, b} {
				pix[(ch*h+y)*w+x] = float32(v>>8) / 255
			}
		}
	}
	return nil
}

// DefaultBatch is how many images a sampling job generates per forward pass
// when not told: 500 on a GPU; 100 on the CPU, where larger activations
// spend more time in the kernel zeroing fresh pages than in arithmetic
// (docs/sampling.md has the figures).
func DefaultBatch(dev torch.Device) int {
	if dev.Type == torch.CUDADevice {
		return 500
	}
	return 100
}
