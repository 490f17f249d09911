package models

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"kakusan/datasets"
	"kakusan/internal/files"
	"kakusan/torch"
)

// Config is a run's whole configuration: the fields every model shares, the
// training loop's sections for the neural models, and the model's own
// sections, each of the model's own config type (unet.Config,
// diffusion.Config, ...), filled straight from the YAML.
type Config struct {
	Name    string `yaml:"name"`              // run name; default: the config file's base name
	Model   string `yaml:"model"`             // the model: one of the registry's (the table below)
	Seed    uint64 `yaml:"seed"`              // for initialisation, data order and sampling
	OutDir  string `yaml:"out_dir,omitempty"` // default runs/<name>
	Device  string `yaml:"device,omitempty"`  // neural models: cpu, cuda, cuda:N or auto (default)
	Threads int    `yaml:"threads,omitempty"` // neural models: intra-op threads, 0 = every core
	Data    Data   `yaml:"data"`
	Samples int    `yaml:"samples"` // points drawn from a classical fit for its sample plot; images in a neural model's grid

	Train     *TrainConfig `yaml:"train,omitempty"`     // neural models: the training loop
	Optimizer *OptimConfig `yaml:"optimizer,omitempty"` // neural models

	// Sections holds the model's own sections by YAML key, each a pointer
	// to the type its registry entry made.
	Sections map[string]any `yaml:"-"`
}

// Data says where the training data is.
type Data struct {
	Path    string `yaml:"path,omitempty"`    // classical models: a whitespace-separated numeric table
	Dataset string `yaml:"dataset,omitempty"` // neural models: mnist or fashion-mnist
	Dir     string `yaml:"dir,omitempty"`     // neural models: MNIST-layout IDX files, or a folder of class folders of images
	Size    int    `yaml:"size,omitempty"`    // image folders: resize and centre-crop to size×size
	// Background is the colour transparent pixels of an image folder are
	// composited on: white, black or #rrggbb (datasets.DefaultBackground says
	// why white).
	Background string `yaml:"background,omitempty"`
	// HFlip flips each training image left-right with probability 1/2, on
	// the device, drawn from the run's generator (so a resumed run flips as
	// the uninterrupted one would).
	HFlip bool `yaml:"hflip,omitempty"`
	// Balance weighs classes when drawing each epoch's images: an image of a
	// class of n images is drawn with weight n^-balance, N draws with
	// replacement (PyTorch's WeightedRandomSampler); 0 draws every image
	// once (a plain shuffle), 1 every class equally often.
	Balance float64 `yaml:"balance,omitempty"`
	// Cache is the folder of decoded image-folder sets ("" for
	// ~/.cache/kakusan/images, "off" for none): a second run on the same
	// files, size and background decodes nothing.
	Cache      string   `yaml:"cache,omitempty"`
	Subset     int      `yaml:"subset,omitempty"`      // neural models: train on the first N training images only
	TestSubset int      `yaml:"test_subset,omitempty"` // neural models: evaluate on the first N test images only
	Columns    int      `yaml:"columns,omitempty"`     // expected columns; 0: the model's own (1 for normal, 2 for mvn/gmm)
	Names      []string `yaml:"names,omitempty"`       // column names for plots
}

// Source names where a neural model's images come from in messages: the
// folder when data.dir is given, else the dataset.
func (d Data) Source() string {
	if d.Dir != "" {
		return d.Dir
	}
	return d.Dataset
}

// Options is how the data's images are read; log gets the loader's
// lines (where the images came from, a progress bar).
func (d Data) Options(log io.Writer) datasets.Options {
	bg, _ := datasets.ParseBackground(d.Background) // validated with the config
	o := datasets.Options{Size: d.Size, Background: bg, Log: log, Cache: d.Cache}
	switch d.Cache {
	case "off":
		o.Cache = ""
	case "":
		o.Cache = datasets.DefaultCache()
	}
	return o
}

// Load reads one split ("train" or "test") of the configured images.
func (d Data) Load(split string, log io.Writer) (*datasets.Images, error) {
	return datasets.Load(d.Dataset, d.Dir, split, d.Options(log))
}

// Name is column i's name for plot axes.
func (d Data) Name(i int) string {
	if i < len(d.Names) {
		return d.Names[i]
	}
	return "x" + strconv.Itoa(i)
}

