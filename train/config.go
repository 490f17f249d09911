// Package train runs a model's training (or fitting) from a YAML config:
// it resolves the config, makes the run folder, and hands over to the
// model's trainer, which logs metrics and writes parameters and plots.
package train

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Config is a run's whole configuration. Every model reads the shared fields
// and its own section; a section for another model is an error.
type Config struct {
	Name    string `yaml:"name"`              // run name; default: the config file's base name
	Model   string `yaml:"model"`             // normal, mvn, gmm, vae or hvae
	Seed    uint64 `yaml:"seed"`              // for initialisation, data order and sampling
	OutDir  string `yaml:"out_dir,omitempty"` // default runs/<name>
	Device  string `yaml:"device,omitempty"`  // neural models: cpu, cuda, cuda:N or auto (default)
	Threads int    `yaml:"threads,omitempty"` // neural models: intra-op threads, 0 = every core
	Data    Data   `yaml:"data"`
	Samples int    `yaml:"samples"` // points drawn from a classical fit for its sample plot; images in a neural model's grid

	GMM        *GMMConfig        `yaml:"gmm,omitempty"`
	Train      *TrainConfig      `yaml:"train,omitempty"`
	Optimizer  *OptimConfig      `yaml:"optimizer,omitempty"`
	VAE        *VAEConfig        `yaml:"vae,omitempty"`
	HVAE       *VAEConfig        `yaml:"hvae,omitempty"`
	UNet       *UNetConfig       `yaml:"unet,omitempty"`
	Classifier *ClassifierConfig `yaml:"classifier,omitempty"`
	Diffusion  *DiffusionConfig  `yaml:"diffusion,omitempty"`
}

// ClassifierConfig sizes the judge CNN.
type ClassifierConfig struct {
	Hidden  int     `yaml:"hidden"`  // size of the feature layer
	Dropout float64 `yaml:"dropout"` // in training: p before the last layer, p/2 before the feature layer
}

// UNetConfig shapes the diffusion model's U-Net (models/unet.Config).
type UNetConfig struct {
	Width     int     `yaml:"width"`     // channels of the first level (reference 64)
	Levels    int     `yaml:"levels"`    // down/up blocks (reference 2)
	EmbDim    int     `yaml:"emb_dim"`   // time and label embedding size (reference 100)
	Classes   int     `yaml:"classes"`   // label classes; 0 trains an unconditional model
	Norm      string  `yaml:"norm"`      // batch (reference) or group
	Groups    int     `yaml:"groups"`    // for norm: group
	Act       string  `yaml:"act"`       // relu (reference) or silu
	Dropout   float64 `yaml:"dropout"`   // inside each block; 0 = none
	Attention bool    `yaml:"attention"` // self-attention at the lowest resolution
}

// DiffusionConfig is the noise schedule, the conditioning and the sampler.
type DiffusionConfig struct {
	Timesteps    int     `yaml:"timesteps"`      // T (reference 1000)
	Schedule     string  `yaml:"schedule"`       // linear (reference) or cosine
	BetaStart    float64 `yaml:"beta_start"`     // linear schedule
	BetaEnd      float64 `yaml:"beta_end"`       // linear schedule
	Prediction   string  `yaml:"prediction"`     // eps (reference) or v
	CondDrop     float64 `yaml:"cond_drop"`      // probability a label is dropped to the null class
	CondDropMode string  `yaml:"cond_drop_mode"` // sample: per image; batch: the whole batch at once
	Guidance     float64 `yaml:"guidance"`       // γ for sample grids (and bin/sample's default); 1 = none
	Sampler      string  `yaml:"sampler"`        // ddim or ddpm, for sample grids
	SampleSteps  int     `yaml:"sample_steps"`   // DDIM steps for sample grids
	Eta          float64 `yaml:"eta"`            // DDIM η: 0 deterministic
	Centered     bool    `yaml:"centered"`       // train on pixels in [-1, 1] instead of [0, 1]
}

