package datasets

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"kakusan/internal/files"
)

// The sizes an image folder may be loaded at, in pixels a side.
const (
	MinFolderSize = 4
	MaxFolderSize = 1024
)

// What an image folder may ask of the loader. A file over a limit is an
// error naming it, found from its header before anything is decoded.
const (
	maxClasses = 256     // labels are uint8
	maxSide    = 16384   // pixels a side
	maxPixels  = 1 << 26 // 64 megapixels (2^26) an image
	bigPixels  = 1 << 22 // larger images are decoded one at a time
)

// Limits on a whole folder; variables so that tests can lower them.
var (
	maxFolderFiles       = 1_000_000 // image files in the folder read
	maxFolderBytes int64 = 4 << 30   // N*C*size*size, the decoded set
)

// errNoClasses marks a folder without class sub-folders.
var errNoClasses = errors.New("no class folders")

// folderFile is one image of a folder and its label.
type folderFile struct {
	path  string
	label uint8
}

// LoadFolder reads one split ("train" or "test") of an image folder laid out
// as torchvision's ImageFolder expects: one sub-folder per class holding
// .png, .jpg or .jpeg files (any case). Labels number the class folders in
// sorted order and ClassNames are their names; images come class by class,
// each class's files sorted by name. Hidden files and folders (names
// starting with '.'), other files, and folders inside class folders are
// ignored; an image is read only if it is a regular file (a symlink to one
// is), anything else with an image name (a FIFO, a device, a folder) is an
// error naming it.
//
// Splits: when dir holds both train/ and test/, each a folder of class
// folders with the same class names, they are the splits. Otherwise the
// class folders are directly in dir and the test split is every 10th file
// of each class in sorted order (the files at indices 9, 19, 29, ...), the
// train split the rest; a class of fewer than 10 images has no test images,
// and an empty split is an error. train/ without test/ (or the reverse) is
// an error, not a class.
//
// Every image is resized so that its shorter side is size and centre-cropped
// to size×size, as torchvision's Resize(size) and CenterCrop(size) do: the
// resized long side is floor(size*long/short), the crop offset
// round-half-even((resized-size)/2), and the resampling is bilinear, its
// triangle filter widened by the shrink factor when shrinking (antialiased,
// as PIL and torchvision's antialias=True do), computed in float32 and
// deterministic. The set is greyscale (C = 1) when every image's colour
// model is grey (8- or 16-bit grey, with or without alpha, or a palette of
// greys), and RGB (C = 3) otherwise, grey images then replicated to three
// channels. Alpha is composited on o.Background (a folder is RGB when that
// colour is not grey).
//
// With o.Cache set, the files' contents are hashed with the size, the
// background and the labels, and a set decoded before from the same is read
// from o.Cache (the file named by that hash) instead of being decoded again;
// a set decoded afresh is written there. The cache is only a shortcut: a
// file there that is missing, truncated or fails its checksum costs a
// decode, and a folder that cannot be written to a warning on o.Log.
//
// o.Size must be between MinFolderSize and MaxFolderSize. The folder may hold
// at most 1,000,000 image files and 256 classes, images at most 16384
// pixels a side and 64 megapixels, and the decoded set at most 4 GiB; a
// class folder without images, an unreadable or undecodable file, or a
// folder without class folders is an error naming it.
func LoadFolder(dir, split string, o Options) (*Images, error) {
	size := o.Size
	if split != "train" && split != "test" {
		return nil, fmt.Errorf("unknown split %q (want train or test)", split)
	}
	if size == 0 {
		return nil, fmt.Errorf("%s: an image folder needs the size to load its images at (%d to %d pixels a side)", dir, MinFolderSize, MaxFolderSize)
	}
	if size < MinFolderSize || size > MaxFolderSize {
		return nil, fmt.Errorf("%s: image size %d out of range: an image folder is loaded at %d to %d pixels a side", dir, size, MinFolderSize, MaxFolderSize)
	}
	classes, files, err := listFolder(dir, split)
	if err != nil {
		return nil, err
	}
	return decodeFolder(dir, classes, files, o)
}

