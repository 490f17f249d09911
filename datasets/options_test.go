package datasets

import (
	"bytes"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseBackground(t *testing.T) {
	for s, want := range map[string]color.RGBA{
		"": {255, 255, 255, 255}, "white": {255, 255, 255, 255}, "black": {0, 0, 0, 255},
		"#ff8000": {255, 128, 0, 255}, "#336699": {0x33, 0x66, 0x99, 255},
	} {
		if got, err := ParseBackground(s); err != nil || got != want {
			t.Errorf("ParseBackground(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"red", "#12345", "#gg0000", "ffffff", "#ff80001"} {
		if _, err := ParseBackground(s); err == nil || !strings.Contains(err.Error(), "white, black or #rrggbb") {
			t.Errorf("ParseBackground(%q): %v", s, err)
		}
	}
}

// Transparent pixels are composited on the background: C·A + bg·(1-A) in
// 8 bits, for non-premultiplied (NRGBA), grey-with-alpha and paletted
// images; a grey folder stays grey on a grey background and becomes RGB on
// a coloured one.
func TestBackground(t *testing.T) {
	dir := t.TempDir()
	nrgba := image.NewNRGBA(image.Rect(0, 0, 8, 8))
	for i := 0; i < len(nrgba.Pix); i += 4 {
		copy(nrgba.Pix[i:], []byte{255, 0, 0, 128}) // red at alpha 128/255
	}
	writeImage(t, filepath.Join(dir, "a", "red.png"), nrgba)
	pal := image.NewPaletted(image.Rect(0, 0, 8, 8), color.Palette{color.NRGBA{0, 0, 255, 0}, color.NRGBA{0, 255, 0, 255}})
	writeImage(t, filepath.Join(dir, "a", "shown.png"), pal) // every pixel the transparent entry
	for _, c := range []struct {
		bg   color.RGBA
		want [2][3]int
	}{
		{color.RGBA{0, 0, 0, 255}, [2][3]int{{128, 0, 0}, {0, 0, 0}}},
		{color.RGBA{255, 255, 255, 255}, [2][3]int{{255, 127, 127}, {255, 255, 255}}},
		{color.RGBA{0x33, 0x66, 0x99, 255}, [2][3]int{{(255*128 + 0x33*127 + 127) / 255, (0x66*127 + 127) / 255, (0x99*127 + 127) / 255}, {0x33, 0x66, 0x99}}},
	} {
		s, err := LoadFolder(dir, "train", Options{Size: 4, Background: c.bg})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			for ch := range 3 {
				if got := at(s, i, ch, 1, 2); !near(got, c.want[i][ch], 1) {
					t.Errorf("background %v: image %d channel %d = %d, want %d", c.bg, i, ch, got, c.want[i][ch])
				}
			}
		}
	}
	grey := t.TempDir()
	writeFile(t, filepath.Join(grey, "a", "half.png"), greyAlphaPNG(8, 8, 200, 128))
	for bg, wantC := range map[color.RGBA]int{{255, 255, 255, 255}: 1, {128, 128, 128, 255}: 1, {255, 0, 0, 255}: 3} {
		s, err := LoadFolder(grey, "train", Options{Size: 4, Background: bg})
		if err != nil {
			t.Fatal(err)
		}
		if s.C != wantC {
			t.Errorf("a grey folder on %v: C = %d, want %d", bg, s.C, wantC)
		}
		if v := (200*128 + int(bg.R)*127 + 127) / 255; !near(at(s, 0, 0, 0, 0), v, 1) {
			t.Errorf("grey 200 at alpha 128 on %v: %d, want %d", bg, at(s, 0, 0, 0, 0), v)
		}
	}
}

// A second load of the same files, size and background reads the cache and
// gives the same set; a changed file, another background or size, and a
// damaged cache file each cost a decode, never a wrong set.
func TestCache(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	for i, c := range []color.RGBA{{200, 10, 10, 255}, {10, 200, 10, 255}, {10, 10, 200, 255}} {
		for j := range 3 {
			writeImage(t, filepath.Join(dir, string(rune('a'+i)), string(rune('0'+j))+".png"), uniform(12, 10, color.RGBA{c.R + uint8(j), c.G, c.B, 255}))
		}
	}
	load := func(o Options) (*Images, string) {
		t.Helper()
		var log bytes.Buffer
		o.Cache, o.Log = cache, &log
		s, err := LoadFolder(dir, "train", o)
		if err != nil {
			t.Fatal(err)
		}
		return s, log.String()
	}
	white := color.RGBA{255, 255, 255, 255}
	first, log := load(Options{Size: 6, Background: white})
	if !strings.Contains(log, "decoded") || !strings.Contains(log, "cached in") {
		t.Fatalf("first load: %q", log)
	}
	files, _ := filepath.Glob(filepath.Join(cache, "*.images"))
	if len(files) != 1 {
		t.Fatalf("cache holds %v, want one file", files)
	}
	again, log := load(Options{Size: 6, Background: white})
	if !strings.Contains(log, "read from the cache") {
		t.Errorf("second load decoded again: %q", log)
	}
	if !slices.Equal(first.Pixels, again.Pixels) || !slices.Equal(first.Labels, again.Labels) || !slices.Equal(first.ClassNames, again.ClassNames) || first.C != again.C {
		t.Error("the cached set differs from the decoded one")
	}
	for _, o := range []Options{{Size: 7, Background: white}, {Size: 6}} {
		if _, log := load(o); !strings.Contains(log, "decoded") {
			t.Errorf("%+v: %q, want a decode", o, log)
		}
	}
	// A changed file (same name, size and class) is a different set.
	writeImage(t, filepath.Join(dir, "b", "1.png"), uniform(12, 10, color.RGBA{0, 0, 0, 255}))
	changed, log := load(Options{Size: 6, Background: white})
	if !strings.Contains(log, "decoded") || slices.Equal(changed.Pixels, first.Pixels) {
		t.Errorf("a changed image was read from the cache: %q", log)
	}
	// A damaged cache file is ignored and rewritten.
	files, _ = filepath.Glob(filepath.Join(cache, "*.images"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		b[len(b)/2] ^= 1
		os.WriteFile(f, b, 0o644)
	}
	fixed, log := load(Options{Size: 6, Background: white})
	if !strings.Contains(log, "decoded") || !slices.Equal(fixed.Pixels, changed.Pixels) {
		t.Errorf("a damaged cache file was used: %q", log)
	}
	if _, log := load(Options{Size: 6, Background: white}); !strings.Contains(log, "read from the cache") {
		t.Errorf("the damaged file was not rewritten: %q", log)
	}
	// A cache folder that cannot be written costs a warning, not the run.
	ro := filepath.Join(t.TempDir(), "file")
	writeFile(t, ro, []byte("not a folder"))
	var buf bytes.Buffer
	if _, err := LoadFolder(dir, "train", Options{Size: 6, Cache: ro, Log: &buf}); err != nil || !strings.Contains(buf.String(), "warning: not cached") {
		t.Errorf("unwritable cache: %v, %q", err, buf.String())
	}
}

// Balance draws classes by n^-balance: at 1 each class about equally often,
// at 0 a permutation; every rank draws the same sequence, so the shards of
// a step are disjoint slices of it.
func TestBalance(t *testing.T) {
	set := &Images{N: 1000, C: 1, H: 1, W: 1, Pixels: make([]uint8, 1000), Labels: make([]uint8, 1000), Classes: 2}
	for i := 900; i < 1000; i++ {
		set.Labels[i] = 1
	}
	count := func(order []int) (n [2]int) {
		for _, i := range order {
			n[set.Labels[i]]++
		}
		return n
	}
	l := &Loader{Set: set, Batch: 10, Seed: 3, Shuffle: true}
	if n := count(l.Order(0)); n != [2]int{900, 100} {
		t.Errorf("balance 0: %v, want every image once", n)
	}
	l.Balance = 1
	n := count(l.Order(0))
	if n[0]+n[1] != 1000 || n[1] < 440 || n[1] > 560 { // 500 ± 3.8σ
		t.Errorf("balance 1: %v, want about 500 each", n)
	}
	l.Balance = 0.5 // class weights 900/√900 : 100/√100 = 30 : 10, so 250 of 1000 draws are class 1
	if n := count(l.Order(1)); n[1] < 200 || n[1] > 300 {
		t.Errorf("balance 0.5: %v, want about 250 of class 1", n)
	}
	if !slices.Equal(l.Order(1), l.Order(1)) || slices.Equal(l.Order(1), l.Order(2)) {
		t.Error("an epoch's draws must depend on (seed, epoch) only")
	}
	r0 := &Loader{Set: set, Batch: 5, Seed: 3, Shuffle: true, Balance: 1, Rank: 0, World: 2}
	r1 := *r0
	r1.Rank = 1
	b0, stop0 := r0.Epoch(0, 0)
	b1, stop1 := r1.Epoch(0, 0)
	defer stop0()
	defer stop1()
	l.Balance = 1
	global := l.Order(0)
	x, y := <-b0, <-b1
	for j := range 5 {
		if x.Index[j] != global[2*j] || y.Index[j] != global[2*j+1] {
			t.Fatalf("rank shards %v and %v are not every other draw of %v", x.Index, y.Index, global[:10])
		}
	}
}