// TrainConfig drives the neural training loop.
type TrainConfig struct {
	BatchSize       int     `yaml:"batch_size"`
	Epochs          int     `yaml:"epochs"`
	MaxSteps        int     `yaml:"max_steps"`        // stop at this step even before the epochs end; 0 = no limit
	LogEvery        int     `yaml:"log_every"`        // steps between metrics lines
	CheckpointEvery int     `yaml:"checkpoint_every"` // steps between checkpoints; 0 = at the end of each epoch
	SampleEvery     int     `yaml:"sample_every"`     // steps between sample grids; 0 = at the end of each epoch
	KeepCheckpoints int     `yaml:"keep_checkpoints"` // how many recent checkpoints to keep
	GradClip        float64 `yaml:"grad_clip"`        // max gradient L2 norm; 0 = off
	EMADecay        float64 `yaml:"ema_decay"`        // exponential moving average of the weights, used for sampling; 0 = off
	EMAWarmup       bool    `yaml:"ema_warmup"`       // ramp the decay up as min(decay, (1+n)/(10+n))
	WarmupSteps     int     `yaml:"warmup_steps"`     // linear learning-rate warm-up
	Cosine          bool    `yaml:"cosine"`           // cosine decay from lr to min_lr over the run
	MinLR           float64 `yaml:"min_lr"`
}

// OptimConfig picks and tunes the optimizer.
type OptimConfig struct {
	Name        string    `yaml:"name"` // adam, adamw or sgd
	LR          float64   `yaml:"lr"`
	Betas       []float64 `yaml:"betas,flow"`
	Eps         float64   `yaml:"eps"`
	WeightDecay float64   `yaml:"weight_decay"`
	Momentum    float64   `yaml:"momentum"` // sgd
	Nesterov    bool      `yaml:"nesterov"` // sgd
}

// VAEConfig sizes the (hierarchical) VAE's MLPs.
type VAEConfig struct {
	Hidden int `yaml:"hidden"`
	Latent int `yaml:"latent"`
}

// Data says where the training data is.
type Data struct {
	Path       string   `yaml:"path,omitempty"`        // classical models: a whitespace-separated numeric table
	Dataset    string   `yaml:"dataset,omitempty"`     // neural models: mnist or fashion-mnist
	Dir        string   `yaml:"dir,omitempty"`         // neural models: a folder of MNIST-layout IDX files, instead of dataset
	Subset     int      `yaml:"subset,omitempty"`      // neural models: train on the first N training images only
	TestSubset int      `yaml:"test_subset,omitempty"` // neural models: evaluate on the first N test images only
	Columns    int      `yaml:"columns,omitempty"`     // expected columns; 0: the model's own (1 for normal, 2 for mvn/gmm)
	Names      []string `yaml:"names,omitempty"`       // column names for plots
}

// name is column i's name for plot axes.
func (d Data) name(i int) string {
	if i < len(d.Names) {
		return d.Names[i]
	}
	return "x" + strconv.Itoa(i)
}

// GMMConfig is the Gaussian mixture's EM setup.
type GMMConfig struct {
	Components int         `yaml:"components"`
	Init       string      `yaml:"init"`                 // kmeans++ or book
	InitMeans  [][]float64 `yaml:"init_means,omitempty"` // for init: book
	Restarts   int         `yaml:"restarts"`
	Tol        float64     `yaml:"tol"`
	MaxIter    int         `yaml:"max_iter"`
	CovFloor   float64     `yaml:"cov_floor"`
}

var models = []string{"normal", "mvn", "gmm", "vae", "hvae", "diffusion", "classifier"}

// sections lists the model-specific sections each model takes.
var sections = map[string][]string{
	"normal": nil, "mvn": nil, "gmm": {"gmm"},
	"vae": {"train", "optimizer", "vae"}, "hvae": {"train", "optimizer", "hvae"},
	"diffusion":  {"train", "optimizer", "unet", "diffusion"},
	"classifier": {"train", "optimizer", "classifier"},
}

// neural reports whether the model trains on libtorch.
func (c *Config) neural() bool {
	return c.Model == "vae" || c.Model == "hvae" || c.Model == "diffusion" || c.Model == "classifier"
}

