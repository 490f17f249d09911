package models

import (
	"encoding"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"kakusan/internal/docgen"
)

// TestConfigurationDoc keeps docs/configuration.md's table of config keys
// what the code says: every key of every model's config (the shared
// fields, the training loop's sections, each model's own), its type, its
// default (per model where they differ) and its field's comment in the Go
// source. A key without a comment fails the test; `make docs` rewrites the
// section.
func TestConfigurationDoc(t *testing.T) {
	docgen.Check(t, "../docs/configuration.md", "config keys", configKeysDoc(t))
}

// keyDoc is one config key as the document lists it.
type keyDoc struct {
	key, kind, about string
	defaults         map[string][]string // default value -> the models with it
}

// configKeysDoc renders every config key, a table per section.
func configKeysDoc(t *testing.T) string {
	var b strings.Builder
	b.WriteString("### models\n\n| `model:` | what it is | what it can do |\n| --- | --- | --- |\n")
	for _, name := range Names() {
		e, _ := Lookup(name)
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", name, e.About, e.Can)
	}
	keys := map[string]*keyDoc{}
	var order []string
	for _, model := range Names() {
		c := defaults(model)
		c.Model = model
		v, _ := c.shape()
		walkKeys(t, v, "", func(key string, parent reflect.Type, f reflect.StructField, val reflect.Value) {
			k, ok := keys[key]
			if !ok {
				k = &keyDoc{key: key, kind: kindOf(f.Type), about: comment(t, parent, f), defaults: map[string][]string{}}
				keys[key] = k
				order = append(order, key)
			}
			d := defaultOf(val)
			if key == "model" {
				d = "- (required)"
			}
			k.defaults[d] = append(k.defaults[d], model)
		})
	}
	sort.SliceStable(order, func(i, j int) bool { return section(order[i]) < section(order[j]) })
	last := "?"
	for _, key := range order {
		if s := section(key); s != last {
			last = s
			title := "top level: every model"
			if s != "" {
				title = fmt.Sprintf("`%s:`, for %s", s, strings.Join(owners(keys, s), ", "))
			}
			fmt.Fprintf(&b, "\n### %s\n\n| key | type | default | what it is |\n| --- | --- | --- | --- |\n", title)
		}
		k := keys[key]
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", key, k.kind, k.defaultText(), k.about)
	}
	return b.String()
}

// section is a key's section: "" for the top-level keys (data's included).
func section(key string) string {
	s, _, ok := strings.Cut(key, ".")
	if !ok || s == "data" {
		return ""
	}
	return s
}

// owners are the models whose configs have section s.
func owners(keys map[string]*keyDoc, s string) []string {
	seen := map[string]bool{}
	for key, k := range keys {
		if section(key) == s {
			for _, ms := range k.defaults {
				for _, m := range ms {
					seen[m] = true
				}
			}
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// defaultText is the default, or each default with its models.
func (k *keyDoc) defaultText() string {
	if len(k.defaults) == 1 {
		for d := range k.defaults {
			return d
		}
	}
	var parts []string
	for d, ms := range k.defaults {
		parts = append(parts, fmt.Sprintf("%s (%s)", d, strings.Join(ms, ", ")))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// walkKeys calls f on every leaf key of the config struct v under prefix:
// nested structs are sections, whose keys it walks; a type that parses
// its own text or YAML is a leaf.
func walkKeys(t *testing.T, v reflect.Value, prefix string, f func(string, reflect.Type, reflect.StructField, reflect.Value)) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v = reflect.New(v.Type().Elem())
		}
		v = v.Elem()
	}
	for i := range v.NumField() {
		sf, fv := v.Type().Field(i), v.Field(i)
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" || !sf.IsExported() {
			continue
		}
		if strings.Contains(opts, "inline") {
			walkKeys(t, fv, prefix, f)
			continue
		}
		key := strings.TrimPrefix(prefix+"."+name, ".")
		if prefix == "" && isSection(sf.Type) {
			if fv.Kind() != reflect.Pointer || !fv.IsNil() { // a classical model has no train: section
				walkKeys(t, fv, key, f)
			}
			continue
		}
		f(key, v.Type(), sf, fv)
	}
}

// isSection reports whether a top-level field is a section of keys
// rather than one value: a struct (data, train, a model's own section).
// Within a section a struct is one value (autoencoder_config).
func isSection(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct
}

// kindOf names a key's type as a user writes it.
func kindOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()):
		return "list"
	case reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()):
		return "name"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true/false"
	case reflect.Int, reflect.Int64, reflect.Uint64:
		return "integer"
	case reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Slice:
		return "list"
	}
	return "mapping"
}

// defaultOf is a value as YAML writes it, in backticks; "-" for none.
func defaultOf(v reflect.Value) string {
	if (v.Kind() == reflect.Pointer || v.Kind() == reflect.Slice) && v.IsNil() {
		return "-"
	}
	b, err := yaml.Marshal(struct {
		V any `yaml:"v,flow"`
	}{v.Interface()})
	if err != nil {
		return "?"
	}
	s := strings.TrimSpace(strings.TrimPrefix(string(b), "v:"))
	if s == `""` || s == "" {
		return "-"
	}
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

// comment is the comment of field f of the struct type parent in its
// package's source (its help tag for a sampling setting), on one line; a
// field without one fails t.
func comment(t *testing.T, parent reflect.Type, f reflect.StructField) string {
	if h := f.Tag.Get("help"); h != "" {
		return strings.ReplaceAll(h, "|", `\|`)
	}
	dir := "." + strings.TrimPrefix(strings.TrimPrefix(parent.PkgPath(), "kakusan/models"), "kakusan")
	if dir == "./diffusion" {
		dir = "../diffusion"
	}
	text := fieldComments(t, dir)[parent.Name()+"."+f.Name]
	if text == "" {
		t.Errorf("config key field %s.%s (yaml %q) has no comment: write what it is beside it", parent, f.Name, f.Tag.Get("yaml"))
	}
	if rest, ok := strings.CutPrefix(text, f.Name+" "); ok { // a doc comment names its field
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		text = "`" + key + "` " + rest
	}
	return strings.ReplaceAll(text, "|", `\|`)
}

var commentCache = map[string]map[string]string{}

// fieldComments maps every field of the struct types of the package in
// dir, as Type.Field, to its comment: the doc comment above it, else the
// one after it on its line.
func fieldComments(t *testing.T, dir string) map[string]string {
	if c, ok := commentCache[dir]; ok {
		return c
	}
	c := map[string]string{}
	commentCache[dir] = c
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			if st, ok := ts.Type.(*ast.StructType); ok {
				for _, field := range st.Fields.List {
					text := field.Doc.Text()
					if text == "" {
						text = field.Comment.Text()
					}
					for _, name := range field.Names {
						c[ts.Name.Name+"."+name.Name] = strings.Join(strings.Fields(text), " ")
					}
				}
			}
			return false
		})
	}
	return c
}
