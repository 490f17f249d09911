package datasets

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// writeImage encodes img as PNG, or as JPEG (quality 100) when the name
// ends in .jpg or .jpeg of any case, creating the folders on the way.
func writeImage(t *testing.T, path string, img image.Image) {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jpg", ".jpeg":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 100})
	default:
		err = png.Encode(&buf, img)
	}
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, buf.Bytes())
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// paint makes a w×h RGBA image coloured by f.
func paint(w, h int, f func(x, y int) color.RGBA) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			m.SetRGBA(x, y, f(x, y))
		}
	}
	return m
}

func uniform(w, h int, c color.RGBA) *image.RGBA {
	return paint(w, h, func(int, int) color.RGBA { return c })
}

func greyImage(w, h int, v uint8) *image.Gray {
	m := image.NewGray(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = v
	}
	return m
}

// pngChunk and pngFile craft PNG files byte by byte, for headers the
// encoder would never write.
func pngChunk(typ string, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	b = append(append(b, typ...), data...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(append([]byte(typ), data...)))
}

func pngIHDR(w, h uint32, depth, colorType byte) []byte {
	d := binary.BigEndian.AppendUint32(nil, w)
	d = binary.BigEndian.AppendUint32(d, h)
	return pngChunk("IHDR", append(d, depth, colorType, 0, 0, 0))
}

func pngFile(chunks ...[]byte) []byte {
	b := append([]byte(nil), pngMagic...)
	for _, c := range chunks {
		b = append(b, c...)
	}
	return append(b, pngChunk("IEND", nil)...)
}

func pngIDAT(raw []byte) []byte {
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write(raw)
	w.Close()
	return pngChunk("IDAT", z.Bytes())
}

// greyAlphaPNG is a w×h grey-with-alpha PNG (colour type 4), every pixel
// (y, a): Go's encoder never writes this type, which decodes to NRGBA.
func greyAlphaPNG(w, h int, y, a byte) []byte {
	var raw []byte
	for range h {
		raw = append(raw, 0)
		for range w {
			raw = append(raw, y, a)
		}
	}
	return pngFile(pngIHDR(uint32(w), uint32(h), 8, 4), pngIDAT(raw))
}

// at is pixel (c, y, x) of image i, read by the CHW formula.
func at(s *Images, i, c, y, x int) uint8 { return s.Pixels[((i*s.C+c)*s.H+y)*s.W+x] }

func near(a uint8, b, tol int) bool { return int(a) >= b-tol && int(a) <= b+tol }