// TrainConfig drives the neural training loop.
type TrainConfig struct {
	BatchSize       int             `yaml:"batch_size"`       // images a step (on each rank, under data parallelism)
	Epochs          int             `yaml:"epochs"`           // passes over the training images
	MaxSteps        int             `yaml:"max_steps"`        // stop at this step even before the epochs end; 0 = no limit
	LogEvery        int             `yaml:"log_every"`        // steps between metrics lines
	CheckpointEvery int             `yaml:"checkpoint_every"` // steps between checkpoints; 0 = at the end of each epoch
	SampleEvery     int             `yaml:"sample_every"`     // steps between sample grids; 0 = at the end of each epoch
	KeepCheckpoints int             `yaml:"keep_checkpoints"` // how many recent checkpoints to keep
	GradClip        float64         `yaml:"grad_clip"`        // max gradient L2 norm; 0 = off
	EMADecay        float64         `yaml:"ema_decay"`        // exponential moving average of the weights, used for sampling; 0 = off
	EMAWarmup       bool            `yaml:"ema_warmup"`       // ramp the decay up as min(decay, (1+n)/(10+n))
	WarmupSteps     int             `yaml:"warmup_steps"`     // linear learning-rate warm-up
	Cosine          bool            `yaml:"cosine"`           // cosine decay from lr to min_lr over the run
	MinLR           float64         `yaml:"min_lr"`           // the learning rate cosine decay ends at
	Precision       torch.Precision `yaml:"precision"`        // fp32, tf32, bf16 or auto: how the forward pass computes
	// CuDNNBenchmark lets cuDNN time its algorithms for each new shape and
	// keep the fastest (torch.backends.cudnn.benchmark); false for resumes
	// that repeat a run bit for bit on CUDA. Nothing on the CPU.
	CuDNNBenchmark bool `yaml:"cudnn_benchmark"`
	// CUDAGraph captures the training step in a CUDA graph after a few
	// eager steps and replays it (train.Graphed); eager, with a message,
	// where that is impossible.
	CUDAGraph bool `yaml:"cuda_graph"`
	// Data-parallel training, when a launcher (torchrun, a PyTorchJob)
	// starts the run as one of WORLD_SIZE processes: batch_size is per
	// rank, and these say how the ranks work together.

	// SyncBatchNorm computes batch norm's training statistics over all
	// ranks' batches (torch.nn.SyncBatchNorm) instead of each rank's own.
	SyncBatchNorm bool    `yaml:"sync_batchnorm"`
	DistBackend   string  `yaml:"dist_backend"`   // data parallelism's backend: auto (NCCL on CUDA, Gloo on the CPU), nccl or gloo
	DistTimeout   float64 `yaml:"dist_timeout"`   // seconds the rendezvous and each collective may take before the run stops
	DistBucketMB  float64 `yaml:"dist_bucket_mb"` // MiB of gradients all-reduced together, launched as the backward pass completes them (DDP's bucket_cap_mb)

	// Watching and steering a run.

	TensorBoard bool `yaml:"tensorboard"` // write TensorBoard event files into the run folder: scalars, sample grids, the config
	// Accumulate sums the gradients of this many batches of batch_size
	// before each optimizer step: a step trains on accumulate x batch_size
	// images (x the ranks), and steps, the schedule, the moving average,
	// logging and checkpoints count optimizer steps.
	Accumulate int `yaml:"accumulate"`
	// InitFrom starts a fresh run from another run's weights (a run folder,
	// its latest checkpoint, or a checkpoint file): parameters matched by
	// name and shape, every mismatch named; optimizer, step and moving
	// average start anew.
	InitFrom    string `yaml:"init_from"`
	InitFromEMA bool   `yaml:"init_from_ema"` // take init_from's moving average when it has one (false: its trained weights)
	// Evaluation during training, as bin/eval scores a checkpoint.
	EvalEvery  int    `yaml:"eval_every"`  // steps between evaluations that draw eval_images and score them with eval_judge; 0 = none
	EvalImages int    `yaml:"eval_images"` // images an evaluation draws, with the run's sampling settings and the moving average
	EvalJudge  string `yaml:"eval_judge"`  // the classifier that scores them: a run folder or checkpoint (default: runs/mnist_classifier for MNIST)
}

