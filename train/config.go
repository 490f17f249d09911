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
	Model   string `yaml:"model"`             // normal, mvn or gmm
	Seed    uint64 `yaml:"seed"`              // for initialisation and sampling
	OutDir  string `yaml:"out_dir,omitempty"` // default runs/<name>
	Data    Data   `yaml:"data"`
	Samples int    `yaml:"samples"` // points drawn from the fit for the sample plot

	GMM *GMMConfig `yaml:"gmm,omitempty"`
}

// Data says where the training data is.
type Data struct {
	Path    string   `yaml:"path"`            // a whitespace-separated numeric table
	Columns int      `yaml:"columns"`         // expected columns; 0: the model's own (1 for normal, 2 for mvn/gmm)
	Names   []string `yaml:"names,omitempty"` // column names for plots
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

var models = []string{"normal", "mvn", "gmm"}

func defaults() *Config {
	return &Config{Samples: 10000}
}

func defaultGMM() *GMMConfig {
	return &GMMConfig{Components: 2, Init: "kmeans++", Restarts: 5, Tol: 1e-6, MaxIter: 200, CovFloor: 1e-6}
}

// LoadConfig reads path strictly (an unknown key or a value of the wrong
// type is an error naming the file, line and key), applies the overrides
// ("key.sub=value", as from --set) and validates the result.
func LoadConfig(path string, sets []string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := defaults()
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if root.Kind == 0 {
		return nil, fmt.Errorf("%s: empty config", path)
	}
	sections := topKeys(&root)
	if sections["gmm"] || c.Model == "gmm" {
		c.GMM = defaultGMM()
	}
	if err := strictDecode(b, c); err != nil {
		return nil, explain(path, &root, err)
	}
	for _, s := range sets {
		key, val, ok := strings.Cut(s, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("--set %q: want key=value, e.g. gmm.components=3", s)
		}
		if strings.HasPrefix(key, "gmm.") && c.GMM == nil {
			c.GMM = defaultGMM()
		}
		doc := nest(strings.Split(key, "."), val)
		var n yaml.Node
		yaml.Unmarshal([]byte(doc), &n)
		if err := strictDecode([]byte(doc), c); err != nil {
			return nil, explain("--set "+s, &n, err)
		}
	}
	if c.Model == "gmm" && c.GMM == nil {
		c.GMM = defaultGMM()
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

func topKeys(root *yaml.Node) map[string]bool {
	keys := map[string]bool{}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return keys
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		keys[m.Content[i].Value] = true
	}
	return keys
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
	if c.Data.Path == "" {
		bad("data.path", "missing")
	}
	if c.Data.Columns < 0 {
		bad("data.columns", "must be at least 0 (0 = the model's default), got %d", c.Data.Columns)
	}
	if c.Samples < 1 || c.Samples > 10_000_000 {
		bad("samples", "must be between 1 and 10000000, got %d", c.Samples)
	}
	if c.GMM != nil && c.Model != "gmm" && c.Model != "" {
		bad("gmm", "section given for model %q; it belongs to model gmm", c.Model)
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