// A colour folder of four classes, PNG and JPEG, of several sizes: the
// resize and crop give the pixel values worked out by hand, in CHW.
func TestFolderRGB(t *testing.T) {
	dir := t.TempDir()
	red, blue := color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}
	// cat: 32x16, red left half, blue right half; a uniform 20x24 JPEG.
	writeImage(t, filepath.Join(dir, "cat", "a.png"), paint(32, 16, func(x, _ int) color.RGBA {
		if x < 16 {
			return red
		}
		return blue
	}))
	writeImage(t, filepath.Join(dir, "cat", "b.jpg"), uniform(20, 24, color.RGBA{200, 40, 40, 255}))
	// dog: 20x24, green top half, black bottom half; a uniform 32x16 JPEG.
	writeImage(t, filepath.Join(dir, "dog", "a.png"), paint(20, 24, func(_, y int) color.RGBA {
		if y < 12 {
			return color.RGBA{0, 255, 0, 255}
		}
		return color.RGBA{0, 0, 0, 255}
	}))
	writeImage(t, filepath.Join(dir, "dog", "b.JPEG"), uniform(32, 16, color.RGBA{30, 60, 220, 255}))
	// emu: a grey PNG (replicated to three channels) and a half-transparent
	// red one (composited on black).
	writeImage(t, filepath.Join(dir, "emu", "a.png"), greyImage(16, 16, 100))
	nrgba := image.NewNRGBA(image.Rect(0, 0, 16, 16))
	for i := 0; i < len(nrgba.Pix); i += 4 {
		copy(nrgba.Pix[i:], []byte{255, 0, 0, 128})
	}
	writeImage(t, filepath.Join(dir, "emu", "b.png"), nrgba)
	// fox: a 4x4 image enlarged, and a paletted colour image.
	writeImage(t, filepath.Join(dir, "fox", "a.png"), uniform(4, 4, color.RGBA{10, 20, 30, 255}))
	pal := image.NewPaletted(image.Rect(0, 0, 8, 8), color.Palette{color.RGBA{0, 0, 0, 255}, color.RGBA{250, 200, 0, 255}})
	for i := range pal.Pix {
		pal.Pix[i] = 1
	}
	writeImage(t, filepath.Join(dir, "fox", "b.png"), pal)
	// Everything else is ignored: other files, hidden files and folders.
	writeFile(t, filepath.Join(dir, "fox", "notes.txt"), []byte("not an image"))
	writeFile(t, filepath.Join(dir, "fox", ".hidden.png"), []byte("garbage"))
	writeFile(t, filepath.Join(dir, ".cache", "x.png"), []byte("garbage"))
	writeFile(t, filepath.Join(dir, "README.txt"), []byte("a folder"))

	s, err := Load("mnist", dir, "train", Options{Size: 8})
	if err != nil {
		t.Fatal(err)
	}
	if s.N != 8 || s.C != 3 || s.H != 8 || s.W != 8 || s.Classes != 4 || len(s.Pixels) != 8*3*64 {
		t.Fatalf("%d images %dx%dx%d, %d classes, %d bytes", s.N, s.C, s.H, s.W, s.Classes, len(s.Pixels))
	}
	if !reflect.DeepEqual(s.ClassNames, []string{"cat", "dog", "emu", "fox"}) || !reflect.DeepEqual(s.Labels, []uint8{0, 0, 1, 1, 2, 2, 3, 3}) {
		t.Errorf("classes %q, labels %v", s.ClassNames, s.Labels)
	}
	// cat/a.png: 32x16 -> 16x8, crop columns 4-11, i.e. source columns 8-23;
	// the shrink-by-2 triangle spans 4 source columns, so the two columns
	// at the edge are 7/8 and 1/8 red.
	wantR := []int{255, 255, 255, 223, 32, 0, 0, 0}
	for y := range 8 {
		for x := range 8 {
			r, g, b := at(s, 0, 0, y, x), at(s, 0, 1, y, x), at(s, 0, 2, y, x)
			if !near(r, wantR[x], 1) || g != 0 || !near(b, 255-wantR[x], 1) {
				t.Fatalf("cat/a.png (%d,%d) = %d %d %d, want %d 0 %d", x, y, r, g, b, wantR[x], 255-wantR[x])
			}
		}
	}
	// dog/a.png: 20x24 -> 8x9, crop rows 0-7; source row = (y+0.5)*8/3, the
	// triangle 8/3 rows wide each way: rows 0-3 see only green, row 4 is
	// centred on the edge, rows 5-7 see only black.
	wantG := []int{255, 255, 255, 255, 128, 0, 0, 0}
	for y := range 8 {
		for x := range 8 {
			if g := at(s, 2, 1, y, x); !near(g, wantG[y], 1) || at(s, 2, 0, y, x) != 0 || at(s, 2, 2, y, x) != 0 {
				t.Fatalf("dog/a.png (%d,%d): green %d, want %d", x, y, g, wantG[y])
			}
		}
	}
	for i, want := range map[int][3]int{1: {200, 40, 40}, 3: {30, 60, 220}, 4: {100, 100, 100}, 5: {128, 0, 0}, 6: {10, 20, 30}, 7: {250, 200, 0}} {
		tol := 0
		if i == 1 || i == 3 {
			tol = 4 // JPEG
		}
		for c := range 3 {
			for y := range 8 {
				for x := range 8 {
					if v := at(s, i, c, y, x); !near(v, want[c], tol) {
						t.Fatalf("image %d (%s) channel %d (%d,%d) = %d, want %d", i, s.ClassNames[s.Labels[i]], c, x, y, v, want[c])
					}
				}
			}
		}
	}
	// Image(i) is the same CHW block.
	if img := s.Image(0); len(img) != 3*64 || img[3] != 223 || img[2*64+4] != at(s, 0, 2, 0, 4) {
		t.Errorf("Image(0): %d bytes", len(img))
	}
	// Loading is deterministic, however the work is spread.
	again, err := LoadFolder(dir, "train", Options{Size: 8})
	if err != nil || !bytes.Equal(again.Pixels, s.Pixels) {
		t.Errorf("a second load differs (%v)", err)
	}
	// Fewer than 10 images a class: the test split is empty, an error.
	if _, err := Load("", dir, "test", Options{Size: 8}); err == nil || !strings.Contains(err.Error(), "no test images") {
		t.Errorf("empty test split: %v", err)
	}
}