// StepImages is the images one optimizer step trains on, on each rank:
// batch_size times accumulate.
func (t *TrainConfig) StepImages() int { return t.BatchSize * max(1, t.Accumulate) }

// OptimConfig picks and tunes the optimizer.
type OptimConfig struct {
	Name        string    `yaml:"name"`         // adam, adamw or sgd
	LR          float64   `yaml:"lr"`           // the learning rate (after the warm-up, before any decay)
	Betas       []float64 `yaml:"betas,flow"`   // Adam's β₁ and β₂
	Eps         float64   `yaml:"eps"`          // Adam's ε
	WeightDecay float64   `yaml:"weight_decay"` // L2 penalty (adam, sgd) or decoupled decay (adamw)
	Momentum    float64   `yaml:"momentum"`     // sgd
	Nesterov    bool      `yaml:"nesterov"`     // sgd
}

// Section returns the model's section under key as its own type; it
// panics when the registry entry did not declare it (a programming error).
func Section[T any](c *Config, key string) T {
	s, ok := c.Sections[key].(T)
	if !ok {
		panic(fmt.Sprintf("models: config of %q has no section %q of type %T", c.Model, key, *new(T)))
	}
	return s
}

// maxConfig bounds a config file, so a mistaken path (a dataset, /dev/zero)
// is refused rather than read into memory.
const maxConfig = 1 << 20

// LoadConfig reads path strictly (an unknown key or a value of the wrong
// type is an error naming the file, line and key), applies the overrides
// ("key.sub=value", as from --set) and validates the result.
func LoadConfig(path string, sets []string) (*Config, error) {
	b, err := files.Read(path, maxConfig) // a regular file: a FIFO would block
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, b, sets)
}

