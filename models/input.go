package models

import (
	"fmt"
	"io"

	"kakusan/datasets"
)

// InputImage reads an image (PNG or JPEG) given to a model trained on
// images of geometry g from data d, for image-to-image or inpainting: C·H·W
// values in [0, 1], resized and centre-cropped as the training folder's
// images were, transparency on the data's background. name is the image's
// name in errors; an image of more than maxPixels (when positive) is
// refused before it is decoded. It returns the image's own size too.
func InputImage(r io.Reader, name string, g Geometry, d Data, maxPixels int) (px []float32, w, h int, err error) {
	if g.H != g.W {
		return nil, 0, 0, fmt.Errorf("%s: the model's images are %dx%d; only square models take input images", name, g.W, g.H)
	}
	bg, err := datasets.ParseBackground(d.Background)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("data.background: %w", err)
	}
	return datasets.DecodeImage(r, name, g.C, g.H, bg, maxPixels)
}

// InputMask reads an inpainting mask (PNG or JPEG) for a model of geometry
// g: H·W values, 1 where the model paints (light pixels, luma at least
// half) and 0 where the input image is kept (dark or transparent ones). A
// mask that paints nothing is an error. maxPixels and the size returned are
// as InputImage's.
func InputMask(r io.Reader, name string, g Geometry, maxPixels int) (v []float32, w, h int, err error) {
	if g.H != g.W {
		return nil, 0, 0, fmt.Errorf("%s: the model's images are %dx%d; only square models take masks", name, g.W, g.H)
	}
	if v, w, h, err = datasets.DecodeImage(r, name, 1, g.H, datasets.Black, maxPixels); err != nil {
		return nil, 0, 0, err
	}
	painted := 0
	for i, x := range v {
		v[i] = 0
		if x >= 0.5 {
			v[i] = 1
			painted++
		}
	}
	if painted == 0 {
		return nil, 0, 0, fmt.Errorf("%s: the mask paints nothing: white marks the pixels to paint, black those kept", name)
	}
	return v, w, h, nil
}