// The geometry of Resize+CenterCrop, checked where the resampling is the
// identity (the short side already at size): the crop offset rounds half
// to even as Python's round does.
func TestResizeCropGeometry(t *testing.T) {
	marked := func(w, h, row, col int) *image.Gray {
		m := greyImage(w, h, 0)
		for y := range h {
			for x := range w {
				if y == row || x == col {
					m.Pix[y*w+x] = 255
				}
			}
		}
		return m
	}
	for _, c := range []struct {
		w, h, row, col int // the marked row or column of the source
		outRow, outCol int // where it must land (-1: none)
	}{
		{10, 13, 2, -1, 0, -1}, // (13-10)/2 = 1.5 rounds to 2
		{10, 11, 0, -1, 0, -1}, // 0.5 rounds to 0
		{10, 15, 3, -1, 1, -1}, // 2.5 rounds to 2: source row 3 is output row 1
		{13, 10, -1, 2, -1, 0}, // the same across
		{10, 10, 9, 0, 9, 0},
	} {
		out := make([]uint8, 100)
		resizeCrop(marked(c.w, c.h, c.row, c.col), 1, 10, color.RGBA{}, out)
		for y := range 10 {
			for x := range 10 {
				want := uint8(0)
				if y == c.outRow || x == c.outCol {
					want = 255
				}
				if out[y*10+x] != want {
					t.Fatalf("%dx%d marked at row %d col %d: output (%d,%d) = %d, want %d", c.w, c.h, c.row, c.col, x, y, out[y*10+x], want)
				}
			}
		}
	}
	// Enlarging is bilinear interpolation between pixel centres, clamped at
	// the edges as PIL's is: columns 0 and 200 become 0, 50, 150, 200.
	m := image.NewGray(image.Rect(0, 0, 2, 2))
	copy(m.Pix, []uint8{0, 200, 0, 200})
	out := make([]uint8, 16)
	resizeCrop(m, 1, 4, color.RGBA{}, out)
	if want := []uint8{0, 50, 150, 200}; !bytes.Equal(out[:4], want) || !bytes.Equal(out[12:], want) {
		t.Errorf("2x2 enlarged to 4x4: %v, want rows %v", out, want)
	}
}

