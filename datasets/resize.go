package datasets

import (
	"image"
	"image/color"
	"math"
)

// resizeCrop writes img, resized so that its shorter side is size and
// centre-cropped to size×size, into dst as c planes of size×size (CHW).
// The geometry is torchvision's Resize(size) then CenterCrop(size): the
// long side resizes to floor(size*long/short) and the crop starts
// round-half-even((resized-size)/2) pixels in. Only the output pixels
// inside the crop are computed, each from the source pixels under its
// filter (see resampleTaps); the vertical pass runs first, in float32.
func resizeCrop(img image.Image, c, size int, bg color.RGBA, dst []uint8) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	rw, rh := size, size
	if w < h {
		rh = size * h / w
	} else if h < w {
		rw = size * w / h
	}
	tx := resampleTaps(w, rw, cropStart(rw, size), size)
	ty := resampleTaps(h, rh, cropStart(rh, size), size)
	x0, x1 := tapWindow(tx)
	y0, y1 := tapWindow(ty)
	ww, wh := x1-x0, y1-y0
	src := toPlanes(img, c, bg, image.Rect(b.Min.X+x0, b.Min.Y+y0, b.Min.X+x1, b.Min.Y+y1))
	tmp := make([]float32, c*size*ww)
	for ch := range c {
		plane := src[ch*wh*ww : (ch+1)*wh*ww]
		for oy, t := range ty {
			row := tmp[(ch*size+oy)*ww : (ch*size+oy+1)*ww]
			for k, wt := range t.w {
				s := plane[(t.lo-y0+k)*ww : (t.lo-y0+k+1)*ww]
				for x, v := range s {
					row[x] += wt * float32(v)
				}
			}
		}
	}
	for ch := range c {
		for oy := range size {
			row := tmp[(ch*size+oy)*ww : (ch*size+oy+1)*ww]
			out := dst[(ch*size+oy)*size : (ch*size+oy+1)*size]
			for ox, t := range tx {
				var v float32
				for k, wt := range t.w {
					v += wt * row[t.lo-x0+k]
				}
				out[ox] = uint8(min(max(v+0.5, 0), 255))
			}
		}
	}
}

// cropStart is where CenterCrop(size) starts on a side of n pixels:
// Python's round((n-size)/2), which rounds halves to even.
func cropStart(n, size int) int {
	d := n - size
	k := d / 2
	if d%2 == 1 && k%2 == 1 {
		k++
	}
	return k
}

// tap is the source pixels one output pixel reads, from lo on, and their
// weights (summing to 1).
type tap struct {
	lo int
	w  []float32
}

// resampleTaps gives the taps of outputs start..start+n-1 when in pixels are
// resampled to out, as PIL's bilinear resampling (which torchvision's
// Resize uses) computes them: output i is centred at (i+0.5)*in/out in the
// source, its filter is the triangle 1-|x| stretched by the shrink factor
// in/out when shrinking (so that every source pixel counts) and unstretched
// when enlarging (plain bilinear interpolation), clipped to the image and
// renormalised.
func resampleTaps(in, out, start, n int) []tap {
	scale := float64(in) / float64(out)
	fs := math.Max(scale, 1)
	taps := make([]tap, n)
	for i := range taps {
		center := (float64(start+i) + 0.5) * scale
		lo := max(int(center-fs+0.5), 0)
		hi := min(int(center+fs+0.5), in)
		ws := make([]float64, hi-lo)
		var sum float64
		for k := range ws {
			ws[k] = max(0, 1-math.Abs((float64(lo+k)+0.5-center)/fs))
			sum += ws[k]
		}
		t := tap{lo: lo, w: make([]float32, len(ws))}
		for k, v := range ws {
			t.w[k] = float32(v / sum)
		}
		taps[i] = t
	}
	return taps
}

// tapWindow is the range of source pixels a row of taps reads.
func tapWindow(taps []tap) (lo, hi int) {
	lo, hi = taps[0].lo, 0
	for _, t := range taps {
		lo, hi = min(lo, t.lo), max(hi, t.lo+len(t.w))
	}
	return lo, hi
}

// over16 composites a premultiplied 16-bit colour of alpha a on bg, to 8 bits.
func over16(rv, gv, bv, a uint32, bg color.RGBA) (uint8, uint8, uint8) {
	t := 0xffff - a
	to8 := func(v uint32, b uint8) uint8 { return uint8((min(v+uint32(b)*t/255, 0xffff)*255 + 0x7fff) / 0xffff) }
	return to8(rv, bg.R), to8(gv, bg.G), to8(bv, bg.B)
}

// over8 composites an 8-bit colour v (premultiplied by its alpha a when
// pre) on the background value b.
func over8(v, a uint32, b uint8, pre bool) uint8 {
	if pre {
		v *= 255
	} else {
		v *= a
	}
	return uint8((v + uint32(b)*(255-a) + 127) / 255)
}

// toPlanes copies the pixels of img inside r as c planes of 8-bit values:
// one grey plane (c = 1: the set is grey, and every image's red, green and
// blue are equal) or red, green and blue (c = 3). Alpha is composited on
// the opaque colour bg: a pixel of colour C and alpha A becomes
// C·A + bg·(1-A), rounded, from the premultiplied colour where the decoder
// gives it (the premultiplied colour plus bg·(1-A)).
func toPlanes(img image.Image, c int, bg color.RGBA, r image.Rectangle) []uint8 {
	w, h := r.Dx(), r.Dy()
	out := make([]uint8, c*w*h)
	set := func(x, y int, rv, gv, bv uint8) {
		i := (y-r.Min.Y)*w + (x - r.Min.X)
		out[i] = rv
		if c == 3 {
			out[w*h+i], out[2*w*h+i] = gv, bv
		}
	}
	over := func(rv, gv, bv, a uint32) (uint8, uint8, uint8) { return over16(rv, gv, bv, a, bg) }
	switch m := img.(type) {
	case *image.Gray:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				v := m.Pix[m.PixOffset(x, y)]
				set(x, y, v, v, v)
			}
		}
	case *image.Gray16:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				v := m.Pix[m.PixOffset(x, y)] // the high byte
				set(x, y, v, v, v)
			}
		}
	case *image.YCbCr:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				rv, gv, bv := color.YCbCrToRGB(m.Y[m.YOffset(x, y)], m.Cb[m.COffset(x, y)], m.Cr[m.COffset(x, y)])
				set(x, y, rv, gv, bv)
			}
		}
	case *image.RGBA:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				p := m.Pix[m.PixOffset(x, y):]
				a := uint32(p[3])
				set(x, y, over8(uint32(p[0]), a, bg.R, true), over8(uint32(p[1]), a, bg.G, true), over8(uint32(p[2]), a, bg.B, true))
			}
		}
	case *image.NRGBA:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				p := m.Pix[m.PixOffset(x, y):]
				a := uint32(p[3])
				set(x, y, over8(uint32(p[0]), a, bg.R, false), over8(uint32(p[1]), a, bg.G, false), over8(uint32(p[2]), a, bg.B, false))
			}
		}
	case *image.Paletted:
		var pal [256][3]uint8
		for i, col := range m.Palette {
			rv, gv, bv, av := col.RGBA()
			pal[i][0], pal[i][1], pal[i][2] = over(rv, gv, bv, av)
		}
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				p := pal[m.Pix[m.PixOffset(x, y)]]
				set(x, y, p[0], p[1], p[2])
			}
		}
	default:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				rv, gv, bv, av := img.At(x, y).RGBA()
				r8, g8, b8 := over(rv, gv, bv, av)
				set(x, y, r8, g8, b8)
			}
		}
	}
	return out
}
