package serve

import (
	"bytes"
	"encoding"
	"encoding/base64"
	"encoding/json"
	"fmt"
	_ "image/jpeg" // input images: DecodeConfig's formats
	_ "image/png"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/sample"
)

// Limits bound what one request may ask; every size is checked before
// anything is allocated for it.
type Limits struct {
	MaxN           int   `json:"max_n"`            // images a request
	MaxSteps       int   `json:"max_steps"`        // sampler steps (ddpm: the model's timesteps)
	MaxBody        int64 `json:"max_body_bytes"`   // a request's body
	MaxImagePixels int   `json:"max_image_pixels"` // an input image's pixels, before it is resized
	MaxBatch       int   `json:"max_batch"`        // images a sampler batch
	MaxQueue       int   `json:"max_queue"`        // images waiting
}

// Request is a parsed and checked POST /v1/images.
type Request struct {
	N        int
	Seed     uint64
	Labels   []int64 // per image; nil for an unconditional model
	Sampling diffusion.Sampling
	Init     []float32 // C·H·W pixels in [0, 1]: image-to-image or inpainting; nil: none
	Mask     []float32 // H·W, 1 where painted; nil: none
	Format   string    // json, ndjson or png
	Record   map[string]any
}

// The request's own fields; the sampling settings are diffusion.Sampling's,
// under their record names (a job's job.json names them so).
var requestFields = []string{"n", "seed", "labels", "init", "mask", "format"}

// formats are the answers a request may ask for.
var formats = []string{"json", "ndjson", "png"}

// knownFields is every field a request may have, sorted.
var knownFields = func() []string {
	out := slices.Clone(requestFields)
	for _, f := range diffusion.SamplingFields() {
		out = append(out, f.Record())
	}
	sort.Strings(out)
	return out
}()

// fields are a request's fields as sent, decoded but not yet checked
// against the model.
type fields struct {
	r          *Request
	s          diffusion.Sampling
	labels     string   // a --labels spec
	init, mask string   // base64 images
	given      []string // the settings sent, by flag name (and "labels")
}

// decode reads a request's body: a JSON object of the known fields, each of
// its type. Every problem is an error that names its field.
func decode(body []byte, l Limits) (*fields, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("the body is not a JSON object: %v", err)
	}
	if raw == nil {
		return nil, fmt.Errorf("the body is not a JSON object (null)")
	}
	for k, v := range raw {
		if !slices.Contains(knownFields, k) {
			return nil, fmt.Errorf("unknown field %q (known: %s)", k, strings.Join(knownFields, ", "))
		}
		if string(bytes.TrimSpace(v)) == "null" { // JSON leaves the value as it was: it would read as 0
			return nil, fmt.Errorf("%s: null; leave the field out for its default", k)
		}
	}
	f := &fields{r: &Request{N: 1, Seed: 1, Format: "json"}, labels: "all"}
	for _, p := range []struct {
		key string
		dst any
	}{{"n", &f.r.N}, {"seed", &f.r.Seed}, {"init", &f.init}, {"mask", &f.mask}, {"format", &f.r.Format}} {
		if v, ok := raw[p.key]; ok {
			if err := json.Unmarshal(v, p.dst); err != nil {
				return nil, fmt.Errorf("%s: %v", p.key, jsonProblem(err))
			}
		}
	}
	if f.r.N < 1 || f.r.N > l.MaxN {
		return nil, fmt.Errorf("n: must be 1-%d, got %d", l.MaxN, f.r.N)
	}
	if v, ok := raw["labels"]; ok {
		spec, listed, err := labelSpec(v)
		if err != nil {
			return nil, fmt.Errorf("labels: %v", err)
		}
		if listed > f.r.N {
			return nil, fmt.Errorf("labels: a list of %d labels for n = %d images", listed, f.r.N)
		}
		f.labels, f.given = spec, append(f.given, "labels")
	}
	if !slices.Contains(formats, f.r.Format) {
		return nil, fmt.Errorf("format: unknown %q (known: %s)", f.r.Format, strings.Join(formats, ", "))
	}
	for _, sf := range diffusion.SamplingFields() {
		if v, ok := raw[sf.Record()]; ok {
			if err := setField(sf.Ptr(&f.s), v); err != nil {
				return nil, fmt.Errorf("%s: %v", sf.Record(), err)
			}
			f.given = append(f.given, sf.Flag)
		}
	}
	return f, nil
}