// Grey images of every grey kind make a one-channel set; one colour image
// makes the whole set RGB, the grey ones replicated.
func TestFolderGrey(t *testing.T) {
	dir := t.TempDir()
	writeImage(t, filepath.Join(dir, "a", "gray.png"), greyImage(12, 12, 77))
	g16 := image.NewGray16(image.Rect(0, 0, 12, 12))
	for i := range 144 {
		g16.SetGray16(i%12, i/12, color.Gray16{Y: 200 << 8})
	}
	writeImage(t, filepath.Join(dir, "a", "gray16.png"), g16)
	pal := image.NewPaletted(image.Rect(0, 0, 12, 12), color.Palette{color.Gray{0}, color.Gray{90}})
	for i := range pal.Pix {
		pal.Pix[i] = 1
	}
	writeImage(t, filepath.Join(dir, "b", "paletted.png"), pal)
	writeImage(t, filepath.Join(dir, "b", "photo.jpg"), greyImage(12, 12, 150))
	writeFile(t, filepath.Join(dir, "b", "alpha.png"), greyAlphaPNG(12, 12, 200, 128))
	s, err := LoadFolder(dir, "train", Options{Size: 6})
	if err != nil {
		t.Fatal(err)
	}
	if s.C != 1 || s.N != 5 || len(s.Pixels) != 5*36 {
		t.Fatalf("C = %d, N = %d, %d bytes: a grey folder must give one channel", s.C, s.N, len(s.Pixels))
	}
	// Order: a/gray.png, a/gray16.png, b/alpha.png, b/paletted.png, b/photo.jpg.
	for i, want := range []int{77, 200, 100, 90, 150} {
		tol := 0
		if i == 4 {
			tol = 2
		}
		for _, v := range s.Image(i) {
			if !near(v, want, tol) {
				t.Fatalf("image %d: %d, want %d", i, v, want)
			}
		}
	}
	writeImage(t, filepath.Join(dir, "b", "zcolour.png"), uniform(12, 12, color.RGBA{1, 2, 3, 255}))
	s, err = LoadFolder(dir, "train", Options{Size: 6})
	if err != nil {
		t.Fatal(err)
	}
	if s.C != 3 || s.N != 6 {
		t.Fatalf("C = %d with a colour image", s.C)
	}
	for c := range 3 {
		if at(s, 0, c, 3, 3) != 77 || at(s, 2, c, 0, 5) != 100 {
			t.Errorf("channel %d of the grey images: %d, %d", c, at(s, 0, c, 3, 3), at(s, 2, c, 0, 5))
		}
	}
	if at(s, 5, 0, 1, 1) != 1 || at(s, 5, 1, 1, 1) != 2 || at(s, 5, 2, 1, 1) != 3 {
		t.Error("colour image channels")
	}
}

// Without train/ and test/, the test split is the files at indices 9, 19,
// ... of each class in name order (names sort as strings: "10" < "2").
func TestFolderSplitEveryTenth(t *testing.T) {
	dir := t.TempDir()
	for class, n := range map[string]int{"a": 23, "b": 12} {
		for i := range n {
			writeImage(t, filepath.Join(dir, class, fmt.Sprintf("%d.png", i)), greyImage(4, 4, uint8(i)))
		}
	}
	test, err := LoadFolder(dir, "test", Options{Size: 4})
	if err != nil {
		t.Fatal(err)
	}
	train, err := LoadFolder(dir, "train", Options{Size: 4})
	if err != nil {
		t.Fatal(err)
	}
	// a sorted: 0 1 10 11 12 13 14 15 16 [17] 18 19 2 20 21 22 3 4 5 [6] 7 8 9
	// b sorted: 0 1 10 11 2 3 4 5 6 [7] 8 9
	var got []uint8
	for i := range test.N {
		got = append(got, test.Image(i)[0])
	}
	if !bytes.Equal(got, []uint8{17, 6, 7}) || !bytes.Equal(test.Labels, []uint8{0, 0, 1}) {
		t.Errorf("test split: values %v labels %v, want [17 6 7] [0 0 1]", got, test.Labels)
	}
	if train.N != 21+11 || train.Classes != 2 || test.Classes != 2 {
		t.Fatalf("train split: %d images", train.N)
	}
	seen := map[[2]uint8]bool{}
	for i := range train.N {
		k := [2]uint8{train.Labels[i], train.Image(i)[0]}
		if seen[k] || k == [2]uint8{0, 17} || k == [2]uint8{0, 6} || k == [2]uint8{1, 7} {
			t.Errorf("train image %v repeated or from the test split", k)
		}
		seen[k] = true
	}
}