func defaults() *Config {
	return &Config{Samples: 10000}
}

func defaultGMM() *GMMConfig {
	return &GMMConfig{Components: 2, Init: "kmeans++", Restarts: 5, Tol: 1e-6, MaxIter: 200, CovFloor: 1e-6}
}

// prefill gives the model's own sections their defaults before decoding, so
// keys the file leaves out keep them.
func (c *Config) prefill(model string) {
	switch model {
	case "gmm":
		c.GMM = defaultGMM()
	case "vae", "hvae", "diffusion", "classifier":
		c.Samples = 64
		c.Device = "auto"
		c.Data.Dataset = "mnist"
		c.Train = &TrainConfig{BatchSize: 32, Epochs: 30, LogEvery: 200, KeepCheckpoints: 3}
		c.Optimizer = &OptimConfig{Name: "adam", LR: 3e-4, Betas: []float64{0.9, 0.999}, Eps: 1e-8}
		switch model {
		case "vae":
			c.VAE = &VAEConfig{Hidden: 200, Latent: 20}
		case "hvae":
			c.Optimizer.LR = 1e-3
			c.HVAE = &VAEConfig{Hidden: 100, Latent: 20}
		case "classifier":
			c.Optimizer.LR = 1e-3
			c.Train.BatchSize, c.Train.Epochs = 128, 3
			c.Classifier = &ClassifierConfig{Hidden: 128, Dropout: 0.5}
		case "diffusion":
			// The reference: batch 128, 10 epochs, Adam lr 1e-3, T = 1000, linear betas.
			c.Samples = 100
			c.Optimizer.LR = 1e-3
			c.Train.BatchSize, c.Train.Epochs = 128, 10
			c.UNet = &UNetConfig{Width: 64, Levels: 2, EmbDim: 100, Classes: 10, Norm: "batch", Groups: 8, Act: "relu"}
			c.Diffusion = &DiffusionConfig{Timesteps: 1000, Schedule: "linear", BetaStart: 1e-4, BetaEnd: 0.02, Prediction: "eps",
				CondDrop: 0.1, CondDropMode: "sample", Guidance: 3, Sampler: "ddim", SampleSteps: 50}
		}
	}
}

// LoadConfig reads path strictly (an unknown key or a value of the wrong
// type is an error naming the file, line and key), applies the overrides
// ("key.sub=value", as from --set) and validates the result.
func LoadConfig(path string, sets []string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, b, sets)
}

