package cli

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"kakusan/diffusion"
	"kakusan/torch"
)

func TestNormalize(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("config", "", "")
	fs.StringP("out", "o", "", "")
	cases := []struct{ in, want []string }{
		{[]string{"-config", "a.yaml"}, []string{"--config", "a.yaml"}},
		{[]string{"-config=a.yaml"}, []string{"--config=a.yaml"}},
		{[]string{"--config", "a.yaml"}, []string{"--config", "a.yaml"}},
		{[]string{"-o", "d"}, []string{"-o", "d"}},
		{[]string{"-bogus"}, []string{"-bogus"}},
		{[]string{"--", "-config"}, []string{"--", "-config"}},
	}
	for _, c := range cases {
		if got := Normalize(fs, c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Normalize(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if err := Parse(fs, []string{"-config", "b.yaml"}); err != nil || fs.Lookup("config").Value.String() != "b.yaml" {
		t.Errorf("Parse: %v, config=%s", err, fs.Lookup("config").Value)
	}
}

// TestGuidanceIntervalFlag parses --guidance-interval into the sampling,
// "all" back to every step, and refuses malformed or unordered pairs.
func TestGuidanceIntervalFlag(t *testing.T) {
	parse := func(args ...string) (diffusion.Sampling, []string, error) {
		var s diffusion.Sampling
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		SamplingFlags(fs, &s)
		err := fs.Parse(args)
		return s, SamplingGiven(fs), err
	}
	s, given, err := parse("--guidance-interval", "0.28, 5.42")
	if err != nil || s.GuidanceInterval != (diffusion.Interval{Lo: 0.28, Hi: 5.42}) || !reflect.DeepEqual(given, []string{"guidance-interval"}) {
		t.Errorf("0.28,5.42: %+v %v %v", s.GuidanceInterval, given, err)
	}
	if s, _, err := parse("--guidance-interval", "1,2", "--guidance-interval", "all"); err != nil || !s.GuidanceInterval.Everywhere() {
		t.Errorf("all: %+v %v", s.GuidanceInterval, err)
	}
	for _, bad := range []string{"5", "2,1", "a,b", "1,inf", "-1,1", "1,2,3"} {
		if _, _, err := parse("--guidance-interval", bad); err == nil || !strings.Contains(err.Error(), "guidance-interval") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestVersion: --version stops parsing like --help and names the shim's
// ABI and libtorch as the loaded shim reports them.
func TestVersion(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("config", "", "")
	VersionFlag(fs)
	if err := Parse(fs, []string{"-config", "a.yaml"}); err != nil {
		t.Fatalf("without --version: %v", err)
	}
	if err := Parse(fs, []string{"-version"}); err != pflag.ErrHelp {
		t.Errorf("-version: %v, want pflag.ErrHelp (the command stops)", err)
	}
	if err := Parse(fs, []string{"-version", "extra"}); err == nil || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("-version extra: %v, want the stray argument refused", err)
	}
	v, b := Version("x"), torch.Build()
	for _, want := range []string{"x: kakusan ", fmt.Sprintf("shim ABI %d, libtorch %s", b.ABI, torch.Version()), "CUDA graphs ", "NCCL "} {
		if !strings.Contains(v, want) {
			t.Errorf("Version: %q lacks %q", v, want)
		}
	}
	if b.CUDAGraphs && !b.CUDA || b.NCCL && !b.CUDA {
		t.Errorf("%v: CUDA graphs or NCCL without a CUDA build", b)
	}
	if torch.CUDAGraphsAvailable() && !b.CUDAGraphs {
		t.Errorf("%v: graphs available but not reported as compiled in", b)
	}
}