// listFolder finds the class names and the files of a split.
func listFolder(dir, split string) ([]string, []folderFile, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, nil, err
	}
	if !st.IsDir() {
		return nil, nil, fmt.Errorf("%s: not a folder", dir)
	}
	subs, err := subfolders(dir)
	if err != nil {
		return nil, nil, err
	}
	hasTrain, hasTest := slices.Contains(subs, "train"), slices.Contains(subs, "test")
	if hasTrain != hasTest {
		have, lack := "train", "test"
		if hasTest {
			have, lack = lack, have
		}
		return nil, nil, fmt.Errorf("%s holds %s/ but no %s/: give both train/ and test/ (each a folder of class folders), or neither (class folders directly in %s; every 10th image of each class is then the test split)", dir, have, lack, dir)
	}
	if hasTrain {
		root := filepath.Join(dir, split)
		classes, err := classFolders(root)
		if err != nil {
			return nil, nil, err
		}
		other := filepath.Join(dir, map[string]string{"train": "test", "test": "train"}[split])
		otherClasses, err := classFolders(other)
		if err != nil {
			return nil, nil, err
		}
		if !slices.Equal(classes, otherClasses) {
			trainDir, testDir := filepath.Join(dir, "train"), filepath.Join(dir, "test")
			train, test := classes, otherClasses
			if split == "test" {
				train, test = test, train
			}
			return nil, nil, fmt.Errorf("%s and %s hold different class folders (only in train: %s; only in test: %s): both splits need the same classes", trainDir, testDir, missing(train, test), missing(test, train))
		}
		files, err := classFiles(root, classes, func(int) bool { return true })
		if err != nil {
			return nil, nil, err
		}
		return classes, files, nil
	}
	classes, err := classFolders(dir)
	if err != nil {
		return nil, nil, err
	}
	files, err := classFiles(dir, classes, func(i int) bool { return (i%10 == 9) == (split == "test") })
	if err != nil {
		return nil, nil, err
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("%s: no test images: the test split is every 10th image of each class, and no class has 10", dir)
	}
	return classes, files, nil
}