// ParseConfig is LoadConfig for a config already in memory; path names it
// in errors and gives the default run name.
func ParseConfig(path string, b []byte, sets []string) (*Config, error) {
	c := defaults()
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if root.Kind == 0 {
		return nil, fmt.Errorf("%s: empty config", path)
	}
	model := modelOf(&root)
	for _, s := range sets {
		if v, ok := strings.CutPrefix(s, "model="); ok {
			model = v
		}
	}
	c.prefill(model)
	if err := strictDecode(b, c); err != nil {
		return nil, explain(path, &root, err)
	}
	for _, s := range sets {
		key, val, ok := strings.Cut(s, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("--set %q: want key=value, e.g. gmm.components=3", s)
		}
		doc := nest(strings.Split(key, "."), val)
		var n yaml.Node
		yaml.Unmarshal([]byte(doc), &n)
		if err := strictDecode([]byte(doc), c); err != nil {
			return nil, explain("--set "+s, &n, err)
		}
	}
	if c.Name == "" {
		c.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func strictDecode(b []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && err != io.EOF { // EOF: an empty document
		return err
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

// modelOf reads the top-level "model" value, "" when absent.
func modelOf(root *yaml.Node) string {
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return ""
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "model" {
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

var (
	reLine    = regexp.MustCompile(`^line (\d+): (.*)$`)
	reUnknown = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	reType    = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
)

// explain rewrites yaml's decoding errors as "file:line: key: problem".
func explain(where string, root *yaml.Node, err error) error {
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

func (c *Config) validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	if !contains(models, c.Model) {
		if c.Model == "" {
			bad("model", "missing (want one of %s)", strings.Join(models, ", "))
		} else {
			bad("model", "unknown model %q (want one of %s)", c.Model, strings.Join(models, ", "))
		}
	}
	own := map[string]bool{}
	for _, s := range sections[c.Model] {
		own[s] = true
	}
	for name, given := range map[string]bool{"gmm": c.GMM != nil, "train": c.Train != nil, "optimizer": c.Optimizer != nil, "vae": c.VAE != nil,
		"hvae": c.HVAE != nil, "unet": c.UNet != nil, "diffusion": c.Diffusion != nil, "classifier": c.Classifier != nil} {
		if given && !own[name] && c.Model != "" && contains(models, c.Model) {
			bad(name, "section given for model %q; it belongs to %s", c.Model, owners(name))
		}
	}
	if c.neural() {
		c.validateNeural(bad)
	} else if c.Data.Path == "" {
		bad("data.path", "missing")
	}
	if c.Data.Columns < 0 {
		bad("data.columns", "must be at least 0 (0 = the model's default), got %d", c.Data.Columns)
	}
	if c.Samples < 1 || c.Samples > 10_000_000 {
		bad("samples", "must be between 1 and 10000000, got %d", c.Samples)
	}
	if g := c.GMM; g != nil && c.Model == "gmm" {
		if g.Components < 1 || g.Components > 100 {
			bad("gmm.components", "must be between 1 and 100, got %d", g.Components)
		}
		switch g.Init {
		case "kmeans++":
		case "book":
			if len(g.InitMeans) != g.Components {
				bad("gmm.init_means", "init: book needs one mean per component (%d), got %d", g.Components, len(g.InitMeans))
			}
		default:
			bad("gmm.init", "unknown initialisation %q (want kmeans++ or book)", g.Init)
		}
		if g.Restarts < 1 {
			bad("gmm.restarts", "must be at least 1, got %d", g.Restarts)
		}
		if !(g.Tol > 0) {
			bad("gmm.tol", "must be positive, got %g", g.Tol)
		}
		if g.MaxIter < 1 {
			bad("gmm.max_iter", "must be at least 1, got %d", g.MaxIter)
		}
		if !(g.CovFloor >= 0) {
			bad("gmm.cov_floor", "must be at least 0, got %g", g.CovFloor)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return errors.New(strings.Join(errs, "; "))
}

func owners(section string) string {
	var out []string
	for _, m := range models {
		for _, s := range sections[m] {
			if s == section {
				out = append(out, m)
			}
		}
	}
	return "model " + strings.Join(out, " or ")
}

func (c *Config) validateNeural(bad func(key, format string, args ...any)) {
	if c.Data.Path != "" {
		bad("data.path", "is for the classical models; neural models take data.dataset or data.dir")
	}
	if c.Data.Dir == "" && c.Data.Dataset != "mnist" && c.Data.Dataset != "fashion-mnist" {
		bad("data.dataset", "unknown dataset %q (want mnist or fashion-mnist, or give data.dir)", c.Data.Dataset)
	}
	if c.Data.Subset < 0 || c.Data.TestSubset < 0 {
		bad("data.subset", "must be at least 0")
	}
	if c.Threads < 0 {
		bad("threads", "must be at least 0 (0 = every core), got %d", c.Threads)
	}
	t := c.Train
	if t.BatchSize < 1 || t.BatchSize > 1<<16 {
		bad("train.batch_size", "must be between 1 and 65536, got %d", t.BatchSize)
	}
	if t.Epochs < 1 && t.MaxSteps < 1 {
		bad("train.epochs", "must be at least 1 (or set train.max_steps), got %d", t.Epochs)
	}
	if t.MaxSteps < 0 {
		bad("train.max_steps", "must be at least 0, got %d", t.MaxSteps)
	}
	if t.LogEvery < 1 {
		bad("train.log_every", "must be at least 1, got %d", t.LogEvery)
	}
	if t.CheckpointEvery < 0 || t.SampleEvery < 0 {
		bad("train.checkpoint_every", "checkpoint_every and sample_every must be at least 0")
	}
	if t.KeepCheckpoints < 1 {
		bad("train.keep_checkpoints", "must be at least 1, got %d", t.KeepCheckpoints)
	}
	if t.GradClip < 0 || t.WarmupSteps < 0 || t.MinLR < 0 {
		bad("train", "grad_clip, warmup_steps and min_lr must be at least 0")
	}
	o := c.Optimizer
	switch o.Name {
	case "adam", "adamw", "sgd":
	default:
		bad("optimizer.name", "unknown optimizer %q (want adam, adamw or sgd)", o.Name)
	}
	if !(o.LR > 0) || o.LR > 10 {
		bad("optimizer.lr", "must be in (0, 10], got %g", o.LR)
	}
	if len(o.Betas) != 2 || o.Betas[0] < 0 || o.Betas[0] >= 1 || o.Betas[1] < 0 || o.Betas[1] >= 1 {
		bad("optimizer.betas", "want two values in [0, 1), got %v", o.Betas)
	}
	if o.WeightDecay < 0 || o.Momentum < 0 || o.Momentum >= 1 || o.Eps < 0 {
		bad("optimizer", "weight_decay and eps must be at least 0, momentum in [0, 1)")
	}
	if t.EMADecay < 0 || t.EMADecay >= 1 {
		bad("train.ema_decay", "must be in [0, 1), got %g", t.EMADecay)
	}
	if u := c.UNet; u != nil {
		if err := u.model().Validate(); err != nil {
			bad("unet", "%v", err)
		}
	}
	if d := c.Diffusion; d != nil {
		if _, err := d.schedule(); err != nil {
			bad("diffusion", "%v", err)
		}
		if d.Prediction != "eps" && d.Prediction != "v" {
			bad("diffusion.prediction", "must be eps or v, got %q", d.Prediction)
		}
		if d.CondDrop < 0 || d.CondDrop > 1 {
			bad("diffusion.cond_drop", "must be in [0, 1], got %g", d.CondDrop)
		}
		if d.CondDropMode != "sample" && d.CondDropMode != "batch" {
			bad("diffusion.cond_drop_mode", "must be sample or batch, got %q", d.CondDropMode)
		}
		if d.Guidance < 0 || d.Guidance > 50 {
			bad("diffusion.guidance", "must be in [0, 50], got %g", d.Guidance)
		}
		if d.Sampler != "ddim" && d.Sampler != "ddpm" {
			bad("diffusion.sampler", "must be ddim or ddpm, got %q", d.Sampler)
		}
		if d.SampleSteps < 1 || d.SampleSteps > d.Timesteps {
			bad("diffusion.sample_steps", "must be between 1 and timesteps (%d), got %d", d.Timesteps, d.SampleSteps)
		}
		if d.Eta < 0 || d.Eta > 1 {
			bad("diffusion.eta", "must be in [0, 1], got %g", d.Eta)
		}
	}
	if k := c.Classifier; k != nil && (k.Hidden < 2 || k.Hidden > 1<<14) {
		bad("classifier.hidden", "must be between 2 and 16384, got %d", k.Hidden)
	}
	if k := c.Classifier; k != nil && (k.Dropout < 0 || k.Dropout >= 1) {
		bad("classifier.dropout", "must be in [0, 1), got %g", k.Dropout)
	}
	for name, v := range map[string]*VAEConfig{"vae": c.VAE, "hvae": c.HVAE} {
		if v == nil {
			continue
		}
		if v.Hidden < 1 || v.Hidden > 1<<16 {
			bad(name+".hidden", "must be between 1 and 65536, got %d", v.Hidden)
		}
		if v.Latent < 1 || v.Latent > 1<<12 {
			bad(name+".latent", "must be between 1 and 4096, got %d", v.Latent)
		}
	}
	if c.Samples > 1024 {
		bad("samples", "a neural model's grid holds at most 1024 images, got %d", c.Samples)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Marshal is the resolved config as YAML, as written to the run folder.
func (c *Config) Marshal() []byte {
	b, err := yaml.Marshal(c)
	if err != nil {
		panic(err) // a Config always marshals
	}
	return b
}