// train/ and test/ sub-folders are the splits, and must agree on classes.
func TestFolderTrainTestFolders(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"train/x/1.png", "train/x/2.png", "train/y/1.png", "test/x/1.png", "test/y/9.png"} {
		writeImage(t, filepath.Join(dir, f), greyImage(5, 5, 9))
	}
	for split, n := range map[string]int{"train": 3, "test": 2} {
		s, err := Load("", dir, split, Options{Size: 5})
		if err != nil {
			t.Fatal(err)
		}
		if s.N != n || !reflect.DeepEqual(s.ClassNames, []string{"x", "y"}) {
			t.Errorf("%s: %d images, classes %q", split, s.N, s.ClassNames)
		}
	}
	os.Rename(filepath.Join(dir, "test", "y"), filepath.Join(dir, "test", "z"))
	for _, split := range []string{"train", "test"} {
		_, err := Load("", dir, split, Options{Size: 5})
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "train")) || !strings.Contains(err.Error(), filepath.Join(dir, "test")) ||
			!strings.Contains(err.Error(), "only in train: y; only in test: z") {
			t.Errorf("%s with mismatching classes: %v", split, err)
		}
	}
	os.RemoveAll(filepath.Join(dir, "test"))
	if _, err := Load("", dir, "train", Options{Size: 5}); err == nil || !strings.Contains(err.Error(), "no test/") {
		t.Errorf("train/ without test/: %v", err)
	}
}