// ParseConfig is LoadConfig for a config already in memory; path names it
// in errors and gives the default run name.
func ParseConfig(path string, b []byte, sets []string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if root.Kind == 0 {
		return nil, fmt.Errorf("%s: empty config", path)
	}
	model := topValue(&root, "model")
	for _, s := range sets {
		if v, ok := strings.CutPrefix(s, "model="); ok {
			model = v
		}
	}
	c := defaults(model)
	if err := foreignSections(path, &root, model); err != nil {
		return nil, err
	}
	if err := c.decode(b); err != nil {
		return nil, explain(path, &root, err)
	}
	for _, s := range sets {
		key, val, ok := strings.Cut(s, "=")
		if !ok || key == "" || strings.TrimSpace(val) == "" {
			return nil, fmt.Errorf("--set %q: want key=value, e.g. gmm.components=3 (an empty string: key=\"\")", s)
		}
		if strings.ContainsAny(s, "\n\r") || strings.ContainsAny(key, " \t:#{}[],&*!|>'\"%@`") {
			return nil, fmt.Errorf("--set %q: a key of letters, digits, _ and dots and a one-line value", s)
		}
		doc := nest(strings.Split(key, "."), val)
		var n yaml.Node
		yaml.Unmarshal([]byte(doc), &n)
		if err := foreignSections("--set "+s, &n, model); err != nil {
			return nil, err
		}
		if err := c.decode([]byte(doc)); err != nil {
			return nil, explain("--set "+s, &n, err)
		}
	}
	if c.Name == "" {
		c.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if bad := c.validate(); len(bad) > 0 {
		return nil, blame(path, sets, bad)
	}
	return c, nil
}

// blame is the error of a config's problems, each "key: problem", each
// named after where its key was last set: the --set that set it (or its
// section), else the file at path.
func blame(path string, sets []string, bad problems) error {
	lines := make([]string, len(bad))
	for i, line := range bad {
		key, _, _ := strings.Cut(line, ": ")
		from := path
		for _, s := range sets {
			k, _, _ := strings.Cut(s, "=")
			if k == key || strings.HasPrefix(key, k+".") || strings.HasPrefix(k, key+".") {
				from = "--set " + s
			}
		}
		lines[i] = from + ": " + line
	}
	return errors.New(strings.Join(lines, "; "))
}

// defaults is the config of model before the file is read: the shared
// defaults, the neural loop's for neural models, the entry's own.
func defaults(model string) *Config {
	c := &Config{Samples: 10000, Sections: map[string]any{}}
	e, ok := registry[model]
	if !ok {
		return c
	}
	if e.New != nil {
		c.Samples = 64
		c.Device = "auto"
		c.Data.Dataset = "mnist"
		c.Data.Background = datasets.DefaultBackground
		c.Train = &TrainConfig{BatchSize: 32, Epochs: 30, LogEvery: 200, KeepCheckpoints: 3, Precision: "fp32", CuDNNBenchmark: true,
			DistBackend: "auto", DistTimeout: 600, DistBucketMB: 25,
			TensorBoard: true, Accumulate: 1, InitFromEMA: true, EvalImages: 1000}
		c.Optimizer = &OptimConfig{Name: "adam", LR: 3e-4, Betas: []float64{0.9, 0.999}, Eps: 1e-8}
	}
	if e.Sections != nil {
		c.Sections = e.Sections()
	}
	if e.Defaults != nil {
		e.Defaults(c)
	}
	return c
}

// shape is the struct the YAML of c's model decodes into: the shared
// fields inline, then one field per model section, so that the decoder's
// strictness and line numbers cover the sections too.
func (c *Config) shape() (reflect.Value, []string) {
	keys := make([]string, 0, len(c.Sections))
	for k := range c.Sections {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fields := []reflect.StructField{{Name: "Base", Type: reflect.TypeOf(Config{}), Tag: `yaml:",inline"`}}
	for i, k := range keys {
		fields = append(fields, reflect.StructField{Name: "S" + strconv.Itoa(i), Type: reflect.TypeOf(c.Sections[k]),
			Tag: reflect.StructTag(fmt.Sprintf(`yaml:"%s,omitempty"`, k))})
	}
	v := reflect.New(reflect.StructOf(fields)).Elem()
	v.Field(0).Set(reflect.ValueOf(*c))
	for i, k := range keys {
		v.Field(i + 1).Set(reflect.ValueOf(c.Sections[k]))
	}
	return v, keys
}

// decode decodes b strictly over c (keys b leaves out keep their values).
func (c *Config) decode(b []byte) error {
	v, keys := c.shape()
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err == nil && len(root.Content) > 0 {
		if err := checkScalars(root.Content[0], v.Type(), ""); err != nil {
			return err
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v.Addr().Interface()); err != nil && err != io.EOF { // EOF: an empty document
		return err
	}
	sections := c.Sections
	*c = v.Field(0).Interface().(Config)
	c.Sections = sections
	for i, k := range keys {
		c.Sections[k] = v.Field(i + 1).Interface()
	}
	return nil
}

// checkScalars refuses, as a *fieldError naming the line and the key,
// what yaml.v3 would take without a word or report without a key: a
// number with a fraction where the field is an integer (it would truncate
// 32.9 to 32), and a value a field's type refuses to parse (an
// encoding.TextUnmarshaler's error would stop the decoding with neither).
func checkScalars(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" && reflect.PointerTo(t).Implements(textUnmarshaler):
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			return &fieldError{n.Line, path, err.Error()}
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if f, ok := fieldByKey(t, key); ok {
				if err := checkScalars(n.Content[i+1], f.Type, strings.TrimPrefix(path+"."+key, ".")); err != nil {
					return err
				}
			}
		}
	case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for _, e := range n.Content {
			if err := checkScalars(e, t.Elem(), path); err != nil {
				return err
			}
		}
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && (t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64):
		if f, err := strconv.ParseFloat(n.Value, 64); err != nil || f != math.Trunc(f) {
			return &fieldError{n.Line, path, fmt.Sprintf("expected %s, got float %q", kindName(t.String()), n.Value)}
		}
	}
	return nil
}

// fieldError is a bad value at a line and key of a config.
type fieldError struct {
	line    int
	key     string
	problem string
}

func (e *fieldError) Error() string { return fmt.Sprintf("line %d: %s: %s", e.line, e.key, e.problem) }

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// fieldByKey finds the field a YAML key decodes into, inline fields
// included.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if strings.Contains(opts, "inline") {
			if g, ok := fieldByKey(f.Type, key); ok {
				return g, true
			}
		} else if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// Marshal is the resolved config as YAML, as written to the run folder and
