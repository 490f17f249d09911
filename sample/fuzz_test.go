package sample

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadPNG feeds the PNG reader arbitrary files: it may refuse them,
// never panic, and what it accepts is in [0, 1].
func FuzzReadPNG(f *testing.F) {
	for _, img := range []image.Image{image.NewGray(image.Rect(0, 0, 8, 8)), image.NewNRGBA(image.Rect(0, 0, 8, 8)), image.NewPaletted(image.Rect(0, 0, 8, 8), color.Palette{color.White})} {
		var buf bytes.Buffer
		png.Encode(&buf, img)
		f.Add(buf.Bytes())
	}
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "x.png")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, c := range []int{1, 3} {
			pix := make([]float32, c*8*8)
			if err := ReadPNG(p, c, 8, 8, pix); err == nil {
				for _, v := range pix {
					if !(v >= 0 && v <= 1) {
						t.Fatalf("value %v outside [0, 1]", v)
					}
				}
			}
		}
	})
}
