package cli

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"
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