// into checkpoints.
func (c *Config) Marshal() []byte {
	v, _ := c.shape()
	b, err := yaml.Marshal(v.Interface())
	if err != nil {
		panic(err) // a Config always marshals
	}
	return b
}

// foreignSections names a top-level key that is another model's section.
func foreignSections(where string, root *yaml.Node, model string) error {
	own := map[string]bool{}
	if e, ok := registry[model]; ok && e.Sections != nil {
		for k := range e.Sections() {
			own[k] = true
		}
	}
	for _, k := range topKeys(root) {
		if owners := sectionOwners(k); len(owners) > 0 && !own[k] && model != "" {
			if _, known := registry[model]; known {
				return fmt.Errorf("%s: %s: section given for model %q; it belongs to model %s", where, k, model, strings.Join(owners, " or "))
			}
		}
	}
	return nil
}

// nest turns ["gmm","components"], "3" into "gmm:\n  components: 3\n".
func nest(keys []string, val string) string {
	var sb strings.Builder
	for i, k := range keys {
		sb.WriteString(strings.Repeat("  ", i) + k + ":")
		if i < len(keys)-1 {
			sb.WriteString("\n")
		}
	}
	sb.WriteString(" " + val + "\n")
	return sb.String()
}

// topKeys are the document's top-level keys.
func topKeys(root *yaml.Node) []string {
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	m := root.Content[0]
	var out []string
	for i := 0; i+1 < len(m.Content); i += 2 {
		out = append(out, m.Content[i].Value)
	}
	return out
}

// topValue reads a top-level scalar, "" when absent.
func topValue(root *yaml.Node, key string) string {
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return ""
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1].Value
		}
	}
	return ""
}

// keyAt finds the dotted key path whose key or value starts on line.
func keyAt(n *yaml.Node, line int, prefix string) string {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return keyAt(n.Content[0], line, prefix)
	}
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := k.Value
		if prefix != "" {
			path = prefix + "." + k.Value
		}
		if k.Line == line {
			return path
		}
		if sub := keyAt(v, line, path); sub != "" {
			return sub
		}
		if v.Line == line {
			return path
		}
	}
	return ""
}

// deviceName is what torch.ParseDevice takes; whether the device exists is
// for the run to find out.
var deviceName = regexp.MustCompile(`^(cpu|auto|cuda|cuda:[0-9]{1,3})$`)

var (
	reLine    = regexp.MustCompile(`^line (\d+): (.*)$`)
	reUnknown = regexp.MustCompile(`^field (\S+) not found in type .+$`)
	reType    = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
)