// missing lists the names of a that b lacks, for messages.
func missing(a, b []string) string {
	var out []string
	for _, n := range a {
		if !slices.Contains(b, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// classFolders lists the class folders of dir, sorted, and checks their
// number.
func classFolders(dir string) ([]string, error) {
	classes, err := subfolders(dir)
	if err != nil {
		return nil, err
	}
	if len(classes) == 0 {
		return nil, fmt.Errorf("%s: %w: an image folder holds one sub-folder per class of .png, .jpg or .jpeg files (%s/<class>/<image>.png), or train/ and test/ sub-folders each laid out so", dir, errNoClasses, dir)
	}
	if len(classes) > maxClasses {
		return nil, fmt.Errorf("%s: %d class folders, more than the %d labels can number", dir, len(classes), maxClasses)
	}
	return classes, nil
}

// subfolders lists the names of the folders in dir (symlinks to folders
// included), hidden ones left out, sorted.
func subfolders(dir string) ([]string, error) {
	var out []string
	err := readDir(dir, func(e fs.DirEntry) error {
		if hidden(e.Name()) {
			return nil
		}
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 {
			st, err := os.Stat(filepath.Join(dir, e.Name()))
			isDir = err == nil && st.IsDir()
		}
		if isDir {
			out = append(out, e.Name())
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}

// classFiles lists the image files of each class folder of root, sorted by
// name, keeping those whose index within their class passes keep.
func classFiles(root string, classes []string, keep func(int) bool) ([]folderFile, error) {
	var files []folderFile
	total := 0
	for label, class := range classes {
		cdir := filepath.Join(root, class)
		var names []string
		err := readDir(cdir, func(e fs.DirEntry) error {
			if name := e.Name(); !hidden(name) && imageExts[strings.ToLower(filepath.Ext(name))] {
				if total++; total > maxFolderFiles {
					return fmt.Errorf("%s: more than %d image files", root, maxFolderFiles)
				}
				names = append(names, name)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%s: class folder without images (want .png, .jpg or .jpeg files)", cdir)
		}
		slices.Sort(names)
		for i, n := range names {
			if keep(i) {
				files = append(files, folderFile{filepath.Join(cdir, n), uint8(label)})
			}
		}
	}
	return files, nil
}

var imageExts = map[string]bool{".png": true, ".jpg": true, ".jpeg": true}

func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// readDir calls f on each entry of dir, reading the listing in chunks so
// that a huge folder is not held in memory at once.
func readDir(dir string, f func(fs.DirEntry) error) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	for {
		entries, err := d.ReadDir(1024)
		for _, e := range entries {
			if err := f(e); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
	}
}

// imageHeader is what an image file's header says.
type imageHeader struct {
	w, h   int
	grey   bool
	decode func(io.Reader) (image.Image, error)
}

// decodeFolder reads the headers of files (checking their size, finding
// whether the set is grey and, with a cache, hashing the files), then reads
// the set from the cache or decodes and resamples every image into it.
func decodeFolder(dir string, classes []string, files []folderFile, o Options) (*Images, error) {
	start := time.Now()
	heads, digests, err := readHeaders(files, o.Cache != "")
	if err != nil {
		return nil, err
	}
	c := 1
	for _, h := range heads {
		if !h.grey || !grey(o.Background) {
			c = 3
			break
		}
	}
	n, size := len(files), o.Size
	per := int64(c) * int64(size) * int64(size)
	if int64(n)*per > maxFolderBytes {
		return nil, fmt.Errorf("%s: %d images of %d×%d×%d pixels would take %d bytes, over the limit of %d: use a smaller size or fewer images", dir, n, c, size, size, int64(n)*per, maxFolderBytes)
	}
	s := &Images{N: n, C: c, H: size, W: size, Pixels: make([]uint8, int64(n)*per), Labels: make([]uint8, n), Classes: len(classes), ClassNames: classes}
	var cached string
	if o.Cache != "" {
		bg := o.Background
		k := newCacheKey(classes, size, c, [3]uint8{bg.R, bg.G, bg.B})
		for i, f := range files {
			k.file(f.label, digests[i])
		}
		cached = filepath.Join(o.Cache, k.name())
		if readCache(cached, s) {
			logf(o.Log, "%s: %d images read from the cache %s (%s)", dir, n, cached, time.Since(start).Round(time.Millisecond))
			return s, nil
		}
	}
	bar := decodeBar(o.Log, n)
	if err := decodeImages(files, heads, s, o.Background, bar); err != nil {
		return nil, err
	}
	if bar != nil {
		bar.Finish()
	}
	took := time.Since(start).Round(time.Millisecond)
	if cached == "" {
		logf(o.Log, "%s: %d images decoded (%s)", dir, n, took)
		return s, nil
	}
	if err := writeCache(cached, s); err != nil {
		logf(o.Log, "%s: %d images decoded (%s); warning: not cached: %v", dir, n, took, err)
	} else {
		logf(o.Log, "%s: %d images decoded (%s), cached in %s", dir, n, took, cached)
	}
	return s, nil
}

// readHeaders reads every file's header and, when hash is set, the SHA-256
// of its contents.
func readHeaders(files []folderFile, hash bool) ([]imageHeader, [][]byte, error) {
	heads := make([]imageHeader, len(files))
	var digests [][]byte
	if hash {
		digests = make([][]byte, len(files))
	}
	err := forEach(len(files), func(i int) error {
		f, br, err := openImage(files[i].path)
		if err != nil {
			return err
		}
		defer f.Close()
		if !hash {
			heads[i], _, err = readHeader(files[i].path, br)
			return err
		}
		h := sha256.New()
		br.Reset(io.TeeReader(f, h))
		if heads[i], _, err = readHeader(files[i].path, br); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, br); err != nil {
			return fmt.Errorf("%s: %v", files[i].path, err)
		}
		digests[i] = h.Sum(nil)
		return nil
	})
	return heads, digests, err
}

// decodeImages decodes and resamples every file into s, ticking bar.
func decodeImages(files []folderFile, heads []imageHeader, s *Images, bg color.RGBA, bar *progressbar.ProgressBar) error {
	var big sync.Mutex
	return forEach(s.N, func(i int) error {
		path := files[i].path
		s.Labels[i] = files[i].label
		f, br, err := openImage(path)
		if err != nil {
			return err
		}
		defer f.Close()
		h, read, err := readHeader(path, br)
		if err != nil {
			return err
		}
		if h.w != heads[i].w || h.h != heads[i].h || (s.C == 1 && !h.grey) {
			return fmt.Errorf("%s: changed while the folder was being read", path)
		}
		if h.w*h.h > bigPixels {
			big.Lock()
			defer big.Unlock()
		}
		// The decoder reads the very header checked above, then the rest.
		img, err := h.decode(io.MultiReader(bytes.NewReader(read), br))
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		if b := img.Bounds(); b.Dx() != h.w || b.Dy() != h.h {
			return fmt.Errorf("%s: decoded %dx%d, the header says %dx%d", path, b.Dx(), b.Dy(), h.w, h.h)
		}
		resizeCrop(img, s.C, s.H, bg, s.Image(i))
		if bar != nil {
			bar.Add(1)
		}
		return nil
	})
}

// decodeBar is a progress bar for decoding n images on log when it is a
// terminal and n is large enough to take a while; nil otherwise.
func decodeBar(log io.Writer, n int) *progressbar.ProgressBar {
	f, ok := log.(*os.File)
	if !ok || n < 2000 || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions(n, progressbar.OptionSetWriter(f), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("img"), progressbar.OptionSetDescription("decoding"), progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
}

// logf writes a line to log when there is one.
func logf(log io.Writer, format string, args ...any) {
	if log != nil {
		fmt.Fprintf(log, format+"\n", args...)
	}
}

// openImage opens a regular file without blocking (a FIFO is refused by
// its mode, and the mode is checked again on the open file).
func openImage(path string) (*os.File, *bufio.Reader, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: not a regular file (%s)", path, files.Kind(st.Mode()))
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return nil, nil, err
	}
	if st, err = f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s: not a regular file (%s)", path, files.Kind(st.Mode()))
		}
		return nil, nil, err
	}
	return f, bufio.NewReaderSize(f, 64<<10), nil
}

var pngMagic = []byte("\x89PNG\r\n\x1a\n")

// maxHeader bounds what an image's header (everything a decoder reads to
// learn the dimensions: metadata chunks and segments included) may take; a
// variable so that tests can lower it.
var maxHeader = 16 << 20

// headerBuffer keeps the bytes read for the header, up to maxHeader.
type headerBuffer struct{ bytes.Buffer }

func (b *headerBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > maxHeader {
		return 0, fmt.Errorf("more than %d bytes of header and metadata before the image data", maxHeader)
	}
	return b.Buffer.Write(p)
}

// readHeader reads an image's header from br and checks its dimensions
// against the limits, before anything is decoded. It returns the bytes it
// consumed from br, which the decoder must read again.
func readHeader(path string, br *bufio.Reader) (h imageHeader, read []byte, err error) {
	head, _ := br.Peek(26)
	buf := &headerBuffer{}
	tee := io.TeeReader(br, buf)
	var cfg image.Config
	switch {
	case bytes.HasPrefix(head, pngMagic):
		if cfg, err = png.DecodeConfig(tee); err != nil {
			return h, nil, fmt.Errorf("%s: %v", path, err)
		}
		h.decode = png.Decode
		// Grey with alpha decodes to NRGBA; the IHDR's colour type (byte 25)
		// tells it apart from colour.
		h.grey = len(head) == 26 && (head[25] == 0 || head[25] == 4)
	case bytes.HasPrefix(head, []byte{0xff, 0xd8}):
		if cfg, err = jpeg.DecodeConfig(tee); err != nil {
			return h, nil, fmt.Errorf("%s: %v", path, err)
		}
		h.decode = jpeg.Decode
	default:
		return h, nil, fmt.Errorf("%s: not a PNG or JPEG file", path)
	}
	switch m := cfg.ColorModel.(type) {
	case color.Palette:
		h.grey = true
		for _, c := range m {
			r, g, b, _ := c.RGBA()
			h.grey = h.grey && r == g && g == b
		}
	default:
		h.grey = h.grey || m == color.GrayModel || m == color.Gray16Model
	}
	h.w, h.h = cfg.Width, cfg.Height
	switch {
	case h.w <= 0 || h.h <= 0:
		return h, nil, fmt.Errorf("%s: empty image (%dx%d)", path, h.w, h.h)
	case h.w > maxSide || h.h > maxSide:
		return h, nil, fmt.Errorf("%s: %dx%d pixels, over the limit of %d pixels a side", path, h.w, h.h, maxSide)
	case h.w*h.h > maxPixels:
		return h, nil, fmt.Errorf("%s: %dx%d pixels, over the limit of %d megapixels", path, h.w, h.h, maxPixels>>20)
	}
	return h, buf.Bytes(), nil
}

// forEach runs f(i) for i in [0, n) on a few goroutines. It stops handing
// out work at the first error and returns the error of the lowest i that
// failed: every i below a failing one has run, so the error is the one a
// sequential loop would meet first.
func forEach(n int, f func(i int) error) error {
	var (
		next   atomic.Int64
		failed atomic.Bool
		mu     sync.Mutex
		errAt  = n
		first  error
		wg     sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), 8, n) {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if i < errAt {
						errAt, first = i, err
					}
					mu.Unlock()
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return first
}