// parse reads a request's body (decode) and checks it for the model as
// bin/sample checks its flags, then decodes its images. Every problem is an
// error that names its field; nothing is run.
func (m *Model) parse(body []byte, l Limits) (*Request, error) {
	f, err := decode(body, l)
	if err != nil {
		return nil, err
	}
	r, s, edit, masked := f.r, f.s, f.init != "", f.mask != ""
	name := func(flag string) string { return strings.ReplaceAll(flag, "-", "_") }
	if err := models.CheckSettings(m.entry, m.m, m.ck.Config, s, f.given, edit, masked, name); err != nil {
		return nil, err
	}
	g := m.ck.Geometry
	class, style, err := models.PromptClass(m.m, g.Classes, s.Prompt)
	if err != nil {
		return nil, fmt.Errorf("prompt: %v", err)
	}
	if class >= 0 {
		if slices.Contains(f.given, "labels") {
			return nil, fmt.Errorf("prompt %.60q names a class and labels gives the classes: one or the other", s.Prompt)
		}
		f.labels = strconv.Itoa(class)
	}
	s.Prompt = style
	if err := m.checkSampling(r, s, f.given, edit, masked, l); err != nil {
		return nil, err
	}
	if models.Conditional(m.m) {
		if r.Labels, err = sample.ParseLabels(f.labels, r.N, g.Classes, r.Seed); err != nil {
			return nil, fmt.Errorf("labels: %s", strings.TrimPrefix(err.Error(), "--labels "))
		}
	}
	var iw, ih, mw, mh int
	if edit {
		if r.Init, iw, ih, err = m.inputImage("init", f.init, l, false); err != nil {
			return nil, err
		}
	}
	if masked {
		if r.Mask, mw, mh, err = m.inputImage("mask", f.mask, l, true); err != nil {
			return nil, err
		}
		if mw != iw || mh != ih { // both are resized alike: only the same size maps pixel to pixel
			return nil, fmt.Errorf("mask: %dx%d pixels, but init is %dx%d: a mask marks the pixels of its image", mw, mh, iw, ih)
		}
	}
	r.Record = map[string]any{"n": r.N, "seed": r.Seed}
	if m.dm != nil {
		maps.Copy(r.Record, models.SamplingRecord(m.ck.Config, r.Sampling))
	}
	return r, nil
}

// checkSampling resolves a request's sampling settings over the
// checkpoint's (the settings given win) and checks them as bin/sample does,
// and against the limits.
func (m *Model) checkSampling(r *Request, s diffusion.Sampling, given []string, edit, masked bool, l Limits) error {
	if m.dm == nil {
		return nil // CheckSettings refused every sampling setting
	}
	s = s.Over(m.def, given) // precision auto is resolved by batch size (precisionFor)
	if edit {
		s = s.ForEdit(masked)
	}
	if err := m.dm.CheckSampling(s); err != nil {
		return err
	}
	if cost, what := stepCost(s, m.dm.Sched.T, masked); cost > l.MaxSteps {
		return fmt.Errorf("steps: %d network passes (%s), over this server's limit of %d", cost, what, l.MaxSteps)
	}
	r.Sampling = s
	return nil
}