// explain rewrites yaml's decoding errors as "file:line: key: problem".
func explain(where string, root *yaml.Node, err error) error {
	var fe *fieldError
	if errors.As(err, &fe) {
		if strings.HasPrefix(where, "--set") {
			return fmt.Errorf("%s: %s: %s", where, fe.key, fe.problem)
		}
		return fmt.Errorf("%s:%d: %s: %s", where, fe.line, fe.key, fe.problem)
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %s", where, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var msgs []string
	for _, e := range te.Errors {
		m := reLine.FindStringSubmatch(e)
		if m == nil {
			msgs = append(msgs, where+": "+e)
			continue
		}
		line, _ := strconv.Atoi(m[1])
		key, problem := keyAt(root, line, ""), m[2]
		if u := reUnknown.FindStringSubmatch(problem); u != nil {
			problem = fmt.Sprintf("unknown key %q", u[1])
			if i := strings.LastIndex(key, "."); i >= 0 {
				key = key[:i]
			} else {
				key = ""
			}
		} else if t := reType.FindStringSubmatch(problem); t != nil {
			problem = fmt.Sprintf("expected %s, got %s %q", kindName(t[3]), t[1], t[2])
		}
		loc := where
		if !strings.HasPrefix(where, "--set") {
			loc = fmt.Sprintf("%s:%d", where, line)
		}
		if key != "" {
			msgs = append(msgs, fmt.Sprintf("%s: %s: %s", loc, key, problem))
		} else {
			msgs = append(msgs, fmt.Sprintf("%s: %s", loc, problem))
		}
	}
	return errors.New(strings.Join(msgs, "\n"))
}

func kindName(goType string) string {
	switch {
	case strings.HasPrefix(goType, "uint"):
		return "a non-negative integer"
	case strings.HasPrefix(goType, "int"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	}
	return "a mapping"
}

// problems collects "key: problem" lines.
type problems []string

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

// addErr adds a section's Validate error, each line "field: problem",
// under the section's key.
func (p *problems) addErr(section string, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if field, problem, ok := strings.Cut(line, ": "); ok && !strings.Contains(field, " ") {
			p.add(section+"."+field, "%s", problem)
		} else {
			p.add(section, "%s", line)
		}
	}
}

// validate is the config's problems, each "key: problem", sorted; none
// when it is whole.
func (c *Config) validate() problems {
	var bad problems
	e, known := registry[c.Model]
	switch {
	case c.Model == "":
		bad.add("model", "missing (want one of %s)", strings.Join(Names(), ", "))
	case !known:
		bad.add("model", "unknown model %q (want one of %s)", c.Model, strings.Join(Names(), ", "))
	}
	for k, s := range c.Sections {
		if reflect.ValueOf(s).IsNil() {
			bad.add(k, "empty section: give its keys or leave it out for the defaults")
		} else if v, ok := s.(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				bad.addErr(k, err)
			}
		}
	}
	if known && e.New != nil {
		c.validateNeural(&bad)
	} else {
		if c.Data.Path == "" {
			bad.add("data.path", "missing")
		}
		if c.Device != "" || c.Threads != 0 {
			bad.add("device", "the classical models are fitted without libtorch: device and threads do not apply")
		}
		if c.Train != nil || c.Optimizer != nil {
			bad.add("train", "the classical models are fitted in one go: train and optimizer keys do not apply")
		}
	}
	if c.Data.Columns < 0 {
		bad.add("data.columns", "must be at least 0 (0 = the model's default), got %d", c.Data.Columns)
	}
	if c.Name == "." || c.Name == ".." || strings.ContainsAny(c.Name, "/\\\x00") {
		bad.add("name", "%q cannot name a folder under runs/ (no /, \\, . or ..)", c.Name)
	}
	if neural := known && e.New != nil; c.Samples < 1 || (!neural && c.Samples > 10_000_000) {
		bad.add("samples", "must be between 1 and 10000000 (a classical fit's points; a neural model's grid holds at most 1024), got %d", c.Samples)
	}
	if known && e.Check != nil && len(bad) == 0 {
		if err := e.Check(c); err != nil {
			bad.add(c.Model, "%v", err)
		}
	}
	sort.Strings(bad)
	return bad
}

func (c *Config) validateNeural(bad *problems) {
	d := c.Data
	if d.Path != "" {
		bad.add("data.path", "is for the classical models; neural models take data.dataset or data.dir")
	}
	if d.Dir == "" && d.Dataset != "mnist" && d.Dataset != "fashion-mnist" {
		bad.add("data.dataset", "unknown dataset %q (want mnist or fashion-mnist, or give data.dir)", d.Dataset)
	}
	if d.Subset < 0 || d.TestSubset < 0 {
		bad.add("data.subset", "must be at least 0")
	}
	if d.Size != 0 && (d.Size < 4 || d.Size > 1024) {
		bad.add("data.size", "must be between 4 and 1024 (or 0 for the data's own), got %d", d.Size)
	}
	if _, err := datasets.ParseBackground(d.Background); err != nil {
		bad.add("data.background", "%v", err)
	}
	if !(d.Balance >= 0 && d.Balance <= 1) {
		bad.add("data.balance", "must be between 0 (every image once an epoch) and 1 (every class equally often), got %g", d.Balance)
	}
	if !deviceName.MatchString(c.Device) {
		bad.add("device", "unknown device %q (want cpu, cuda, cuda:N or auto)", c.Device)
	}
	if c.Threads < 0 || c.Threads > 1024 {
		bad.add("threads", "must be between 0 (every core) and 1024, got %d", c.Threads)
	}
	if c.Samples > 1024 {
		bad.add("samples", "a neural model's grid holds at most 1024 images, got %d", c.Samples)
	}
	if c.Train == nil || c.Optimizer == nil {
		for name, nilSection := range map[string]bool{"train": c.Train == nil, "optimizer": c.Optimizer == nil} {
			if nilSection {
				bad.add(name, "empty section: give its keys or leave it out for the defaults")
			}
		}
		return
	}
	c.Train.validate(bad)
	c.Optimizer.validate(bad)
}

