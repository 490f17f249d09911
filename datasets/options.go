package datasets

import (
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Options says how Load reads an image folder; MNIST-layout IDX files use
// Size only.
type Options struct {
	// Size is the side, in pixels, every image of a folder is resized and
	// centre-cropped to (MinFolderSize to MaxFolderSize); 0 for IDX files'
	// own.
	Size int
	// Background is the opaque colour transparent pixels are composited
	// on (DefaultBackground when built by ParseBackground("")).
	Background color.RGBA
	// Cache is a folder for decoded sets: a folder read again with the same
	// files, size and background is read from there instead of being
	// decoded (see LoadFolder). "" caches nothing.
	Cache string
	// Log, when set, gets a line saying where the images came from and how
	// long they took, and a progress bar while a large folder decodes when
	// it is a terminal.
	Log io.Writer
}

// DefaultBackground is the background of images with transparent pixels
// when a config names none: white. The pictures that carry transparency
// (emoji, icons, logos, sprites) are drawn to be seen on light pages, and
// their dark outlines and features vanish on black; composited on white they
// look as people see them.
const DefaultBackground = "white"

// Black is the black background: transparent pixels of a mask are kept.
var Black = color.RGBA{0, 0, 0, 255}

// ParseBackground reads a background colour: "white", "black", or "#rrggbb";
// "" is DefaultBackground.
func ParseBackground(s string) (color.RGBA, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", DefaultBackground:
		return color.RGBA{255, 255, 255, 255}, nil
	case "black":
		return color.RGBA{0, 0, 0, 255}, nil
	}
	if h, ok := strings.CutPrefix(s, "#"); ok && len(h) == 6 {
		if v, err := strconv.ParseUint(h, 16, 32); err == nil {
			return color.RGBA{uint8(v >> 16), uint8(v >> 8), uint8(v), 255}, nil
		}
	}
	return color.RGBA{}, fmt.Errorf("unknown background %q (want white, black or #rrggbb)", s)
}

// DefaultCache is the folder of decoded image sets when a config names
// none: kakusan/images under the user's cache folder ($XDG_CACHE_HOME or
// ~/.cache on Linux), or "" (no cache) when there is none.
func DefaultCache() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "kakusan", "images")
}

// grey reports whether c is a shade of grey, which keeps a grey folder grey.
func grey(c color.RGBA) bool { return c.R == c.G && c.G == c.B }
