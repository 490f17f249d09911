package gaussian

import (
	"encoding/json"
	"fmt"

	"kakusan/internal/files"
)

// Params is a fitted classical model as stored in a run's params.json.
type Params struct {
	Model    string   `json:"model"` // normal, mvn or gmm
	Normal   *Normal  `json:"normal,omitempty"`
	MVN      *MVN     `json:"mvn,omitempty"`
	GMM      *GMM     `json:"gmm,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// maxParams bounds a params.json (a fit of a few numbers).
const maxParams = 64 << 20

// LoadParams reads and checks a params.json; errors name the file.
func LoadParams(path string) (*Params, error) {
	b, err := files.Read(path, maxParams)
	if err != nil {
		return nil, err
	}
	var p Params
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s: not a params file: %v", path, err)
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &p, nil
}

func (p *Params) check() error {
	switch p.Model {
	case "normal":
		if p.Normal == nil || !(p.Normal.Sigma > 0) {
			return fmt.Errorf("normal: missing or non-positive sigma")
		}
	case "mvn":
		if p.MVN == nil {
			return fmt.Errorf("mvn: missing parameters")
		}
		if err := p.MVN.factor(); err != nil {
			return fmt.Errorf("mvn: %w", err)
		}
	case "gmm":
		g := p.GMM
		if g == nil || len(g.Weights) == 0 || len(g.Weights) != len(g.Components) {
			return fmt.Errorf("gmm: weights and components missing or of different lengths")
		}
		var sum float64
		for k, w := range g.Weights {
			if !(w >= 0) {
				return fmt.Errorf("gmm: weight %d is %v", k, w)
			}
			sum += w
			if err := g.Components[k].factor(); err != nil {
				return fmt.Errorf("gmm: component %d: %w", k, err)
			}
		}
		if sum < 0.999 || sum > 1.001 {
			return fmt.Errorf("gmm: weights sum to %v, not 1", sum)
		}
	default:
		return fmt.Errorf("unknown model %q", p.Model)
	}
	return nil
}

// Marshal is p as indented JSON, as params.json holds it.
func (p *Params) Marshal() []byte {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}