func (t *TrainConfig) validate(bad *problems) {
	if t.BatchSize < 1 || t.BatchSize > 1<<16 {
		bad.add("train.batch_size", "must be between 1 and 65536, got %d", t.BatchSize)
	}
	if (t.Epochs < 1 && t.MaxSteps < 1) || t.Epochs > 1_000_000 {
		bad.add("train.epochs", "must be between 1 and 1000000 (or set train.max_steps), got %d", t.Epochs)
	}
	if t.MaxSteps < 0 {
		bad.add("train.max_steps", "must be at least 0, got %d", t.MaxSteps)
	}
	if t.LogEvery < 1 {
		bad.add("train.log_every", "must be at least 1, got %d", t.LogEvery)
	}
	if t.CheckpointEvery < 0 || t.SampleEvery < 0 {
		bad.add("train.checkpoint_every", "checkpoint_every and sample_every must be at least 0")
	}
	if t.KeepCheckpoints < 1 {
		bad.add("train.keep_checkpoints", "must be at least 1, got %d", t.KeepCheckpoints)
	}
	for key, v := range map[string]float64{"grad_clip": t.GradClip, "min_lr": t.MinLR, "warmup_steps": float64(t.WarmupSteps)} {
		if !finite(v) || v < 0 {
			bad.add("train."+key, "must be finite and at least 0, got %g", v)
		}
	}
	if !(t.EMADecay >= 0 && t.EMADecay < 1) {
		bad.add("train.ema_decay", "must be in [0, 1), got %g", t.EMADecay)
	}
	if _, err := torch.ParsePrecision(string(t.Precision)); err != nil {
		bad.add("train.precision", "%v", err)
	}
	switch t.DistBackend {
	case "auto", "gloo", "nccl":
	default:
		bad.add("train.dist_backend", "unknown backend %q (want auto, gloo or nccl)", t.DistBackend)
	}
	if !(t.DistTimeout >= 1 && t.DistTimeout <= 86400) {
		bad.add("train.dist_timeout", "must be between 1 and 86400 seconds, got %g", t.DistTimeout)
	}
	if !(t.DistBucketMB > 0 && t.DistBucketMB <= 1024) {
		bad.add("train.dist_bucket_mb", "must be in (0, 1024], got %g", t.DistBucketMB)
	}
	if t.Accumulate < 1 || t.Accumulate > 1024 {
		bad.add("train.accumulate", "must be between 1 (no accumulation) and 1024 batches, got %d", t.Accumulate)
	}
	if t.EvalEvery < 0 {
		bad.add("train.eval_every", "must be at least 0 (0: no evaluation during training), got %d", t.EvalEvery)
	}
	if t.EvalImages < 10 || t.EvalImages > 100000 {
		bad.add("train.eval_images", "must be between 10 and 100000, got %d", t.EvalImages)
	}
	if t.EvalJudge != "" && t.EvalEvery == 0 {
		bad.add("train.eval_judge", "is set but train.eval_every is 0: set eval_every (steps between evaluations) too, or leave the judge out")
	}
}

func (o *OptimConfig) validate(bad *problems) {
	switch o.Name {
	case "adam", "adamw", "sgd":
	default:
		bad.add("optimizer.name", "unknown optimizer %q (want adam, adamw or sgd)", o.Name)
	}
	if !(o.LR > 0 && o.LR <= 10) {
		bad.add("optimizer.lr", "must be in (0, 10], got %g", o.LR)
	}
	if len(o.Betas) != 2 || !(o.Betas[0] >= 0 && o.Betas[0] < 1) || !(o.Betas[1] >= 0 && o.Betas[1] < 1) {
		bad.add("optimizer.betas", "want two values in [0, 1), got %v", o.Betas)
	}
	if !finite(o.WeightDecay, o.Eps) || o.WeightDecay < 0 || !(o.Momentum >= 0 && o.Momentum < 1) || o.Eps < 0 {
		bad.add("optimizer", "weight_decay and eps must be finite and at least 0, momentum in [0, 1)")
	}
}

func finite(xs ...float64) bool {
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}