// stepCost is what a request's sampling costs in steps of the network
// (each guided step's two passes counted once, as for every request): the
// sampler's steps (ddpm's T), Heun's two visits a step, RePaint's redos
// (masked: inpainting); and how it adds up, for a message.
func stepCost(s diffusion.Sampling, T int, masked bool) (int, string) {
	steps, what := s.Steps, fmt.Sprintf("%s, %d steps", s.Sampler, s.Steps)
	if s.Sampler == "ddpm" {
		steps, what = T, fmt.Sprintf("ddpm, the model's %d timesteps", T)
	}
	if s.Sampler == "heun" {
		steps, what = 2*steps, what+" of two passes"
	}
	if masked && s.Resample > 1 {
		steps, what = steps*s.Resample, what+fmt.Sprintf(", each run %d times", s.Resample)
	}
	return steps, what
}

// setField sets one sampling setting from its JSON value, as its flag
// would from text: strings, whole numbers, numbers, or the text a setting
// parses itself (a guidance interval may also be [lo, hi]).
func setField(dst any, v json.RawMessage) error {
	switch p := dst.(type) {
	case *string, *int, *float64:
		if err := json.Unmarshal(v, p); err != nil {
			return jsonProblem(err)
		}
		return nil
	case encoding.TextUnmarshaler:
		var text string
		var pair []float64
		if err := json.Unmarshal(v, &pair); err == nil {
			if len(pair) != 2 {
				return fmt.Errorf("want [lo, hi], got %d numbers", len(pair))
			}
			text = strconv.FormatFloat(pair[0], 'g', -1, 64) + "," + strconv.FormatFloat(pair[1], 'g', -1, 64)
		} else if err := json.Unmarshal(v, &text); err != nil {
			return fmt.Errorf("want a string")
		}
		return p.UnmarshalText([]byte(text))
	}
	return fmt.Errorf("a setting of type %T", dst)
}

// labelSpec reads labels as bin/sample's --labels takes them ("all",
// "0-9", "3,7", "random"; cycled over the images), or as a number or a
// list of numbers, whose length it returns too (0 for the others).
func labelSpec(v json.RawMessage) (spec string, listed int, err error) {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s, 0, nil
	}
	var one int64
	if json.Unmarshal(v, &one) == nil {
		return strconv.FormatInt(one, 10), 0, nil
	}
	var list []int64
	if err := json.Unmarshal(v, &list); err != nil || len(list) == 0 {
		return "", 0, fmt.Errorf(`want "all", "random", "0-9", "3,7", a class number or a list of them`)
	}
	parts := make([]string, len(list))
	for i, l := range list {
		parts[i] = strconv.FormatInt(l, 10)
	}
	return strings.Join(parts, ","), len(list), nil
}

// jsonProblem is a JSON decoding error without Go's type names.
func jsonProblem(err error) error {
	te, ok := err.(*json.UnmarshalTypeError)
	if !ok {
		return err
	}
	want := "a " + te.Type.String()
	switch te.Type.Kind() {
	case reflect.Int:
		want = "a whole number"
	case reflect.Uint64:
		want = "a whole number from 0"
	case reflect.Float64:
		want = "a number"
	case reflect.String:
		want = "a string"
	}
	return fmt.Errorf("want %s, got %s", want, te.Value)
}

// inputImage decodes an init image or a mask: base64 PNG or JPEG bytes, a
// data: URL's payload included (what a canvas gives), its size checked
// against the pixel limit from its header before decoding. It returns the
// model's input and the image's size as sent.
func (m *Model) inputImage(field, text string, l Limits, mask bool) (px []float32, w, h int, err error) {
	if _, payload, ok := strings.Cut(text, ";base64,"); ok && strings.HasPrefix(text, "data:") {
		text = payload
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: not base64: %v", field, err)
	}
	if mask {
		return models.InputMask(bytes.NewReader(b), field, m.ck.Geometry, l.MaxImagePixels)
	}
	return models.InputImage(bytes.NewReader(b), field, m.ck.Geometry, m.ck.Config.Data, l.MaxImagePixels)
}