// What a hostile or careless folder gets: errors naming the culprit.
func TestFolderErrors(t *testing.T) {
	good := func(t *testing.T) string {
		dir := t.TempDir()
		writeImage(t, filepath.Join(dir, "a", "ok.png"), greyImage(8, 8, 1))
		return dir
	}
	expect := func(t *testing.T, dir string, size int, want ...string) {
		t.Helper()
		_, err := Load("", dir, "train", Options{Size: size})
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("err = %v, want it to say %q", err, w)
			}
		}
	}
	t.Run("undecodable", func(t *testing.T) {
		dir := good(t)
		bad := filepath.Join(dir, "a", "bad.png")
		writeFile(t, bad, []byte("hello, not an image"))
		expect(t, dir, 8, bad, "not a PNG or JPEG")
		var buf bytes.Buffer
		png.Encode(&buf, uniform(30, 30, color.RGBA{1, 2, 3, 255}))
		writeFile(t, bad, buf.Bytes()[:buf.Len()/2])
		expect(t, dir, 8, bad+": ")
		writeFile(t, bad, []byte{0xff, 0xd8, 0xff})
		expect(t, dir, 8, bad+": ")
	})
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any file")
		}
		dir := good(t)
		os.Chmod(filepath.Join(dir, "a", "ok.png"), 0)
		expect(t, dir, 8, filepath.Join(dir, "a", "ok.png"))
	})
	t.Run("a folder named like an image", func(t *testing.T) {
		dir := good(t)
		os.Mkdir(filepath.Join(dir, "a", "sub.png"), 0o755)
		expect(t, dir, 8, filepath.Join(dir, "a", "sub.png"), "not a regular file (a folder)")
	})
	t.Run("huge declared dimensions", func(t *testing.T) {
		dir := good(t)
		wide := filepath.Join(dir, "a", "wide.png")
		writeFile(t, wide, pngFile(pngIHDR(100000, 1, 8, 0)))
		expect(t, dir, 8, wide, "over the limit of 16384 pixels a side")
		os.Remove(wide)
		// 16000x16000 RGBA would take 1 GB decoded: refused from the header
		// alone, with next to nothing allocated.
		big := filepath.Join(dir, "a", "big.png")
		writeFile(t, big, pngFile(pngIHDR(16000, 16000, 8, 6)))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		expect(t, dir, 8, big, "over the limit of 64 megapixels")
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
			t.Errorf("refusing a huge image allocated %d bytes", d)
		}
	})
	t.Run("header bloated with metadata", func(t *testing.T) {
		defer func(m int) { maxHeader = m }(maxHeader)
		maxHeader = 1024
		dir := good(t)
		p := filepath.Join(dir, "a", "meta.png")
		// A paletted image's dimensions come with its palette, after any
		// text chunks: the decoder must read them all.
		writeFile(t, p, pngFile(pngIHDR(1, 1, 8, 3), pngChunk("tEXt", append([]byte("k\x00"), bytes.Repeat([]byte("x"), 4096)...)),
			pngChunk("PLTE", []byte{7, 7, 7}), pngIDAT([]byte{0, 0})))
		expect(t, dir, 8, p, "header")
		maxHeader = 1 << 20
		if _, err := Load("", dir, "train", Options{Size: 8}); err != nil {
			t.Errorf("the same file under a larger bound: %v", err)
		}
	})
	t.Run("empty class folder", func(t *testing.T) {
		dir := good(t)
		os.MkdirAll(filepath.Join(dir, "b"), 0o755)
		writeFile(t, filepath.Join(dir, "b", "notes.txt"), nil)
		expect(t, dir, 8, filepath.Join(dir, "b")+": class folder without images")
	})
	t.Run("no class folders", func(t *testing.T) {
		dir := t.TempDir()
		writeImage(t, filepath.Join(dir, "loose.png"), greyImage(8, 8, 1))
		os.Mkdir(filepath.Join(dir, ".hidden"), 0o755)
		expect(t, dir, 8, dir+": no class folders", "one sub-folder per class", "IDX")
		if _, err := LoadFolder(dir, "train", Options{Size: 8}); err == nil || strings.Contains(err.Error(), "IDX") {
			t.Errorf("LoadFolder, which reads no IDX files: %v", err)
		}
	})
	t.Run("too many classes", func(t *testing.T) {
		dir := t.TempDir()
		for i := range 257 {
			os.Mkdir(filepath.Join(dir, fmt.Sprint(i)), 0o755)
		}
		expect(t, dir, 8, "257 class folders")
	})
	t.Run("too many files", func(t *testing.T) {
		defer func(m int) { maxFolderFiles = m }(maxFolderFiles)
		maxFolderFiles = 3
		dir := good(t)
		for i := range 3 {
			writeFile(t, filepath.Join(dir, "b", fmt.Sprintf("%d.jpg", i)), nil)
		}
		expect(t, dir, 8, "more than 3 image files")
	})
	t.Run("too many bytes", func(t *testing.T) {
		defer func(m int64) { maxFolderBytes = m }(maxFolderBytes)
		maxFolderBytes = 1000
		dir := good(t)
		writeImage(t, filepath.Join(dir, "a", "colour.png"), uniform(8, 8, color.RGBA{1, 2, 3, 255}))
		expect(t, dir, 16, dir, "2 images of 3×16×16 pixels would take 1536 bytes, over the limit of 1000")
	})
	t.Run("bad arguments", func(t *testing.T) {
		dir := good(t)
		expect(t, dir, 0, dir, "needs the size")
		expect(t, dir, 3, "size 3 out of range")
		expect(t, dir, 1025, "size 1025 out of range")
		if _, err := Load("", dir, "val", Options{Size: 8}); err == nil || !strings.Contains(err.Error(), `"val"`) {
			t.Errorf("split val: %v", err)
		}
		file := filepath.Join(dir, "a", "ok.png")
		if _, err := Load("", file, "train", Options{Size: 8}); err == nil || !strings.Contains(err.Error(), file+": not a folder") {
			t.Errorf("a file for a folder: %v", err)
		}
		if _, err := Load("", filepath.Join(dir, "nowhere"), "train", Options{Size: 8}); err == nil || !strings.Contains(err.Error(), "nowhere") {
			t.Errorf("a missing folder: %v", err)
		}
	})
}
