// Package datasetstest writes synthetic datasets for the tests of the
// packages that read them.
package datasetstest

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"kakusan/datasets"
)

// WriteFolder writes a small synthetic image folder into dir, for tests
// of code that trains on image folders (datasets.LoadFolder, datasets.Load): classes class
// folders named class0, class1, ... (zero-padded so that they sort in label
// order), each holding perClass side×side PNG images 0000.png, 0001.png, ...
// An image of class k is a dark, faintly noisy background with a bright
// disc of radius side/6 centred side/4 from the middle at angle
// 2πk/classes, coloured with hue k/classes when rgb; each image moves the
// disc by up to side/16 pixels each way and varies its brightness by up to
// 20%, so a tiny model can learn the classes apart but not by rote. rgb
// false writes 8-bit grey PNGs (loaded with C = 1), true RGB ones (C = 3).
// The files depend only on the arguments. LoadFolder's test split is every
// 10th image of a class, so perClass >= 10 gives every class test images.
// Bounds of what WriteFolder writes: the labels a folder can number, and
// images enough for any test.
const (
	maxClasses = 256
	maxImages  = 100_000
)

func WriteFolder(dir string, classes, perClass, side int, rgb bool) error {
	switch {
	case classes < 1 || classes > maxClasses:
		return fmt.Errorf("WriteFolder: %d classes (want 1 to %d)", classes, maxClasses)
	case perClass < 1 || classes*perClass > maxImages:
		return fmt.Errorf("WriteFolder: %d images per class (want 1 to %d in all)", perClass, maxImages)
	case side < datasets.MinFolderSize || side > datasets.MaxFolderSize:
		return fmt.Errorf("WriteFolder: side %d (want %d to %d)", side, datasets.MinFolderSize, datasets.MaxFolderSize)
	}
	digits := len(fmt.Sprint(classes - 1))
	for k := range classes {
		cdir := filepath.Join(dir, fmt.Sprintf("class%0*d", digits, k))
		if err := os.MkdirAll(cdir, 0o755); err != nil {
			return err
		}
		angle := 2 * math.Pi * float64(k) / float64(classes)
		hue := [3]float64{1, 1, 1}
		if rgb {
			hue = hueRGB(float64(k) / float64(classes))
		}
		s := float64(side)
		for i := range perClass {
			rng := rand.New(rand.NewPCG(uint64(k)+1, uint64(i)+1))
			jitter := func() float64 { return (rng.Float64()*2 - 1) * s / 16 }
			cx := s/2 + s/4*math.Cos(angle) + jitter()
			cy := s/2 + s/4*math.Sin(angle) + jitter()
			bright := 0.8 + 0.2*rng.Float64()
			radius := max(s/6, 1.5)
			var grey *image.Gray
			var col *image.RGBA
			var img image.Image
			if rgb {
				col = image.NewRGBA(image.Rect(0, 0, side, side))
				img = col
			} else {
				grey = image.NewGray(image.Rect(0, 0, side, side))
				img = grey
			}
			for y := range side {
				for x := range side {
					// Coverage of the disc, with a one-pixel soft edge.
					d := math.Hypot(float64(x)+0.5-cx, float64(y)+0.5-cy)
					cover := min(max(radius+0.5-d, 0), 1)
					bg := 16 + 16*rng.Float64()
					var px [3]uint8
					for ch := range 3 {
						px[ch] = uint8(math.Round(bg*(1-cover) + 255*bright*hue[ch]*cover))
					}
					if rgb {
						col.SetRGBA(x, y, color.RGBA{px[0], px[1], px[2], 255})
					} else {
						grey.Pix[y*side+x] = px[0]
					}
				}
			}
			var buf bytes.Buffer
			if err := png.Encode(&buf, img); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(cdir, fmt.Sprintf("%04d.png", i)), buf.Bytes(), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// hueRGB is the fully saturated colour of hue h in [0, 1).
func hueRGB(h float64) [3]float64 {
	var c [3]float64
	for ch, off := range []float64{0, 2.0 / 3, 1.0 / 3} {
		// Distance around the colour wheel from this channel's primary.
		d := math.Abs(math.Mod(h+off+1, 1)*6 - 3) // 0 at the opposite hue, 3 at the primary
		c[ch] = min(max(d-1, 0), 1)
	}
	return c
}
