package cli

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"

	"github.com/spf13/pflag"

	"kakusan/diffusion"
)

// SamplingFlags registers a flag for each setting of diffusion.Sampling but
// those in except (bin/eval takes --guidance as a list), as the table in
// diffusion.Sampling declares them. Each defaults to the checkpoint
// config's value: see SamplingGiven and diffusion.Sampling.Over.
func SamplingFlags(fs *pflag.FlagSet, s *diffusion.Sampling, except ...string) {
	for _, f := range diffusion.SamplingFields() {
		if slices.Contains(except, f.Flag) {
			continue
		}
		usage := "diffusion: " + f.Help
		if f.Key != "" {
			usage += fmt.Sprintf(" (default: the checkpoint config's %s)", f.Key)
		}
		switch p := f.Ptr(s).(type) {
		case *string:
			fs.StringVar(p, f.Flag, "", usage)
		case *int:
			fs.IntVar(p, f.Flag, 0, usage)
		case *float64:
			fs.Float64Var(p, f.Flag, 0, usage)
		case encoding.TextUnmarshaler:
			fs.Var(textFlag{p}, f.Flag, usage)
		default:
			panic(fmt.Sprintf("cli: sampling setting %s of type %T has no flag type", f.Flag, p))
		}
	}
}

// textFlag is a setting that parses its own text (diffusion.Spacing,
// torch.Precision, diffusion.Interval, ...) as a flag.
type textFlag struct{ v encoding.TextUnmarshaler }

func (f textFlag) Set(s string) error { return f.v.UnmarshalText([]byte(s)) }

// String is empty for the settings' zero values, so pflag prints no
// default: the default is the checkpoint config's.
func (f textFlag) String() string {
	if f.v == nil {
		return ""
	}
	return fmt.Sprint(reflect.ValueOf(f.v).Elem().Interface())
}

func (f textFlag) Type() string {
	if _, ok := f.v.(*diffusion.Interval); ok {
		return "LO,HI"
	}
	return "string"
}

// SamplingGiven lists the sampling flags given on the command line.
func SamplingGiven(fs *pflag.FlagSet) []string {
	var given []string
	for _, name := range diffusion.SamplingFlags() {
		if fs.Changed(name) {
			given = append(given, name)
		}
	}
	return slices.Clip(given)
}
